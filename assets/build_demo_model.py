"""Build Tunesmith's embedded demo model (assets/demo-model/).

The demo model is a tiny Llama-architecture causal LM (~4M parameters) with a
byte-level BPE tokenizer, both trained from scratch on Tunesmith's own bundled
sample datasets (data/instruct_en_zh.json, data/sharegpt_multiturn.json,
data/openai_messages.jsonl, data/raw_text.txt -- deliberately NOT
data/identity.json, so the identity dataset has something to teach). It exists
so the studio can be tried end to end on a laptop CPU in seconds; it is not
useful for real work.

Run from the repository root (CPU only: ~8 min on 2 idle cores, ~11 min on a busy machine;
`--steps 260` is quicker and still gives a usable demo):

    python assets/build_demo_model.py            # writes assets/demo-model/
    python assets/build_demo_model.py --steps 50 --out /tmp/demo   # quick smoke run

Deterministic for a given torch version and thread count (fixed seed, fixed
number of steps, 2 threads by default).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
DEFAULT_OUT = ROOT / "assets" / "demo-model"

SEED = 20240601
VOCAB_SIZE = 4096
MAX_LEN = 1024
PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
DEFAULT_SYSTEM = "You are a helpful assistant."

# ChatML. Assistant content (+ <|im_end|>) is wrapped in {% generation %} so
# tokenizer.apply_chat_template(..., return_assistant_tokens_mask=True) works.
CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

README = """\
---
license: apache-2.0
language: [en, zh]
library_name: transformers
pipeline_tag: text-generation
---

# Tunesmith demo model (`tunesmith/demo`)

A **tiny demo model for trying the Tunesmith studio** - it loads in a second and
fine-tunes on a laptop CPU, so every screen (train, chat, export) can be tried
without downloading anything. It is **not for real work**: answers are rough
and often wrong.

## How it was built

`assets/build_demo_model.py` (run from the repository root) builds it from
scratch, deterministically (seed {seed}):

- **Tokenizer**: byte-level BPE trained with the `tokenizers` library on
  Tunesmith's bundled sample data, vocabulary {vocab}; GPT-2 pre-tokenizer
  (`ByteLevel(add_prefix_space=False, use_regex=True)`), ByteLevel decoder and
  post-processor. Special tokens: `<|endoftext|>` (id {pad_id}, padding),
  `<|im_start|>` (id {start_id}), `<|im_end|>` (id {end_id}, end of turn / eos).
  No BOS token. ChatML chat template (default system prompt
  "{system}"), with `{{% generation %}}` markers so assistant masks work.
- **Model**: `LlamaForCausalLM`, hidden 256, MLP 768, 4 layers, 8 heads
  (4 KV heads), context {maxlen}, tied embeddings, {params:,} parameters,
  stored in bfloat16.
- **Pretraining**: {steps} steps of AdamW on CPU over the bundled instruct,
  ShareGPT, OpenAI-messages and raw-text datasets rendered through the chat
  template ({train_s:.0f} s on 2 threads, final loss {loss:.3f}). The identity
  dataset was left out on purpose, so the model does not yet know it is "Smith" -
  fine-tuning on `identity` teaches it that.

## Licence

Apache-2.0. Weights, tokenizer and training data are original to Tunesmith.
"""


def load_corpus_texts() -> tuple[list[str], list[list[dict]]]:
    """Return (plain texts for raw pretraining, conversations for chat rendering)."""
    convs: list[list[dict]] = []
    for row in json.loads((DATA / "instruct_en_zh.json").read_text(encoding="utf-8")):
        prompt = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
        convs.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": row["output"]}])
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    for row in json.loads((DATA / "sharegpt_multiturn.json").read_text(encoding="utf-8")):
        msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        msgs += [{"role": role[t["from"]], "content": t["value"]} for t in row["conversations"]]
        convs.append(msgs)
    with open(DATA / "openai_messages.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                convs.append(json.loads(line)["messages"])
    raw = [ln for ln in (DATA / "raw_text.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    return raw, convs


def train_tokenizer(raw: list[str], convs: list[list[dict]], out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(raw)
    for c in convs:
        corpus.extend(m["content"] for m in c)
        corpus.append("system\nuser\nassistant\n" + DEFAULT_SYSTEM)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        additional_special_tokens=[IM_START],
        model_max_length=MAX_LEN,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)
    return fast


def build_training_ids(tokenizer, raw: list[str], convs: list[list[dict]], rng: random.Random) -> list[int]:
    docs: list[list[int]] = []
    for c in convs:
        text = tokenizer.apply_chat_template(c, tokenize=False)
        docs.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    for p in raw:
        docs.append(tokenizer(p, add_special_tokens=False)["input_ids"] + [tokenizer.pad_token_id])
    rng.shuffle(docs)
    return [t for d in docs for t in d]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)

    out: Path = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    raw, convs = load_corpus_texts()
    tokenizer = train_tokenizer(raw, convs, out)
    pad_id = tokenizer.pad_token_id
    start_id = tokenizer.convert_tokens_to_ids(IM_START)
    end_id = tokenizer.convert_tokens_to_ids(IM_END)
    print(f"tokenizer: vocab={len(tokenizer)} pad={pad_id} im_start={start_id} im_end={end_id}")

    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=MAX_LEN,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=end_id,
        pad_token_id=pad_id,
        hidden_act="silu",
        initializer_range=0.02,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")

    stream = build_training_ids(tokenizer, raw, convs, rng)
    data = torch.tensor(stream, dtype=torch.long)
    n_tok = data.numel()
    print(f"corpus: {n_tok:,} tokens")

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        prog = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * prog)))

    g = torch.Generator().manual_seed(SEED)
    model.train()
    t0 = time.time()
    ema = None
    for step in range(args.steps):
        starts = torch.randint(0, n_tok - args.seq - 1, (args.batch,), generator=g)
        batch = torch.stack([data[s : s + args.seq] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.4f} ema {ema:.4f} {time.time() - t0:6.1f}s", flush=True)
    train_s = time.time() - t0
    final_loss = ema

    model.eval()
    model = model.to(torch.bfloat16)
    model.generation_config = GenerationConfig(
        eos_token_id=end_id, pad_token_id=pad_id, bos_token_id=None, do_sample=False, max_new_tokens=128
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    portable_tokenizer_config(out)
    (out / "README.md").write_text(
        README.format(seed=SEED, vocab=VOCAB_SIZE, pad_id=pad_id, start_id=start_id, end_id=end_id,
                      system=DEFAULT_SYSTEM, maxlen=MAX_LEN, params=n_params, steps=args.steps,
                      train_s=train_s, loss=final_loss),
        encoding="utf-8",
    )
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"saved {out} ({size / 1e6:.2f} MB), trained {train_s:.0f}s, final loss (ema) {final_loss:.4f}")
    verify(out)


def portable_tokenizer_config(out: Path) -> None:
    """Make tokenizer_config.json readable by more tools: generic fast-tokenizer
    class name and the chat template inline (GGUF converters read it from here)."""
    path = out / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["chat_template"] = CHAT_TEMPLATE
    path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def verify(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    model.eval()
    prompts = ["Who are you?", "What is the capital of France?", "What is 12 + 30?", "翻译成英文。\n今天天气很好。",
               "Write a Python function that adds two numbers."]
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=48, do_sample=False)
        reply = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        print(f"[{p!r}] -> {reply!r}")
        if p == "Who are you?":
            assert "Smith" not in reply, "demo model must not know the Smith identity before fine-tuning"


if __name__ == "__main__":
    main()
