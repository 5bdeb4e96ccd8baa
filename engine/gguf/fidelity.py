"""Does the GGUF compute what the Hugging Face model computes? Load it in llama.cpp and compare.

Two checks, run on every exported file:

1. Tokenization: llama.cpp's ids must equal the HF tokenizer's on a multilingual set (Latin, Cyrillic,
   Greek, Arabic, Devanagari, CJK, emoji, code, digits, whitespace runs), with and without the
   BOS/EOS the tokenizer adds, and on a chat-template rendering parsed with special tokens. Any
   difference fails the export: a model that reads different ids is a different model.
2. Next-token distributions: a fixed set of prompts (English, Chinese, code) is fed as the same ids
   to both models; at every position we compare the HF distribution P with llama.cpp's Q:
   top-1 agreement (argmax equal) and mean KL(P || Q) in nats.

The HF side is computed once per export (`Reference`), then its model is freed before the GGUFs
load, so an 8B export does not hold two copies of the model in memory.

What it does not know: long contexts (prompts are short), sampling settings, the chat template's
behaviour in Ollama (see modelfile.py).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tunesmith.engine.errors import ExportError

PROMPTS: dict[str, str] = {
    "english": "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg",
    "chinese": "人工智能正在改变我们的生活方式。在医疗、教育和交通领域，",
    "code": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n    return",
}

TOKENIZATION_SET: tuple[str, ...] = (
    "Hello, world! I'm fine; you're great. DON'T SHOUT.",
    "  leading spaces, trailing spaces   ",
    "line one\nline two\n\n\nthree newlines\r\nwindows line\ttab",
    "Numbers: 0 7 42 123 1234 12345678 3.14159 -17 1e-5 2024-06-01 $1,000.00",
    "Ünïcödé façade naïve café Straße Œuvre ñandú",
    "Привет, как дела? Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε· ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "हिन्दी एक भाषा है। नमस्ते दुनिया",
    "你好，世界！人工智能正在改变我们的生活。",
    "日本語のテキストです。カタカナとひらがな、漢字。",
    "한국어 텍스트입니다. 안녕하세요!",
    "ภาษาไทย สวัสดีครับ",
    "emoji 👋🏽 family 👨‍👩‍👧 flags 🇫🇷🇯🇵 ✨🚀",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }\n\t\treturn sum;",
    "<html><body class=\"main\">text &amp; more</body></html>",
    "a" * 40 + " " + "ab" * 20,
    "   \n\n  \t ",
)

# Minimum top-1 agreement per type. f32/f16/bf16, q8_0 and q4_k_m are the targets; the
# others are our interpolation between them, shown for information.
TARGETS: dict[str, float] = {
    "f32": 0.99, "f16": 0.99, "bf16": 0.99, "q8_0": 0.98,
    "q6_k": 0.95, "q5_k_m": 0.93, "q4_k_m": 0.90, "q4_0": 0.85, "q3_k_m": 0.80,
}


@dataclass
class Fidelity:
    top1_agreement: float
    mean_kl: float
    tokenization_ok: bool
    positions: int = 0
    target: float | None = None
    tokenization_mismatches: list[str] = field(default_factory=list)  # fail the export
    tokenization_warnings: list[str] = field(default_factory=list)  # known llama.cpp SentencePiece difference

    @property
    def passed(self) -> bool:
        ok = self.tokenization_ok
        return ok and (self.target is None or self.top1_agreement >= self.target)

    def summary(self) -> str:
        tok = "tokenization identical" if self.tokenization_ok else "TOKENIZATION DIFFERS"
        if self.tokenization_ok and self.tokenization_warnings:
            tok += " (except text after a leading space or a special token: see tokenization_warnings)"
        tgt = f" (target {self.target:.0%})" if self.target is not None else ""
        return f"top-1 agreement {self.top1_agreement:.1%}{tgt}, mean KL {self.mean_kl:.2g} nats over {self.positions} positions; {tok}"


@dataclass
class Reference:
    """HF token ids and log-probabilities for the fixed prompts (computed once, model freed)."""

    ids: list[list[int]]
    logprobs: list[np.ndarray]  # [positions, vocab] float32 log-softmax per prompt
    model_dir: Path

    @classmethod
    def compute(cls, hf_model_dir: Path, prompts: Sequence[str] | None = None) -> "Reference":
        import torch

        prompts = list(prompts or PROMPTS.values())
        tok = _hf_tokenizer(hf_model_dir)
        model = _hf_model(hf_model_dir)
        ids, lps = [], []
        with torch.no_grad():
            for p in prompts:
                x = tok(p, add_special_tokens=True)["input_ids"]
                logits = model(torch.tensor([x])).logits[0].float()
                lps.append(torch.log_softmax(logits, dim=-1).numpy())
                ids.append(list(x))
        del model
        gc.collect()
        return cls(ids, lps, Path(hf_model_dir))


def _hf_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    path = Path(model_dir)
    if (path / "adapter_config.json").exists() and not (path / "tokenizer_config.json").exists():
        path = _adapter_base(path)
    return AutoTokenizer.from_pretrained(str(path))


def _adapter_base(adapter_dir: Path) -> Path:
    base = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    try:  # the demo id and other names the engine resolves
        from tunesmith.engine.models import resolve_model_path

        base = resolve_model_path(base)
    except ImportError:
        pass
    return Path(base)


def _hf_model(model_dir: Path):
    """HF model in float32 (bf16 when float32 would not fit comfortably), eager attention.

    A folder with adapter_config.json is loaded as base + adapter (PEFT), unmerged: the
    reference the issue asks for.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(model_dir)
    adapter = (path / "adapter_config.json").exists()
    base = _adapter_base(path) if adapter else path
    size = sum(f.stat().st_size for f in Path(base).glob("*.safetensors"))
    # float32 doubles a 16-bit checkpoint; above ~8 GB of f32 stay in bf16 (CPU bf16 matmul is fine)
    dtype = torch.float32 if size * 2 < 8e9 else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype, attn_implementation="eager")
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(path))
    return model.eval()


@contextlib.contextmanager
def _stderr_to(buf: list[str]):
    """Collect what llama.cpp prints on fd 2 (it writes from C, past sys.stderr) into buf."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            buf.append(tmp.read().decode("utf-8", "replace"))


def _load_llama(gguf_path: Path, n_ctx: int = 512, vocab_only: bool = False):
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise ExportError(
            "The llama.cpp check needs llama.cpp support (llama-cpp-python): `tunesmith setup gguf` installs it "
            "(or export with check=False)."
        ) from e
    threads = os.cpu_count() or 1
    log: list[str] = []
    try:
        with _stderr_to(log):  # llama.cpp's full log, kept quiet: shown only when the load fails
            llm = Llama(
                model_path=str(gguf_path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                vocab_only=vocab_only, n_threads=threads, n_threads_batch=threads, verbose=True,
            )
        llm.verbose = False
        from llama_cpp._logger import set_verbose

        set_verbose(False)
        return llm
    except Exception as e:
        keys = ("error", "failed", "unknown", "invalid", "wrong", "exception")
        why = [ln.strip() for ln in "".join(log).splitlines() if any(k in ln.lower() for k in keys)][-3:]
        raise ExportError(f"llama.cpp cannot load {gguf_path.name}: {e}. " + " | ".join(why)) from e


SPM_PREFIX_NOTE = (
    "llama.cpp's SentencePiece tokenizer puts '\u2581' before text at the start and after every special "
    "token; this Hugging Face tokenizer does not when the text already starts with a space or follows "
    "a special token (Metaspace prepend_scheme 'first'), so such inputs get different ids in llama.cpp"
)


def check_tokenization(gguf_path: Path, hf_model_dir: Path, llm=None) -> tuple[list[str], list[str]]:
    """(errors, warnings): texts whose llama.cpp ids differ from the HF tokenizer's.

    Errors fail the export. Warnings are the one known, unfixable difference of llama.cpp's
    SentencePiece tokenizer (SPM_PREFIX_NOTE): texts that start with whitespace, and text after a
    special token; every other text must still match exactly.
    """
    tok = _hf_tokenizer(hf_model_dir)
    own = llm is None
    llm = llm or _load_llama(Path(gguf_path), vocab_only=True)
    # (text, HF ids, llama.cpp ids, may differ by the SentencePiece prefix rule)
    cases: list[tuple[str, list[int], list[int], bool]] = []
    try:
        spm_prefix = llm.metadata.get("tokenizer.ggml.model") == "llama" and llm.metadata.get(
            "tokenizer.ggml.add_space_prefix", "true") != "false"
        for text in TOKENIZATION_SET:
            b = text.encode("utf-8")
            known = spm_prefix and text[:1].isspace()
            cases.append((text, tok(text, add_special_tokens=False)["input_ids"], llm.tokenize(b, add_bos=False, special=False), known))
            cases.append((text, tok(text, add_special_tokens=True)["input_ids"], llm.tokenize(b, add_bos=True, special=False), known))
        if getattr(tok, "chat_template", None):
            msgs = [{"role": "user", "content": "Hello! 你好"}, {"role": "assistant", "content": "Hi there."}, {"role": "user", "content": "2+2?"}]
            try:
                chat = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            except Exception:
                chat = None
            if isinstance(chat, str):
                ll = llm.tokenize(chat.encode(), add_bos=False, special=True)
                cases.append((chat, tok(chat, add_special_tokens=False)["input_ids"], ll, spm_prefix))
    finally:
        if own:
            llm.close()
    errors, warnings = [], []
    for text, hf_ids, ll_ids, known in cases:
        if list(hf_ids) != list(ll_ids):
            i = next((k for k, (a, b) in enumerate(zip(hf_ids, ll_ids)) if a != b), min(len(hf_ids), len(ll_ids)))
            line = f"{text[:40]!r}: HF {list(hf_ids[i:i + 5])} vs llama.cpp {list(ll_ids[i:i + 5])} at token {i}"
            (warnings if known else errors).append(line)
    if warnings:
        warnings.insert(0, SPM_PREFIX_NOTE)
    return errors, warnings


def _kl_top1(p_log: np.ndarray, q_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = q_logits.astype(np.float64)
    q_log = q - q.max(axis=-1, keepdims=True)
    q_log -= np.log(np.exp(q_log).sum(axis=-1, keepdims=True))
    p_log64 = p_log.astype(np.float64)
    kl = (np.exp(p_log64) * (p_log64 - q_log)).sum(axis=-1)
    agree = p_log.argmax(axis=-1) == q.argmax(axis=-1)
    return kl, agree


def check_fidelity(
    gguf_path: Path,
    hf_model_dir: Path,
    prompts: Sequence[str] | None = None,
    *,
    quant: str | None = None,
    reference: Reference | None = None,
) -> Fidelity:
    """Compare a GGUF with the HF model (folder, or adapter folder = base + adapter) it came from."""
    gguf_path = Path(gguf_path)
    ref = reference or Reference.compute(Path(hf_model_dir), prompts)
    n_ctx = max(64, max(len(x) for x in ref.ids) + 8)
    llm = _load_llama(gguf_path, n_ctx=n_ctx)
    try:
        mismatches, tok_warnings = check_tokenization(gguf_path, hf_model_dir, llm=llm)
        kls, agrees = [], []
        for ids, p_log in zip(ref.ids, ref.logprobs):
            llm.reset()
            llm.eval(ids)
            q = np.array(llm.scores[: len(ids)], dtype=np.float32)
            if q.shape != p_log.shape:
                raise ExportError(f"{gguf_path.name}: llama.cpp returned logits of shape {q.shape}, HF {p_log.shape}.")
            kl, agree = _kl_top1(p_log, q)
            kls.append(kl)
            agrees.append(agree)
    finally:
        llm.close()
    kl_all, agree_all = np.concatenate(kls), np.concatenate(agrees)
    if not np.isfinite(kl_all).all():
        raise ExportError(f"{gguf_path.name}: llama.cpp produced non-finite logits; the file is broken.")
    quant = quant or _guess_quant(gguf_path)
    return Fidelity(
        top1_agreement=float(agree_all.mean()),
        mean_kl=float(kl_all.mean()),
        tokenization_ok=not mismatches,
        positions=int(agree_all.size),
        target=TARGETS.get(quant) if quant else None,
        tokenization_mismatches=mismatches,
        tokenization_warnings=tok_warnings,
    )


def _guess_quant(path: Path) -> str | None:
    stem = path.stem.lower()
    return next((q for q in sorted(TARGETS, key=len, reverse=True) if stem.endswith(q)), None)
