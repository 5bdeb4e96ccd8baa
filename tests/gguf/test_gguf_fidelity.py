"""Each architecture: tiny model of its real config shape and tokenizer family -> F16, Q8_0,
Q4_K_M -> loaded in llama.cpp -> compared with the HF model (top-1 agreement, mean KL, ids).

Fast by default: the demo shape (GPT-2 BPE, Llama body), Qwen2 (biases, tied, NFC, multi-shard)
and Gemma 3 (SentencePiece, q/k norms, local/global layers). The other families are `slow`.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from tinymodels import needs_llama
from tunesmith.engine.gguf import TARGETS, export_gguf
from tunesmith.engine.paths import demo_model_dir

pytestmark = needs_llama

QUANTS = ["f16", "q8_0", "q4_k_m"]
# Mean KL bounds (nats) on these trained tiny models: a correct F16 file is at ~1e-7; a missing
# Q/K permutation, rope_freqs or sliding window costs 1e-4 .. 1e-1 (measured when writing the tests).
MAX_KL = {"f16": 2e-5, "q8_0": 1e-3, "q4_k_m": 2e-2}

FAST = ["demo", "qwen2", "gemma3"]
SLOW = ["llama3", "llama2", "mistral", "qwen3", "gemma", "gemma2"]
PRE = {"demo": "gpt-2", "qwen2": "qwen2", "qwen3": "qwen2", "llama3": "llama-bpe"}


def _assert_faithful(results, family: str) -> None:
    assert [r.quant for r in results] == QUANTS
    for r in results:
        f = r.fidelity
        assert r.path.exists() and r.size_bytes == r.path.stat().st_size
        assert f.tokenization_ok, f.tokenization_mismatches
        assert f.top1_agreement >= TARGETS[r.quant], f"{family} {r.quant}: {f.summary()}"
        assert f.mean_kl <= MAX_KL[r.quant], f"{family} {r.quant}: {f.summary()}"
        assert r.fallback is None
        assert r.modelfile is not None and r.modelfile.exists()
        assert r.ollama_command.startswith("ollama create ")
    sizes = [r.size_bytes for r in results]
    assert sizes[0] > sizes[1] > sizes[2]  # F16 > Q8_0 > Q4_K_M


def _export(tiny_model, family: str, tmp_path: Path, **build):
    src = tiny_model(family, **build)
    results = export_gguf(src, tmp_path / "out", QUANTS)
    _assert_faithful(results, family)
    meta = gguf.GGUFReader(str(results[0].path)).fields
    if family in PRE:
        assert bytes(meta["tokenizer.ggml.pre"].parts[-1]).decode() == PRE[family]
    return results


@pytest.mark.parametrize("family", FAST)
def test_family_roundtrip(tiny_model, family, tmp_path):
    build = {"max_shard_size": "1MB"} if family == "qwen2" else {}  # several shards, streamed
    _export(tiny_model, family, tmp_path, **build)


@pytest.mark.slow
@pytest.mark.parametrize("family", SLOW)
def test_family_roundtrip_slow(tiny_model, family, tmp_path):
    results = _export(tiny_model, family, tmp_path)
    if family in ("llama2", "mistral"):
        # llama.cpp's SentencePiece prefix rule differs from HF's Metaspace 'first' on text after a
        # leading space or a special token: reported, not hidden.
        assert results[0].fidelity.tokenization_warnings


@pytest.mark.slow
def test_embedded_demo_model(tmp_path):
    """The shipped demo model folder converts directly; F16 meets the target.

    The demo model is trained only briefly, so many of its next-token choices are near ties and
    quantized top-1 agreement sits around the targets (Q8_0 ~97-98%, Q4_K_M ~88-90%); we check
    that those are measured and close, not that they clear the bar.
    """
    src = demo_model_dir()
    if not (src / "model.safetensors").exists():
        pytest.skip("assets/demo-model has no weights yet (python assets/build_demo_model.py)")
    results = export_gguf(src, tmp_path, QUANTS)
    f16, q8, q4 = (r.fidelity for r in results)
    assert f16.tokenization_ok and f16.top1_agreement >= TARGETS["f16"] and f16.mean_kl < 1e-4
    assert q8.top1_agreement >= 0.95 and q4.top1_agreement >= 0.8
    assert "chatml" in results[0].modelfile.read_text()
