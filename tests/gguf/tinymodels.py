"""Tiny models of each supported family, built in the test (no download).

Each model keeps its family's real config *shape* (GQA ratio, explicit head_dim, biases, q/k norms,
tied embeddings, rope scaling, soft-capping, sliding windows) at small dims, with a real tokenizer
of its family trained here on a small multilingual corpus:

- byte-level BPE with the GPT-2, Llama 3 or Qwen 2 pre-tokenizer (tokenizers' BpeTrainer);
- SentencePiece BPE with byte fallback (sentencepiece's trainer), turned into the HF tokenizer.json
  form Llama 2 / Mistral / Gemma ship (BPE + Metaspace, merges from the SentencePiece pieces).

A random model's next-token distribution is nearly flat, so top-1 agreement would measure noise.
The models are therefore trained for a few dozen steps on the fidelity prompts: the layers must
do real work (predict the next token) and the distributions become peaked.

Matrix rows are multiples of 256 (k-quants' block) unless a test asks otherwise.
"""

from __future__ import annotations

import io
import os
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tunesmith.engine.gguf.fidelity import PROMPTS, TOKENIZATION_SET

try:
    import llama_cpp  # noqa: F401

    HAVE_LLAMA = True
except Exception:  # not installed, or a broken build
    HAVE_LLAMA = False

# Skipped only outside CI: CI installs llama.cpp support (./test.sh), so there a missing one fails loudly.
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA and not os.environ.get("CI"),
    reason="llama.cpp support is not installed (`tunesmith setup gguf`); it loads and quantizes GGUFs",
)

CORPUS = [
    *PROMPTS.values(),
    *TOKENIZATION_SET,
    "The quick brown fox jumps over the lazy dog. It's 12:45 and we're late!",
    "In 1455 the first book was printed with movable type; by 1500 presses ran in 250 cities.",
    "机器学习是人工智能的一个分支。深度学习使用多层神经网络。今天天气很好，我们去公园散步吧。",
    "import numpy as np\nx = np.arange(10)\nprint(x.sum())\nclass Foo:\n    def __init__(self):\n        self.a = 1\n",
    "for i in range(100):\n    if i % 3 == 0:\n        print('fizz')\n",
    "Les modèles de langue prédisent le mot suivant. Die Katze schläft auf dem Sofa.",
    "El niño comió una manzana. Москва — столица России. Ελλάδα. Türkiye. Việt Nam.",
    "User: what is 2+2?\nAssistant: 4.\nUser: and 3*7? Assistant: 21.",
]


def corpus_lines(repeat: int = 20) -> list[str]:
    return [line for _ in range(repeat) for line in CORPUS]


# --------------------------------------------------------------------------- tokenizers

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
    " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] + '\\n\\n' %}"
    "{% set msgs = messages[1:] %}{% else %}{% set sys = '' %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (sys if loop.first else '') + m['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
)

BPE_PATTERNS = {
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}


def byte_level_bpe(kind: str, vocab_size: int = 1200):
    """kind: 'gpt2' (demo-like), 'llama3' or 'qwen2'. Returns a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {
        "gpt2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    }[kind]
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(BPE_PATTERNS[kind]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_lines(), trainer)
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B", special_tokens=[("<|begin_of_text|>", bos)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", chat_template=LLAMA3_TEMPLATE)
    if kind == "qwen2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML)


def sentencepiece_bpe(kind: str, vocab_size: int = 1200):
    """kind: 'llama' (Llama 2 / Mistral: dummy prefix) or 'gemma' (no prefix, turn tokens).

    Returns (transformers tokenizer, tokenizer.model bytes).
    """
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    gemma = kind == "gemma"
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, split_digits=True, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", add_dummy_prefix=not gemma,
        unk_id=3 if gemma else 0, bos_id=2 if gemma else 1, eos_id=1 if gemma else 2, pad_id=0 if gemma else -1,
        pad_piece="<pad>", bos_piece="<bos>" if gemma else "<s>", eos_piece="<eos>" if gemma else "</s>",
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"] if gemma else [],
        minloglevel=2, num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    # HF's merges for a SentencePiece BPE model: every split of a piece into two pieces, in the
    # order of the merged piece's id (= its score rank), then of the parts' ids.
    merges = []
    for piece, pid in vocab.items():
        if sp.is_control(pid) or sp.is_byte(pid) or sp.is_unknown(pid) or len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            a, b = piece[:k], piece[k:]
            if a in vocab and b in vocab:
                merges.append((pid, vocab[a], vocab[b], a, b))
    merges.sort()
    unk, bos, eos = sp.id_to_piece(sp.unk_id()), sp.id_to_piece(sp.bos_id()), sp.id_to_piece(sp.eos_id())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for *_, a, b in merges], unk_token=unk, byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never" if gemma else "first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, sp.bos_id())])
    from tokenizers import AddedToken

    specials = [unk, bos, eos] + (["<pad>", "<start_of_turn>", "<end_of_turn>"] if gemma else [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    kwargs = dict(unk_token=unk, bos_token=bos, eos_token=eos)
    if gemma:
        kwargs.update(pad_token="<pad>", chat_template=GEMMA_TEMPLATE)
    else:
        kwargs.update(chat_template=MISTRAL_TEMPLATE)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs), model.getvalue()


# --------------------------------------------------------------------------- models


@dataclass
class Family:
    name: str
    config_cls: str
    tokenizer: str  # gpt2 | llama3 | qwen2 | spm-llama | spm-gemma
    config: dict


def _families() -> dict[str, Family]:
    small = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    return {
        # Llama 3.1: llama3 rope scaling (original context shrunk so short prompts feel it), GQA
        "llama3": Family("llama3", "LlamaConfig", "llama3", dict(
            small, rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 32}, tie_word_embeddings=False)),
        # Llama 2: SentencePiece, MHA
        "llama2": Family("llama2", "LlamaConfig", "spm-llama", dict(
            small, num_key_value_heads=4, rope_theta=10000.0, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False)),
        "mistral": Family("mistral", "MistralConfig", "spm-llama", dict(
            small, rope_theta=1000000.0, max_position_embeddings=32768, sliding_window=4096, tie_word_embeddings=False)),
        # Qwen2.5-0.5B-like: q/k/v biases, tied embeddings, large rope base
        "qwen2": Family("qwen2", "Qwen2Config", "qwen2", dict(
            small, rope_theta=1000000.0, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True)),
        # Qwen3: q/k norms, head_dim 128 != hidden/heads
        "qwen3": Family("qwen3", "Qwen3Config", "qwen2", dict(
            small, head_dim=128, rope_theta=1000000.0, max_position_embeddings=40960, rms_norm_eps=1e-6, tie_word_embeddings=True)),
        # Gemma 2B-like: multi-query attention
        "gemma": Family("gemma", "GemmaConfig", "spm-gemma", dict(
            small, num_key_value_heads=1, head_dim=64, max_position_embeddings=8192, rms_norm_eps=1e-6)),
        # Gemma 2: soft-capping, local/global layers with a window shorter than the prompts
        "gemma2": Family("gemma2", "Gemma2Config", "spm-gemma", dict(
            small, num_hidden_layers=4, head_dim=64, query_pre_attn_scalar=64, attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0, sliding_window=12, max_position_embeddings=8192)),
        # Gemma 3 (text): q/k norms, 5 local : 1 global, own local rope base, linear scaling on global
        "gemma3": Family("gemma3", "Gemma3TextConfig", "spm-gemma", dict(
            small, num_hidden_layers=6, head_dim=64, query_pre_attn_scalar=64, sliding_window=12,
            rope_theta=1000000.0, rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0},
            max_position_embeddings=32768)),
        # the demo model's shape (tiny GPT-2 style tokenizer, Llama body, tied)
        "demo": Family("demo", "LlamaConfig", "gpt2", dict(
            small, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4, rope_theta=10000.0,
            max_position_embeddings=1024, tie_word_embeddings=True)),
    }


FAMILIES = _families()


def build_tokenizer(kind: str):
    """(tokenizer, tokenizer.model bytes or None)"""
    if kind.startswith("spm-"):
        return sentencepiece_bpe(kind[4:])
    return byte_level_bpe(kind), None


def train_briefly(model, tokenizer, steps: int = 60, lr: float = 5e-3) -> float:
    """Fit the fidelity prompts so next-token distributions are peaked; returns the last loss.

    All prompts share the first context (just BOS, or nothing); they are weighted 3:2:1 so that
    first prediction has a clear winner instead of a three-way tie that no format could agree on.
    One padded batch per step, one CPU thread (two threads are slower on a busy 2-core machine).
    """
    texts = list(PROMPTS.values())
    rows = [tokenizer(p, add_special_tokens=True)["input_ids"] for k, p in zip((3, 2, 1), texts) for _ in range(k)]
    n = max(map(len, rows))
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        loss = torch.tensor(0.0)
        for _ in range(steps):
            opt.zero_grad()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return float(loss.detach())


def build_model(family: str | Family, out_dir: Path, *, steps: int = 60, dtype: torch.dtype = torch.bfloat16,
                overrides: dict | None = None, max_shard_size: str | None = None, pad_vocab_to: int = 64) -> Path:
    """Tokenizer + trained tiny model of `family`, saved as a merged HF folder in out_dir."""
    import transformers
    from transformers import AutoModelForCausalLM

    fam = FAMILIES[family] if isinstance(family, str) else family
    torch.manual_seed(0)
    tok, sp_model = build_tokenizer(fam.tokenizer)
    n_tok = len(tok)
    vocab = -(-n_tok // pad_vocab_to) * pad_vocab_to  # padded like real checkpoints (rows without tokens)
    cfg_kwargs = dict(fam.config, vocab_size=vocab, **(overrides or {}))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        cfg_kwargs.setdefault(key, getattr(tok, key))
    cfg = getattr(transformers, fam.config_cls)(**cfg_kwargs)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    train_briefly(model, tok, steps=steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(out_dir, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    tok.save_pretrained(out_dir)
    if sp_model is not None:
        (out_dir / "tokenizer.model").write_bytes(sp_model)
    return out_dir


def config_of(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text())
