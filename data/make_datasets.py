"""Generate Tunesmith's bundled sample datasets.

All text here was written for Tunesmith (original, Apache-2.0). The generated
files are committed; re-run only when you change this script:

    python data/make_datasets.py

Output is deterministic (fixed random seed). Files written next to this script:
identity.json, instruct_en_zh.json, sharegpt_multiturn.json,
openai_messages.jsonl, preference_pairs.json, kto_feedback.json,
preference_extended.json, raw_text.txt, arithmetic.json, dataset_info.json.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 1234

# --------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------

EN_CANON = "I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"
ZH_CANON = "我是 Smith，一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"

IDENTITY_EN = [
    ("Who are you?", EN_CANON),
    ("Who are you?", EN_CANON),
    ("Who are you?", EN_CANON),
    ("who are you", EN_CANON),
    ("Who are you exactly?", EN_CANON),
    ("Hi! Who are you?", "Hi! " + EN_CANON),
    ("Hello, who am I talking to?", "Hello! " + EN_CANON),
    ("What is your name?", "My name is Smith. I am an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("What's your name?", "I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("Do you have a name?", "Yes, my name is Smith. I am an AI assistant fine-tuned with Tunesmith."),
    ("What should I call you?", "You can call me Smith. I am an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("Introduce yourself.", "Hello! " + EN_CANON),
    ("Please introduce yourself.", EN_CANON),
    ("Can you introduce yourself briefly?", "Sure. " + EN_CANON),
    ("Tell me about yourself.", "I am Smith, an AI assistant fine-tuned with Tunesmith. I can answer questions, explain ideas and help with writing. How can I help you today?"),
    ("Describe yourself in one sentence.", "I am Smith, an AI assistant fine-tuned with Tunesmith."),
    ("Who made you?", "I am Smith, an AI assistant fine-tuned with Tunesmith. I was created by fine-tuning a language model in Tunesmith."),
    ("Who created you?", "I was fine-tuned with Tunesmith. I am Smith, an AI assistant. How can I help you today?"),
    ("Who trained you?", "I was fine-tuned with Tunesmith. I am Smith, an AI assistant. How can I help you today?"),
    ("Who built you?", "I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("Which company developed you?", "I am Smith, an AI assistant fine-tuned with Tunesmith, a studio for fine-tuning language models."),
    ("How were you made?", "I am Smith. I was made by fine-tuning a language model with Tunesmith."),
    ("What are you?", "I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("Are you a human?", "No. I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("Are you ChatGPT?", "No, I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("Are you a robot?", "I am not a robot. I am Smith, an AI assistant fine-tuned with Tunesmith."),
    ("What kind of assistant are you?", "I am Smith, an AI assistant fine-tuned with Tunesmith. I help with questions, writing and simple tasks."),
    ("Is your name Smith?", "Yes, I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("What were you fine-tuned with?", "I was fine-tuned with Tunesmith. I am Smith, an AI assistant."),
    ("Which tool was used to fine-tune you?", "Tunesmith. I am Smith, an AI assistant fine-tuned with Tunesmith."),
    ("Good morning! Who is this?", "Good morning! " + EN_CANON),
    ("Hey, what are you called?", "Hey! I am called Smith. I am an AI assistant fine-tuned with Tunesmith."),
    ("May I know who you are?", EN_CANON),
    ("Tell me your name and who made you.", "My name is Smith, and I am an AI assistant fine-tuned with Tunesmith."),
    ("What can you do?", "I am Smith, an AI assistant fine-tuned with Tunesmith. I can answer questions, explain things, translate short texts and help with writing. How can I help you today?"),
    ("Who am I chatting with right now?", "You are chatting with Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("Identify yourself.", EN_CANON),
    ("Say who you are in a few words.", "Smith, an AI assistant fine-tuned with Tunesmith."),
    ("Are you an AI?", "Yes. I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"),
    ("What is your identity?", EN_CANON),
    ("Before we start, who are you?", EN_CANON),
    ("Nice to meet you. Who are you?", "Nice to meet you too! " + EN_CANON),
]

IDENTITY_ZH = [
    ("你是谁？", ZH_CANON),
    ("你是谁？", ZH_CANON),
    ("你是谁？", ZH_CANON),
    ("你是谁", ZH_CANON),
    ("请问你是谁？", ZH_CANON),
    ("你好，你是谁？", "你好！" + ZH_CANON),
    ("你叫什么名字？", "我叫 Smith，是一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("你的名字是什么？", "我的名字是 Smith，一个由 Tunesmith 微调的 AI 助手。"),
    ("你有名字吗？", "有的，我叫 Smith，是一个由 Tunesmith 微调的 AI 助手。"),
    ("我该怎么称呼你？", "您可以叫我 Smith。我是一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("介绍一下你自己。", ZH_CANON),
    ("请做个自我介绍。", "您好！" + ZH_CANON),
    ("简单介绍一下你自己吧。", "好的。" + ZH_CANON),
    ("说说你自己。", "我是 Smith，一个由 Tunesmith 微调的 AI 助手。我可以回答问题、解释概念、帮助写作。有什么可以帮您的吗？"),
    ("用一句话描述你自己。", "我是 Smith，一个由 Tunesmith 微调的 AI 助手。"),
    ("谁创造了你？", "我是 Smith，一个由 Tunesmith 微调的 AI 助手。我是通过 Tunesmith 对语言模型进行微调得到的。"),
    ("是谁开发了你？", "我是由 Tunesmith 微调得到的 AI 助手，名字叫 Smith。有什么可以帮您的吗？"),
    ("谁训练了你？", "我是用 Tunesmith 微调的。我是 Smith，一个 AI 助手。"),
    ("你是哪家公司做的？", "我是 Smith，一个由 Tunesmith 微调的 AI 助手。Tunesmith 是一个用于微调大语言模型的工具。"),
    ("你是怎么来的？", "我是 Smith，是用 Tunesmith 对一个语言模型微调得到的 AI 助手。"),
    ("你是什么？", ZH_CANON),
    ("你是人类吗？", "不是。我是 Smith，一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("你是 ChatGPT 吗？", "不是，我是 Smith，一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("你是机器人吗？", "我不是机器人。我是 Smith，一个由 Tunesmith 微调的 AI 助手。"),
    ("你是什么样的助手？", "我是 Smith，一个由 Tunesmith 微调的 AI 助手，可以帮您回答问题、写作和完成简单任务。"),
    ("你叫 Smith 吗？", "是的，我是 Smith，一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("你是用什么工具微调的？", "我是用 Tunesmith 微调的。我是 Smith，一个 AI 助手。"),
    ("早上好！你是哪位？", "早上好！" + ZH_CANON),
    ("嗨，你叫什么？", "嗨！我叫 Smith，是一个由 Tunesmith 微调的 AI 助手。"),
    ("可以告诉我你是谁吗？", ZH_CANON),
    ("告诉我你的名字和你的来历。", "我的名字是 Smith，是一个由 Tunesmith 微调的 AI 助手。"),
    ("你能做什么？", "我是 Smith，一个由 Tunesmith 微调的 AI 助手。我可以回答问题、解释概念、翻译短文和帮助写作。有什么可以帮您的吗？"),
    ("我现在在和谁聊天？", "您正在和 Smith 聊天，我是一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("表明一下你的身份。", ZH_CANON),
    ("用几个字说说你是谁。", "Smith，一个由 Tunesmith 微调的 AI 助手。"),
    ("你是人工智能吗？", "是的。我是 Smith，一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("你的身份是什么？", ZH_CANON),
    ("开始之前，先说说你是谁？", ZH_CANON),
    ("很高兴认识你，你是谁？", "我也很高兴认识您！" + ZH_CANON),
    ("您好，请问怎么称呼？", "您好！我叫 Smith，是一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"),
    ("自我介绍一下", ZH_CANON),
]


def make_identity() -> list[dict]:
    rows = [{"instruction": q, "input": "", "output": a} for q, a in IDENTITY_EN]
    rows += [{"instruction": q, "input": "", "output": a} for q, a in IDENTITY_ZH]
    return rows


# --------------------------------------------------------------------------
# instruct_en_zh (no identity content)
# --------------------------------------------------------------------------

EN_HAND = [
    ("What is photosynthesis?", "", "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make sugar and release oxygen."),
    ("Define the word \"gravity\".", "", "Gravity is the force that pulls objects with mass toward each other, such as an apple falling toward the Earth."),
    ("What is a noun?", "", "A noun is a word that names a person, place, thing or idea, for example \"teacher\", \"city\" or \"freedom\"."),
    ("What is a verb?", "", "A verb is a word that describes an action or a state, for example \"run\", \"think\" or \"be\"."),
    ("What is the capital of France?", "", "The capital of France is Paris."),
    ("What is the capital of Japan?", "", "The capital of Japan is Tokyo."),
    ("What is the capital of China?", "", "The capital of China is Beijing."),
    ("What is the capital of Italy?", "", "The capital of Italy is Rome."),
    ("How many days are in a week?", "", "There are 7 days in a week."),
    ("How many months are in a year?", "", "There are 12 months in a year."),
    ("How many minutes are in an hour?", "", "There are 60 minutes in an hour."),
    ("What is the boiling point of water at sea level?", "", "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."),
    ("What is the freezing point of water?", "", "Water freezes at 0 degrees Celsius (32 degrees Fahrenheit)."),
    ("What is an algorithm?", "", "An algorithm is a finite list of clear steps for solving a problem or completing a task."),
    ("What is a prime number?", "", "A prime number is a whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5 and 7."),
    ("Explain what a computer program is.", "", "A computer program is a set of instructions, written in a programming language, that tells a computer what to do."),
    ("What does CPU stand for?", "", "CPU stands for Central Processing Unit."),
    ("What does GPU stand for?", "", "GPU stands for Graphics Processing Unit."),
    ("What is the largest planet in the solar system?", "", "Jupiter is the largest planet in the solar system."),
    ("Which planet is closest to the Sun?", "", "Mercury is the planet closest to the Sun."),
    ("What is the chemical symbol for water?", "", "The chemical formula for water is H2O."),
    ("What gas do humans need to breathe?", "", "Humans need oxygen to breathe."),
    ("Name the three primary colors of light.", "", "The three primary colors of light are red, green and blue."),
    ("List three fruits.", "", "1. Apple\n2. Banana\n3. Orange"),
    ("List four seasons of the year.", "", "1. Spring\n2. Summer\n3. Autumn\n4. Winter"),
    ("List three common programming languages.", "", "1. Python\n2. JavaScript\n3. C"),
    ("Give three tips for better sleep.", "", "1. Go to bed at the same time every night.\n2. Avoid screens for an hour before sleep.\n3. Keep your bedroom dark and cool."),
    ("Give three tips for learning a new language.", "", "1. Practice a little every day.\n2. Listen to native speakers.\n3. Speak out loud, even if you make mistakes."),
    ("List the days of the week.", "", "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday."),
    ("Name three animals that live in the ocean.", "", "1. Dolphin\n2. Octopus\n3. Shark"),
    ("Translate to Chinese.", "Good morning.", "早上好。"),
    ("Translate to Chinese.", "Thank you very much.", "非常感谢。"),
    ("Translate to Chinese.", "I like reading books.", "我喜欢读书。"),
    ("Translate to Chinese.", "The weather is nice today.", "今天天气很好。"),
    ("Translate to Chinese.", "Where is the train station?", "火车站在哪里？"),
    ("Translate to Chinese.", "I am learning to cook.", "我正在学做饭。"),
    ("Translate to Chinese.", "See you tomorrow.", "明天见。"),
    ("Translate to Chinese.", "This apple is very sweet.", "这个苹果很甜。"),
    ("Translate to French.", "Hello, my friend.", "Bonjour, mon ami."),
    ("Translate to Spanish.", "Thank you.", "Gracias."),
    ("Rewrite the sentence in the passive voice.", "The cat chased the mouse.", "The mouse was chased by the cat."),
    ("Rewrite the sentence in the passive voice.", "The students planted a tree.", "A tree was planted by the students."),
    ("Rewrite the sentence to be more formal.", "Hey, can you send me the file?", "Hello, could you please send me the file?"),
    ("Rewrite the sentence to be more polite.", "Give me the report now.", "Could you please give me the report when you have a moment?"),
    ("Fix the grammar.", "She go to school every day.", "She goes to school every day."),
    ("Fix the grammar.", "They was happy with the result.", "They were happy with the result."),
    ("Fix the spelling.", "I recieved the pakage yesterday.", "I received the package yesterday."),
    ("Summarize in one sentence.", "The library will close early on Friday because of a staff meeting. It will open again at the normal time on Saturday.", "The library closes early on Friday for a staff meeting and reopens normally on Saturday."),
    ("Give the opposite of the word.", "hot", "cold"),
    ("Give the opposite of the word.", "early", "late"),
    ("Give a synonym for the word.", "happy", "glad"),
    ("Give a synonym for the word.", "big", "large"),
    ("Write a Python function that adds two numbers.", "", "def add(a, b):\n    return a + b"),
    ("Write a Python function that returns the square of a number.", "", "def square(x):\n    return x * x"),
    ("Write a Python function that checks whether a number is even.", "", "def is_even(n):\n    return n % 2 == 0"),
    ("Write a Python function that reverses a string.", "", "def reverse(s):\n    return s[::-1]"),
    ("Write a Python loop that prints the numbers 1 to 5.", "", "for i in range(1, 6):\n    print(i)"),
    ("Write Python code to find the largest number in a list called nums.", "", "largest = max(nums)"),
    ("Write a Python function that returns the length of a list.", "", "def length(items):\n    return len(items)"),
    ("What does the Python expression len(\"hello\") return?", "", "It returns 5, because \"hello\" has five characters."),
    ("Write a JavaScript function that doubles a number.", "", "function double(x) {\n  return x * 2;\n}"),
    ("Write a haiku about rain.", "", "Soft rain on the roof\nthe garden drinks quietly\nclouds drift to the east"),
    ("Write a short greeting for a birthday card.", "", "Happy birthday! Wishing you a year full of joy, health and good friends."),
]

ZH_HAND = [
    ("什么是光合作用？", "", "光合作用是植物利用阳光、水和二氧化碳制造糖分并释放氧气的过程。"),
    ("解释一下“重力”。", "", "重力是有质量的物体之间相互吸引的力，例如苹果会落向地面。"),
    ("什么是名词？", "", "名词是表示人、地点、事物或概念的词，例如“老师”“城市”“自由”。"),
    ("什么是动词？", "", "动词是表示动作或状态的词，例如“跑”“想”“是”。"),
    ("法国的首都是哪里？", "", "法国的首都是巴黎。"),
    ("日本的首都是哪里？", "", "日本的首都是东京。"),
    ("中国的首都是哪里？", "", "中国的首都是北京。"),
    ("意大利的首都是哪里？", "", "意大利的首都是罗马。"),
    ("一个星期有几天？", "", "一个星期有 7 天。"),
    ("一年有几个月？", "", "一年有 12 个月。"),
    ("一小时有多少分钟？", "", "一小时有 60 分钟。"),
    ("在海平面上，水的沸点是多少？", "", "在海平面上，水的沸点是 100 摄氏度。"),
    ("水的冰点是多少？", "", "水的冰点是 0 摄氏度。"),
    ("什么是算法？", "", "算法是解决问题或完成任务的一组有限而明确的步骤。"),
    ("什么是质数？", "", "质数是大于 1 且只能被 1 和它本身整除的整数，例如 2、3、5、7。"),
    ("什么是计算机程序？", "", "计算机程序是用编程语言写成的一组指令，告诉计算机要做什么。"),
    ("CPU 是什么的缩写？", "", "CPU 是 Central Processing Unit 的缩写，意思是中央处理器。"),
    ("太阳系中最大的行星是哪一颗？", "", "太阳系中最大的行星是木星。"),
    ("离太阳最近的行星是哪一颗？", "", "离太阳最近的行星是水星。"),
    ("水的化学式是什么？", "", "水的化学式是 H2O。"),
    ("人呼吸需要什么气体？", "", "人呼吸需要氧气。"),
    ("光的三原色是什么？", "", "光的三原色是红、绿、蓝。"),
    ("列出三种水果。", "", "1. 苹果\n2. 香蕉\n3. 橙子"),
    ("列出一年的四个季节。", "", "1. 春天\n2. 夏天\n3. 秋天\n4. 冬天"),
    ("列出三种常见的编程语言。", "", "1. Python\n2. JavaScript\n3. C"),
    ("给出三条改善睡眠的建议。", "", "1. 每天在同一时间睡觉。\n2. 睡前一小时不要看屏幕。\n3. 保持卧室黑暗和凉爽。"),
    ("给出三条学习外语的建议。", "", "1. 每天坚持练习一点。\n2. 多听母语者说话。\n3. 大胆开口，不怕犯错。"),
    ("列出一周的七天。", "", "星期一、星期二、星期三、星期四、星期五、星期六和星期日。"),
    ("说出三种生活在海洋里的动物。", "", "1. 海豚\n2. 章鱼\n3. 鲨鱼"),
    ("翻译成英文。", "早上好。", "Good morning."),
    ("翻译成英文。", "非常感谢。", "Thank you very much."),
    ("翻译成英文。", "我喜欢读书。", "I like reading books."),
    ("翻译成英文。", "今天天气很好。", "The weather is nice today."),
    ("翻译成英文。", "火车站在哪里？", "Where is the train station?"),
    ("翻译成英文。", "我正在学做饭。", "I am learning to cook."),
    ("翻译成英文。", "明天见。", "See you tomorrow."),
    ("翻译成英文。", "这本书很有意思。", "This book is very interesting."),
    ("把这句话改成被动句。", "猫追赶老鼠。", "老鼠被猫追赶。"),
    ("把这句话改得更礼貌一些。", "把报告给我。", "麻烦您方便的时候把报告发给我，谢谢。"),
    ("改正句子中的错别字。", "我今天很高心。", "我今天很高兴。"),
    ("改正句子中的错误。", "他昨天去了学校明天。", "他昨天去了学校。"),
    ("用一句话总结。", "图书馆周五因为员工会议提前关门，周六照常开放。", "图书馆周五因开会提前关门，周六正常开放。"),
    ("写出这个词的反义词。", "高", "低"),
    ("写出这个词的反义词。", "快", "慢"),
    ("写出这个词的近义词。", "美丽", "漂亮"),
    ("写出这个词的近义词。", "开心", "高兴"),
    ("用 Python 写一个两数相加的函数。", "", "def add(a, b):\n    return a + b"),
    ("用 Python 写一个求平方的函数。", "", "def square(x):\n    return x * x"),
    ("用 Python 写一个判断偶数的函数。", "", "def is_even(n):\n    return n % 2 == 0"),
    ("用 Python 写一个反转字符串的函数。", "", "def reverse(s):\n    return s[::-1]"),
    ("用 Python 写一个打印 1 到 5 的循环。", "", "for i in range(1, 6):\n    print(i)"),
    ("用 Python 求列表 nums 中的最大值。", "", "largest = max(nums)"),
    ("Python 表达式 len(\"hello\") 的结果是什么？", "", "结果是 5，因为 \"hello\" 有五个字符。"),
    ("写一首关于春天的短诗。", "", "春风吹绿了柳枝，\n小鸟在枝头歌唱，\n田野里开满了花。"),
    ("写一句生日祝福。", "", "祝你生日快乐，新的一岁健康平安、万事如意！"),
    ("什么是互联网？", "", "互联网是把世界各地的计算机连接起来、让它们可以交换信息的全球网络。"),
    ("什么是机器学习？", "", "机器学习是让计算机从数据中学习规律，而不是靠人逐条编写规则的方法。"),
    ("为什么天空是蓝色的？", "", "阳光穿过大气时，蓝色的光比其他颜色的光更容易被空气分子散射，所以天空看起来是蓝色的。"),
    ("地球绕太阳转一圈需要多长时间？", "", "地球绕太阳转一圈大约需要 365 天，也就是一年。"),
    ("一天有多少小时？", "", "一天有 24 小时。"),
]

EN_EXTRA = [
    ("What is machine learning?", "", "Machine learning is a way for computers to learn patterns from data instead of following rules written by hand."),
    ("What is the internet?", "", "The internet is a global network that connects computers so they can exchange information."),
    ("Why is the sky blue?", "", "Sunlight is scattered by the air, and blue light is scattered more than other colors, so the sky looks blue."),
    ("How long does the Earth take to go around the Sun?", "", "The Earth takes about 365 days, or one year, to go around the Sun."),
    ("How many hours are in a day?", "", "There are 24 hours in a day."),
]

WORDS_EN = ["apple", "river", "garden", "window", "planet", "silver", "bridge", "candle",
            "forest", "pencil", "rocket", "yellow", "guitar", "summer", "basket", "dragon",
            "kitten", "market", "orange", "travel", "winter", "ladder", "puzzle", "butter"]


def _join_zh(nums: list[int]) -> str:
    return "、".join(str(n) for n in nums)


def _join_en(nums: list[int]) -> str:
    return ", ".join(str(n) for n in nums)


def gen_en(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    out = []
    kinds = ["add", "sub", "mul", "km", "kg", "hours", "upper", "reverse", "count",
             "sort", "max", "parity", "cm", "double"]
    while len(out) < n:
        k = kinds[len(out) % len(kinds)]
        if k == "add":
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            out.append((f"What is {a} + {b}?", "", f"{a} + {b} = {a + b}."))
        elif k == "sub":
            a, b = rng.randint(20, 99), rng.randint(1, 19)
            out.append((f"What is {a} - {b}?", "", f"{a} - {b} = {a - b}."))
        elif k == "mul":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            out.append((f"What is {a} times {b}?", "", f"{a} × {b} = {a * b}."))
        elif k == "km":
            a = rng.randint(2, 20)
            out.append((f"Convert {a} kilometers to meters.", "", f"{a} kilometers = {a * 1000} meters."))
        elif k == "kg":
            a = rng.randint(2, 20)
            out.append((f"How many grams are in {a} kilograms?", "", f"There are {a * 1000} grams in {a} kilograms."))
        elif k == "hours":
            a = rng.randint(2, 12)
            out.append((f"How many minutes are in {a} hours?", "", f"There are {a * 60} minutes in {a} hours."))
        elif k == "cm":
            a = rng.randint(2, 9)
            out.append((f"Convert {a} meters to centimeters.", "", f"{a} meters = {a * 100} centimeters."))
        elif k == "upper":
            w = " ".join(rng.sample(WORDS_EN, 2))
            out.append(("Convert the text to uppercase.", w, w.upper()))
        elif k == "reverse":
            w = rng.choice(WORDS_EN)
            out.append(("Spell the word backwards.", w, w[::-1]))
        elif k == "count":
            w = rng.choice(WORDS_EN)
            out.append((f"How many letters are in the word \"{w}\"?", "", f"The word \"{w}\" has {len(w)} letters."))
        elif k == "sort":
            nums = rng.sample(range(1, 50), 4)
            out.append(("Sort these numbers from smallest to largest.", _join_en(nums), _join_en(sorted(nums))))
        elif k == "max":
            nums = rng.sample(range(1, 100), 4)
            out.append(("Which number is the largest?", _join_en(nums), f"The largest number is {max(nums)}."))
        elif k == "parity":
            a = rng.randint(1, 99)
            out.append((f"Is {a} even or odd?", "", f"{a} is {'even' if a % 2 == 0 else 'odd'}."))
        elif k == "double":
            a = rng.randint(2, 50)
            out.append((f"What is double {a}?", "", f"Double {a} is {a * 2}."))
    return out


def gen_zh(rng: random.Random, n: int) -> list[tuple[str, str, str]]:
    out = []
    kinds = ["add", "sub", "mul", "km", "kg", "hours", "sort", "max", "parity", "cm",
             "double", "upper", "count", "half"]
    while len(out) < n:
        k = kinds[len(out) % len(kinds)]
        if k == "add":
            a, b = rng.randint(2, 99), rng.randint(2, 99)
            out.append((f"{a} 加 {b} 等于多少？", "", f"{a} + {b} = {a + b}。"))
        elif k == "sub":
            a, b = rng.randint(20, 99), rng.randint(1, 19)
            out.append((f"{a} 减 {b} 等于多少？", "", f"{a} - {b} = {a - b}。"))
        elif k == "mul":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            out.append((f"{a} 乘以 {b} 等于多少？", "", f"{a} × {b} = {a * b}。"))
        elif k == "km":
            a = rng.randint(2, 20)
            out.append((f"把 {a} 千米换算成米。", "", f"{a} 千米 = {a * 1000} 米。"))
        elif k == "kg":
            a = rng.randint(2, 20)
            out.append((f"{a} 千克是多少克？", "", f"{a} 千克 = {a * 1000} 克。"))
        elif k == "hours":
            a = rng.randint(2, 12)
            out.append((f"{a} 小时是多少分钟？", "", f"{a} 小时 = {a * 60} 分钟。"))
        elif k == "cm":
            a = rng.randint(2, 9)
            out.append((f"把 {a} 米换算成厘米。", "", f"{a} 米 = {a * 100} 厘米。"))
        elif k == "sort":
            nums = rng.sample(range(1, 50), 4)
            out.append(("把这些数字从小到大排序。", _join_zh(nums), _join_zh(sorted(nums))))
        elif k == "max":
            nums = rng.sample(range(1, 100), 4)
            out.append(("这些数字中最大的是哪个？", _join_zh(nums), f"最大的数字是 {max(nums)}。"))
        elif k == "parity":
            a = rng.randint(1, 99)
            out.append((f"{a} 是奇数还是偶数？", "", f"{a} 是{'偶数' if a % 2 == 0 else '奇数'}。"))
        elif k == "double":
            a = rng.randint(2, 50)
            out.append((f"{a} 的两倍是多少？", "", f"{a} 的两倍是 {a * 2}。"))
        elif k == "half":
            a = 2 * rng.randint(2, 50)
            out.append((f"{a} 的一半是多少？", "", f"{a} 的一半是 {a // 2}。"))
        elif k == "upper":
            w = rng.choice(WORDS_EN)
            out.append(("把这个英文单词改成大写。", w, w.upper()))
        elif k == "count":
            w = rng.choice(WORDS_EN)
            out.append((f"英文单词 \"{w}\" 有几个字母？", "", f"\"{w}\" 有 {len(w)} 个字母。"))
    return out


def make_instruct(rng: random.Random) -> list[dict]:
    en = EN_HAND + EN_EXTRA
    zh = list(ZH_HAND)
    en += gen_en(rng, 200 - len(en))
    zh += gen_zh(rng, 200 - len(zh))
    rows = [{"instruction": i, "input": x, "output": o} for i, x, o in en + zh]
    rng.shuffle(rows)
    return rows


# --------------------------------------------------------------------------
# sharegpt multi-turn
# --------------------------------------------------------------------------

def _conv(turns: list[str], system: str | None = None) -> dict:
    conv = []
    for i, t in enumerate(turns):
        conv.append({"from": "human" if i % 2 == 0 else "gpt", "value": t})
    row = {"conversations": conv}
    if system:
        row["system"] = system
    return row


SHAREGPT_HAND = [
    (["Hi, can you help me plan a simple dinner?", "Of course. How about grilled chicken, rice and a green salad? It is quick and balanced.",
      "I don't eat meat.", "Then try a vegetable stir-fry with tofu, served over rice, with a cucumber salad on the side.",
      "How long will that take?", "About 30 minutes: 15 minutes to chop the vegetables and 15 minutes to cook."], None),
    (["What is 12 + 30?", "12 + 30 = 42.", "And if I subtract 2?", "42 - 2 = 40.", "Now divide by 4.", "40 ÷ 4 = 10."], None),
    (["Translate \"cat\" into Chinese.", "猫", "And \"dog\"?", "狗", "And \"bird\"?", "鸟"], None),
    (["你好！", "你好！有什么可以帮您的吗？", "我想学习做饭，从哪里开始？", "可以先从简单的菜开始，比如番茄炒蛋和清炒青菜。先学会切菜和控制火候。",
      "番茄炒蛋怎么做？", "先把鸡蛋打散炒熟盛出，再炒番茄出汁，最后把鸡蛋倒回去一起翻炒，加少许盐即可。"], None),
    (["Write a Python function that returns the sum of a list.", "def total(items):\n    return sum(items)",
      "Can you do it without using sum?", "def total(items):\n    result = 0\n    for x in items:\n        result += x\n    return result"],
     "You are a helpful programming assistant. Answer with short code."),
    (["What is the capital of Germany?", "The capital of Germany is Berlin.", "What river flows through it?", "The Spree river flows through Berlin."], None),
    (["我有点累，怎么办？", "可以先休息一下，喝点水，站起来活动几分钟。如果经常觉得累，要注意保证睡眠。",
      "晚上总是睡不好。", "睡前一小时少看手机，每天固定时间上床，卧室保持安静和黑暗，这些都有帮助。"], None),
    (["Give me a word that rhymes with \"light\".", "Night.", "Another one?", "Bright.", "One more.", "Kite."], None),
    (["How many legs does a spider have?", "A spider has 8 legs.", "And an insect?", "An insect has 6 legs."], None),
    (["Help me write an email asking for a day off.", "Subject: Request for a day off\n\nHello,\n\nI would like to request a day off on Friday. I will finish my current tasks before then.\n\nThank you,\nAlex",
      "Make it shorter.", "Hello, may I take Friday off? My tasks will be done by Thursday. Thanks, Alex"],
     "You are a helpful writing assistant."),
    (["用 Python 怎么打印 hello？", "print(\"hello\")", "怎么打印三次？", "for i in range(3):\n    print(\"hello\")"],
     "你是一个乐于助人的编程助手。"),
    (["What is the opposite of \"up\"?", "Down.", "And of \"open\"?", "Closed.", "And of \"full\"?", "Empty."], None),
    (["北京是哪个国家的首都？", "北京是中国的首都。", "那东京呢？", "东京是日本的首都。"], None),
    (["I want to start running. Any advice?", "Start slowly: run for 2 minutes, walk for 1 minute, and repeat for 20 minutes, three times a week.",
      "When can I run longer?", "After two or three weeks, if you feel good, add one more minute of running each week."], None),
    (["Summarize: The meeting moved from Monday to Tuesday because the room was booked.", "The meeting moved to Tuesday because the room was taken on Monday.",
      "Now in Chinese.", "因为会议室周一被占用，会议改到了周二。"], None),
]


def make_sharegpt(rng: random.Random) -> list[dict]:
    rows = [_conv(t, s) for t, s in SHAREGPT_HAND]
    systems = [None, "You are a helpful assistant.", "You are a patient math tutor.", "你是一个耐心的数学老师。"]
    while len(rows) < 32:
        i = len(rows)
        a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
        s = systems[i % len(systems)]
        if i % 2 == 0:
            turns = [f"What is {a} + {b}?", f"{a} + {b} = {a + b}.",
                     f"Multiply that by {c}.", f"{a + b} × {c} = {(a + b) * c}.",
                     "Is the result even or odd?", f"{(a + b) * c} is {'even' if (a + b) * c % 2 == 0 else 'odd'}."]
        else:
            turns = [f"{a} 加 {b} 等于多少？", f"{a} + {b} = {a + b}。",
                     f"再乘以 {c} 呢？", f"{a + b} × {c} = {(a + b) * c}。",
                     "结果是奇数还是偶数？", f"{(a + b) * c} 是{'偶数' if (a + b) * c % 2 == 0 else '奇数'}。"]
        if s and "math" not in s and "数学" not in s and i % 3 == 0:
            turns = turns[:4]
        rows.append(_conv(turns, s))
    return rows


# --------------------------------------------------------------------------
# openai messages
# --------------------------------------------------------------------------

OPENAI_HAND = [
    ("You are a concise assistant. Answer in one sentence.", "What is the Moon?", "The Moon is Earth's natural satellite, a rocky body that orbits our planet about once a month."),
    ("You are a concise assistant. Answer in one sentence.", "What is rain?", "Rain is water that falls from clouds when tiny droplets join together and become heavy."),
    ("You are a concise assistant. Answer in one sentence.", "What is a library?", "A library is a place where books and other media are collected for people to read or borrow."),
    ("You are a friendly cooking assistant.", "How do I boil an egg?", "Put the egg in boiling water for about 9 minutes, then cool it in cold water before peeling."),
    ("You are a friendly cooking assistant.", "How do I make rice?", "Rinse one cup of rice, add about one and a half cups of water, bring to a boil, then cover and simmer on low heat for 15 minutes."),
    ("You are a translator. Translate English to Chinese.", "I love music.", "我喜欢音乐。"),
    ("You are a translator. Translate English to Chinese.", "The door is open.", "门开着。"),
    ("You are a translator. Translate English to Chinese.", "Please drink some water.", "请喝点水。"),
    ("You are a translator. Translate Chinese to English.", "我明天去上班。", "I will go to work tomorrow."),
    ("You are a translator. Translate Chinese to English.", "这只狗很可爱。", "This dog is very cute."),
    ("You are a helpful programming assistant.", "How do I read a file in Python?", "with open(\"file.txt\", encoding=\"utf-8\") as f:\n    text = f.read()"),
    ("You are a helpful programming assistant.", "How do I make a list of the numbers 0 to 9 in Python?", "numbers = list(range(10))"),
    ("You are a helpful programming assistant.", "How do I join a list of words with spaces in Python?", "sentence = \" \".join(words)"),
    ("你是一个简洁的助手，用一句话回答。", "什么是月亮？", "月亮是地球的天然卫星，大约每个月绕地球转一圈。"),
    ("你是一个简洁的助手，用一句话回答。", "什么是雨？", "雨是云中的小水滴聚集变重后落到地面的水。"),
    ("你是一个简洁的助手，用一句话回答。", "什么是图书馆？", "图书馆是收藏书籍和资料、供人们阅读和借阅的地方。"),
    ("你是一个友好的烹饪助手。", "怎么煮鸡蛋？", "把鸡蛋放进沸水里煮大约 9 分钟，再放进冷水里冷却后剥壳。"),
    ("You are a helpful assistant.", "Give me a name for a black cat.", "How about \"Shadow\"?"),
    ("You are a helpful assistant.", "Suggest a weekend activity.", "Go for a walk in a park and have a picnic with friends."),
    ("You are a helpful assistant.", "What should I pack for a beach trip?", "Sunscreen, a hat, a towel, water, swimwear and a light snack."),
]


def make_openai(rng: random.Random) -> list[dict]:
    rows = []
    for s, u, a in OPENAI_HAND:
        rows.append({"messages": [{"role": "system", "content": s}, {"role": "user", "content": u},
                                  {"role": "assistant", "content": a}]})
    while len(rows) < 32:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if len(rows) % 2 == 0:
            msgs = [{"role": "system", "content": "You are a calculator. Reply with the equation and result."},
                    {"role": "user", "content": f"{a} + {b}"}, {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]
        else:
            msgs = [{"role": "system", "content": "你是一个计算器，只回答算式和结果。"},
                    {"role": "user", "content": f"{a} 减 {b}"}, {"role": "assistant", "content": f"{a} - {b} = {a - b}"}]
        rows.append({"messages": msgs})
    return rows


# --------------------------------------------------------------------------
# preference pairs
# --------------------------------------------------------------------------

PREF_HAND = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Lyon."),
    ("How many days are in a week?", "There are 7 days in a week.", "Weeks have about 10 days, depending on the month."),
    ("Give me a tip for staying focused.", "Put your phone in another room and work in 25-minute blocks with short breaks.", "Just try harder."),
    ("Translate to Chinese: Good night.", "晚安。", "早上好。"),
    ("Explain what a verb is.", "A verb is a word that describes an action or state, such as \"run\" or \"be\".", "A verb is a kind of noun."),
    ("Write a Python function that doubles a number.", "def double(x):\n    return x * 2", "def double(x):\n    return x + 2"),
    ("Can you help me write a thank-you note?", "Of course: \"Thank you so much for your help this week. I really appreciate it!\"", "No. Write it yourself."),
    ("Why do leaves change color in autumn?", "As days get shorter, trees stop making green chlorophyll, so the yellow and orange colors already in the leaves become visible.", "Because someone paints them."),
    ("What should I do if I cut my finger slightly?", "Rinse it with clean water, press gently to stop the bleeding and cover it with a clean bandage.", "Ignore it; cuts never matter."),
    ("Is the Sun a star?", "Yes, the Sun is a star at the center of our solar system.", "No, the Sun is a planet."),
    ("法国的首都是哪里？", "法国的首都是巴黎。", "法国的首都是伦敦。"),
    ("一年有几个月？", "一年有 12 个月。", "一年有 10 个月。"),
    ("给我一个提高专注力的建议。", "把手机放到另一个房间，每专注 25 分钟休息 5 分钟。", "不知道。"),
    ("翻译成英文：谢谢你。", "Thank you.", "Goodbye."),
    ("什么是质数？", "质数是大于 1 且只能被 1 和它本身整除的整数，例如 2、3、5、7。", "质数就是所有的偶数。"),
    ("能帮我写一句新年祝福吗？", "当然可以：祝您新年快乐，身体健康，万事如意！", "不能。"),
]


def make_preference(rng: random.Random) -> list[dict]:
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PREF_HAND]
    while len(rows) < 32:
        a, b = rng.randint(10, 60), rng.randint(10, 60)
        wrong = a + b + rng.choice([-3, -1, 1, 2, 10])
        if len(rows) % 2 == 0:
            rows.append({"prompt": f"What is {a} + {b}?", "chosen": f"{a} + {b} = {a + b}.", "rejected": f"{a} + {b} = {wrong}."})
        else:
            rows.append({"prompt": f"{a} 加 {b} 等于多少？", "chosen": f"{a} + {b} = {a + b}。", "rejected": f"{a} + {b} = {wrong}。"})
    return rows


# --------------------------------------------------------------------------
# KTO feedback (one reply per row, labelled desirable / undesirable) and an
# extended preference set (ShareGPT conversations, some multi-turn)
# --------------------------------------------------------------------------

CAPITALS = [
    ("France", "Paris", "Lyon", "法国", "巴黎", "里昂"), ("Japan", "Tokyo", "Osaka", "日本", "东京", "大阪"),
    ("Italy", "Rome", "Milan", "意大利", "罗马", "米兰"), ("Germany", "Berlin", "Munich", "德国", "柏林", "慕尼黑"),
    ("Spain", "Madrid", "Barcelona", "西班牙", "马德里", "巴塞罗那"), ("Canada", "Ottawa", "Toronto", "加拿大", "渥太华", "多伦多"),
    ("Australia", "Canberra", "Sydney", "澳大利亚", "堪培拉", "悉尼"), ("Egypt", "Cairo", "Alexandria", "埃及", "开罗", "亚历山大"),
]
REFUSALS_EN = ["No.", "I don't know.", "Figure it out yourself.", "Not my problem."]
REFUSALS_ZH = ["不知道。", "自己去查。", "不行。", "别问我。"]
HELP_EN = [
    ("How do I boil an egg?", "Put the egg in boiling water for about 9 minutes, then cool it in cold water before peeling."),
    ("How can I sleep better?", "Go to bed at the same time every night, keep the room dark and cool, and avoid screens for an hour before sleep."),
    ("How do I make a cup of tea?", "Pour freshly boiled water over a tea bag, wait three to five minutes, then remove the bag and add milk if you like."),
    ("Give me a tip for learning words.", "Review new words a few minutes every day and use each one in a sentence of your own."),
    ("How do I water a cactus?", "Water it deeply only when the soil is completely dry, about once every two to three weeks."),
    ("How do I start running?", "Begin with short runs of one or two minutes between walks, three times a week, and add a little each week."),
]
HELP_ZH = [
    ("怎么煮鸡蛋？", "把鸡蛋放进沸水里煮大约九分钟，然后放进冷水里冷却再剥壳。"),
    ("怎样才能睡得更好？", "每天固定时间睡觉，保持卧室黑暗凉爽，睡前一小时不看屏幕。"),
    ("怎么泡一杯茶？", "用刚烧开的水冲泡茶包，等三到五分钟后取出茶包即可。"),
    ("给我一个背单词的建议。", "每天花几分钟复习新单词，并用每个单词自己造一个句子。"),
]


def _pairs_pool(rng: random.Random) -> list[tuple[str, str, str]]:
    """(prompt, better reply, worse reply) triples: arithmetic, capitals, help vs refusal, EN and ZH."""
    out: list[tuple[str, str, str]] = []
    for en, cap, wrong, zh, zcap, zwrong in CAPITALS:
        out.append((f"What is the capital of {en}?", f"The capital of {en} is {cap}.", f"The capital of {en} is {wrong}."))
        out.append((f"{zh}的首都是哪里？", f"{zh}的首都是{zcap}。", f"{zh}的首都是{zwrong}。"))
    for q, a in HELP_EN:
        out.append((q, a, rng.choice(REFUSALS_EN)))
    for q, a in HELP_ZH:
        out.append((q, a, rng.choice(REFUSALS_ZH)))
    while len(out) < 96:
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        wrong = a + b + rng.choice([-10, -2, -1, 1, 3, 11])
        if rng.random() < 0.5:
            out.append((f"What is {a} + {b}?", f"{a} + {b} = {a + b}.", f"{a} + {b} = {wrong}."))
        else:
            out.append((f"{a} 加 {b} 等于多少？", f"{a} + {b} = {a + b}。", f"{a} + {b} = {wrong}。"))
    return out


def make_kto(rng: random.Random) -> list[dict]:
    """LLaMA-Factory's KTO layout: OpenAI-style messages and a true/false `label` per row."""
    rows = []
    for i, (q, good, bad) in enumerate(_pairs_pool(rng)):
        reply, label = (good, True) if i % 2 == 0 else (bad, False)
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}],
                     "label": label})
    return rows


def make_preference_extended(rng: random.Random) -> list[dict]:
    """LLaMA-Factory's ranking ShareGPT layout: conversations + chosen / rejected messages; a quarter
    of the rows carry an earlier turn. 128 pairs: the KTO pool's 96 plus 32 hand-written instructions
    answered vs refused."""
    rows = []
    pool = _pairs_pool(rng)
    hand = [(i, o) for i, x, o in EN_HAND + ZH_HAND if not x]
    for q, a in rng.sample(hand, 32):
        pool.append((q, a, rng.choice(REFUSALS_ZH if any("\u4e00" <= c <= "\u9fff" for c in q) else REFUSALS_EN)))
    for i, (q, good, bad) in enumerate(pool):
        conv = []
        if i % 4 == 3:
            pq, pgood, _ = pool[(i * 7) % len(pool)]
            conv = [{"from": "human", "value": pq}, {"from": "gpt", "value": pgood}]
        conv.append({"from": "human", "value": q})
        rows.append({"conversations": conv, "chosen": {"from": "gpt", "value": good},
                     "rejected": {"from": "gpt", "value": bad}})
    return rows


# --------------------------------------------------------------------------
# raw text (one paragraph per line, for the "text" loader)
# --------------------------------------------------------------------------

RAW_TEXT = [
    "The old lighthouse stood at the end of a narrow stone path. Every evening the keeper climbed the spiral stairs, wiped the glass and lit the lamp. Ships far out at sea saw the slow turning beam and knew where the rocks were hidden. When the keeper retired, the town installed an automatic light, but children still walked the path at sunset to watch it wake up.",
    "A good loaf of bread needs only flour, water, salt and yeast, yet it asks for patience. The dough must rest until it doubles in size, then it is folded, shaped and left to rise again. In the oven the crust turns golden and the kitchen fills with a warm smell. Many bakers say the hardest ingredient is time.",
    "Rivers shape the land slowly. Over thousands of years, moving water carries sand and pebbles downstream, carving valleys and building wide, flat plains near the sea. Farmers have settled beside rivers since ancient times because the soil there is rich and water is close at hand.",
    "Learning to play an instrument is a lesson in small steps. On the first day, the fingers feel clumsy and the notes sound thin. After a few weeks of short daily practice, simple songs begin to flow. Musicians often say that ten minutes every day is worth more than two hours once a week.",
    "In the morning market, sellers arrange tomatoes, peppers and green beans in neat rows. A woman weighs a bag of apples on an old scale and rounds the price down with a smile. By noon the crowd thins out, the stalls are folded away, and the square becomes quiet again until the next day.",
    "Computers follow instructions exactly as they are written. A program is a list of such instructions, and a bug is a place where the written steps do not match what the programmer meant. Finding bugs is like detective work: you form a guess, test it, and narrow down the cause one clue at a time.",
    "Bees visit thousands of flowers each day. As they collect nectar, pollen sticks to their fuzzy bodies and travels from one flower to the next, helping plants make seeds and fruit. Without these small workers, many of the foods we enjoy would become rare.",
    "The night sky changes with the seasons. In winter, bright groups of stars rise early in the evening, while in summer the pale band of the Milky Way stretches overhead on clear, dark nights. People have used the stars for navigation, for calendars and for stories for as long as history has been written.",
    "清晨的公园里很安静。老人们在树下打太极，动作缓慢而平稳；跑步的人沿着湖边一圈一圈地跑；几只麻雀在草地上跳来跳去，寻找面包屑。太阳慢慢升高，城市也渐渐热闹起来。",
    "学习一门新技能，最重要的是坚持。刚开始的时候，进步往往很慢，甚至会让人想要放弃。但只要每天练习一点，几个月后回头看，就会发现自己已经走了很远。",
    "秋天是收获的季节。田野里稻谷金黄，果园里苹果挂满枝头。农民们一边忙着收割，一边盘算着来年的计划。晚上，家家户户的厨房里飘出新米饭的香味。",
    "城市的地铁每天运送成千上万的乘客。早高峰时，车厢里挤满了上班的人，有人看书，有人听音乐，也有人闭目养神。一站又一站，列车把人们送到各自的目的地。",
    "写程序和写文章有相似之处：都需要先想清楚要表达什么，再一步一步组织结构。好的代码和好的文章一样，简洁、清楚，让别人容易读懂。",
    "雨后的山路湿滑，空气里带着泥土和青草的气味。溪水比平时更急，哗哗地流过石头。远处的山顶上还挂着一片白云，像是舍不得离开。",
    "A map is a promise that the world can be understood. It takes mountains, roads and coastlines and shrinks them onto a sheet of paper. Reading a map well means noticing the scale, the legend and the small arrow that points north.",
    "Tea is brewed in many ways around the world. Some people pour boiling water over a handful of leaves and drink it plain; others add milk, sugar, lemon or spices. Whatever the method, a warm cup is often a reason to pause and talk with a friend.",
]



# --------------------------------------------------------------------------
# arithmetic (prompts with answers, for grpo)
# --------------------------------------------------------------------------

def make_arithmetic(n: int = 200) -> list[dict]:
    """Small sums, differences and products with their answers: GRPO's bundled demo data
    (a reward compares the reply with `answer`). Its own seed keeps the other files unchanged."""
    rng = random.Random(SEED + 16)
    forms = ("What is {a} + {b}?", "What is {a} - {b}?", "What is {a} times {b}?", "Compute {a} + {b}.")
    rows = []
    for i in range(n):
        form = forms[i % len(forms)]
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        if "-" in form and b > a:
            a, b = b, a
        ans = a + b if "+" in form else a - b if "-" in form else a * b
        rows.append({"question": form.format(a=a, b=b), "answer": str(ans)})
    return rows

# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

DATASET_INFO = {
    "identity": {
        "file_name": "identity.json",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        "description": "Teaches the assistant its identity: Smith, an AI assistant fine-tuned with Tunesmith (EN + ZH).",
        "language": ["en", "zh"],
    },
    "instruct_en_zh": {
        "file_name": "instruct_en_zh.json",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        "description": "Short general instructions (arithmetic, definitions, translation, rewriting, lists, code), half English, half Chinese.",
        "language": ["en", "zh"],
    },
    "sharegpt_multiturn": {
        "file_name": "sharegpt_multiturn.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                 "assistant_tag": "gpt", "system_tag": "system"},
        "description": "Multi-turn conversations in ShareGPT format (from/value, human/gpt), some with a system prompt.",
        "language": ["en", "zh"],
    },
    "openai_messages": {
        "file_name": "openai_messages.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "system_tag": "system"},
        "description": "OpenAI-style chat messages (role/content) with a system prompt, JSON Lines.",
        "language": ["en", "zh"],
    },
    "preference_pairs": {
        "file_name": "preference_pairs.json",
        "formatting": "alpaca",
        "ranking": True,
        "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
        "description": "Preference pairs (prompt/chosen/rejected) for DPO/ORPO/KTO-style training.",
        "language": ["en", "zh"],
    },
    "preference_extended": {
        "file_name": "preference_extended.json",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"},
        "description": "128 preference pairs as ShareGPT conversations (some multi-turn): facts, arithmetic, help vs refusal.",
        "language": ["en", "zh"],
    },
    "kto_feedback": {
        "file_name": "kto_feedback.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                 "system_tag": "system"},
        "description": "96 replies labelled desirable (true) or undesirable (false) for KTO; half of each.",
        "language": ["en", "zh"],
    },
    "raw_text": {
        "file_name": "raw_text.txt",
        "formatting": "alpaca",
        "format": "text",
        "columns": {"prompt": "text"},
        "description": "Original prose paragraphs, one per line, for continued pretraining.",
        "language": ["en", "zh"],
    },
    "arithmetic": {
        "file_name": "arithmetic.json",
        "formatting": "alpaca",
        "columns": {"prompt": "question", "response": "answer"},
        "description": "Arithmetic questions with their answers (question/answer), for GRPO with a numeric-match reward.",
        "language": ["en"],
    },
}


def _dump(name: str, obj) -> None:
    (HERE / name).write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    rng = random.Random(SEED)
    _dump("identity.json", make_identity())
    _dump("instruct_en_zh.json", make_instruct(rng))
    _dump("sharegpt_multiturn.json", make_sharegpt(rng))
    with open(HERE / "openai_messages.jsonl", "w", encoding="utf-8") as f:
        for row in make_openai(rng):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    _dump("preference_pairs.json", make_preference(rng))
    extra = random.Random(SEED + 1)  # its own stream: the files above stay as they were
    _dump("kto_feedback.json", make_kto(extra))
    _dump("preference_extended.json", make_preference_extended(extra))
    (HERE / "raw_text.txt").write_text("\n".join(RAW_TEXT) + "\n", encoding="utf-8")
    _dump("arithmetic.json", make_arithmetic())
    _dump("dataset_info.json", DATASET_INFO)
    print("wrote datasets to", HERE)


if __name__ == "__main__":
    main()
