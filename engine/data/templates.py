"""Named chat templates, for tokenizers that ship none (or to override theirs).

    resolve_template(tokenizer, "llama3") -> ChatTemplate(name, jinja, kwargs)
    render(tokenizer, template, messages, add_generation_prompt=False, tools=None) -> str

The registry: chatml, llama3, qwen (Qwen2.5), qwen3 (thinking on), qwen3_nothink
(thinking off), mistral, gemma, alpaca, vicuna, phi (Phi-3), deepseek (V3/R1
style). They are written here as Jinja for transformers' `apply_chat_template`
and use the tokenizer's own bos/eos tokens where the original format ends a
turn with them; marker tokens such as <|im_end|> are literal text, which a
tokenizer without them splits into pieces (still learnable, just longer).

Without a name the tokenizer's own template is used; a tokenizer with none and
no name is a DataError asking for model.chat_template.

Qwen3 thinking: `qwen3` / `qwen3_nothink`, or `enable_thinking=` passed down
to any template that reads it (Qwen3's own template does); with thinking off
the empty <think></think> block is part of the prompt and is not trained.

What it does not know: whether a named template matches how a base model was
trained; pick the one from the model card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import DataError

# Shared pieces --------------------------------------------------------------

_TOOL_CALLS_JSON = (
    "{%- for tc in message.tool_calls %}{{ '\\n' if not loop.first or message.content else '' }}"
    "{{ {'name': tc.function.name, 'arguments': tc.function.arguments} | tojson }}{%- endfor %}"
)

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN = (
    "{%- if not messages or messages[0].role != 'system' %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}{%- for tc in message.tool_calls %}"
    "{{- '\\n<tool_call>\\n' }}{{ {'name': tc.function.name, 'arguments': tc.function.arguments} | tojson }}"
    "{{- '\\n</tool_call>' }}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen3: assistant turns after the last user turn carry a <think></think> block
# (empty when the data has no reasoning); earlier turns are rendered without it.
# Thinking on: the generation prompt ends at "assistant\n", so the think block
# is trained. Thinking off: the prompt already holds the empty block, so only
# the answer is trained and the model learns to answer without thinking.
QWEN3 = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{%- set content = message.content or '' %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set reasoning = message.reasoning_content if message.reasoning_content is defined else '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if loop.index0 > ns.last_user %}"
    "{{- '<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{{- content }}"
    "{%- if message.tool_calls is defined %}{%- for tc in message.tool_calls %}"
    "{{- '\\n<tool_call>\\n' }}{{ {'name': tc.function.name, 'arguments': tc.function.arguments} | tojson }}"
    "{{- '\\n</tool_call>' }}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- set role = 'ipython' if message.role == 'tool' else message.role %}"
    "{{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

# Mistral (v3 style): the system prompt is folded into the first user turn.
MISTRAL = (
    "{{- bos_token }}"
    "{%- set sys = messages[0].content if messages and messages[0].role == 'system' else '' %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{{- '[INST] ' + (sys + '\\n\\n' if sys and loop.index0 <= 1 else '') + message.content + ' [/INST]' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '[TOOL_RESULTS] ' + message.content + ' [/TOOL_RESULTS]' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- ' ' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}{{- '[TOOL_CALLS] ' }}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

GEMMA = (
    "{{- bos_token }}"
    "{%- set sys = messages[0].content if messages and messages[0].role == 'system' else '' %}"
    "{%- for message in messages %}"
    "{%- if message.role != 'system' %}"
    "{%- set role = 'model' if message.role == 'assistant' else 'user' %}"
    "{{- '<start_of_turn>' + role + '\\n' + (sys + '\\n\\n' if sys and loop.index0 <= 1 and role == 'user' else '') }}"
    "{{- message.content or '' }}"
    "{%- if message.tool_calls is defined %}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- '<end_of_turn>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\\n' }}{%- endif %}"
)

ALPACA = (
    "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}"
    "{%- else %}{{- 'Below is an instruction that describes a task. '"
    "'Write a response that appropriately completes the request.\\n\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role in ['user', 'tool'] %}{{- '### Instruction:\\n' + message.content + '\\n\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '### Response:\\n' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- eos_token + '\\n\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '### Response:\\n' }}{%- endif %}"
)

VICUNA = (
    "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content }}"
    "{%- else %}{{- \"A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.\" }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role in ['user', 'tool'] %}{{- ' USER: ' + message.content }}"
    "{%- elif message.role == 'assistant' %}{{- ' ASSISTANT: ' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- eos_token }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- ' ASSISTANT:' }}{%- endif %}"
)

PHI = (
    "{%- for message in messages %}"
    "{%- set role = 'user' if message.role == 'tool' else message.role %}"
    "{{- '<|' + role + '|>\\n' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- '<|end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}"
)

DEEPSEEK = (
    "{{- bos_token }}"
    "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}{{- '<｜User｜>' + message.content }}"
    "{%- elif message.role == 'tool' %}{{- '<｜tool▁output▁begin｜>' + message.content + '<｜tool▁output▁end｜>' }}"
    "{%- elif message.role == 'assistant' %}{{- '<｜Assistant｜>' + (message.content or '') }}"
    "{%- if message.tool_calls is defined %}" + _TOOL_CALLS_JSON + "{%- endif %}"
    "{{- eos_token }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<｜Assistant｜>' }}{%- endif %}"
)


@dataclass(frozen=True)
class ChatTemplate:
    name: str  # registry name, or "tokenizer" for the tokenizer's own
    jinja: str | None  # None = the tokenizer's own template
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra template variables (enable_thinking)


TEMPLATES: dict[str, ChatTemplate] = {
    "chatml": ChatTemplate("chatml", CHATML),
    "llama3": ChatTemplate("llama3", LLAMA3),
    "qwen": ChatTemplate("qwen", QWEN),
    "qwen3": ChatTemplate("qwen3", QWEN3, {"enable_thinking": True}),
    "qwen3_nothink": ChatTemplate("qwen3_nothink", QWEN3, {"enable_thinking": False}),
    "mistral": ChatTemplate("mistral", MISTRAL),
    "gemma": ChatTemplate("gemma", GEMMA),
    "alpaca": ChatTemplate("alpaca", ALPACA),
    "vicuna": ChatTemplate("vicuna", VICUNA),
    "phi": ChatTemplate("phi", PHI),
    "deepseek": ChatTemplate("deepseek", DEEPSEEK),
}


def template_names() -> list[str]:
    return list(TEMPLATES)


def resolve_template(tokenizer, name: str | None = None, enable_thinking: bool | None = None) -> ChatTemplate:
    """The named template, or the tokenizer's own; DataError when there is neither."""
    if name:
        key = name.strip().lower().replace("-", "_")
        if key not in TEMPLATES:
            raise DataError(f"model.chat_template: unknown template {name!r}; use one of {', '.join(TEMPLATES)}, "
                            "or leave it empty to use the tokenizer's own.")
        t = TEMPLATES[key]
    else:
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(
                f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this model') or 'this model'!r} has no chat "
                f"template: set model.chat_template to one of {', '.join(TEMPLATES)} (chatml is a safe default)."
            )
        t = ChatTemplate("tokenizer", None)
    if enable_thinking is not None:
        t = ChatTemplate(t.name, t.jinja, {**t.kwargs, "enable_thinking": enable_thinking})
    return t


def render(tokenizer, template: ChatTemplate, conversations: list[list[dict]], add_generation_prompt: bool = False,
           tools: list | None = None) -> list[str]:
    """Render a batch of conversations to text with the template (no tokenization)."""
    out = tokenizer.apply_chat_template(
        conversations, tools=tools, chat_template=template.jinja, add_generation_prompt=add_generation_prompt,
        tokenize=False, **template.kwargs,
    )
    return out if isinstance(out, list) else [out]
