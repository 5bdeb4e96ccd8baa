"""engine.fit: the peak-memory estimate against measured H100 peaks, and the refusal it drives."""

from __future__ import annotations

import pytest

from tunesmith.engine import fit, jobs
from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError
from tunesmith.engine.fit import GiB, ModelShape, Settings, estimate
from tunesmith.engine.gpus import GpuInfo

LLAMA_1B = ModelShape(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, head_dim=64, vocab=128256,
                      tied=True)
LLAMA_8B = ModelShape(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, head_dim=128, vocab=128256,
                      tied=False)

# bench/RESULTS.md, session 3 (H100, QLoRA r=16 on all projections, 2 x 2048 tokens): peak GiB.
MEASURED = [
    (LLAMA_1B, "stock-gc", 8.53), (LLAMA_1B, "stock", 17.92), (LLAMA_1B, "auto", 7.52), (LLAMA_1B, "memory", 1.66),
    (LLAMA_8B, "stock-gc", 16.75), (LLAMA_8B, "stock", 50.80), (LLAMA_8B, "auto", 34.42), (LLAMA_8B, "memory", 6.94),
]


def _settings(path: str, **kw) -> Settings:
    return Settings(tokens=2 * 2048, kernels=path in ("auto", "memory"),
                    memory_mode="memory" if path == "memory" else "auto",
                    gradient_checkpointing=path == "stock-gc", **kw)


@pytest.mark.parametrize("shape,path,measured", MEASURED)
def test_estimate_is_within_ten_percent_of_measured_peaks(shape, path, measured):
    est = estimate(shape, _settings(path), free_bytes=79 * GiB)
    assert est.peak_bytes / GiB == pytest.approx(measured, rel=0.10), est.parts()


def test_auto_plans_follow_free_memory_like_the_kernels():
    plenty = estimate(LLAMA_8B, _settings("auto"), free_bytes=79 * GiB)
    assert plenty.weight_cache > 0 and "no checkpointing" in plenty.plan
    tight = estimate(LLAMA_8B, _settings("auto"), free_bytes=22 * GiB)
    assert "checkpointed" in tight.plan and tight.peak_bytes < 22 * GiB
    tiny = estimate(LLAMA_8B, _settings("auto"), free_bytes=8 * GiB)
    assert tiny.plan.startswith("every layer") and tiny.peak_bytes == estimate(LLAMA_8B, _settings("memory")).peak_bytes \
        + (256 - 64) * 1024**2


def test_estimate_moves_with_the_settings_that_matter():
    base = _settings("stock-gc")
    peak = lambda **kw: estimate(LLAMA_1B, Settings(**{**base.__dict__, **kw})).peak_bytes  # noqa: E731
    assert peak(tokens=8192) > peak()
    assert peak(method="lora") > peak() and peak(method="full") > peak(method="lora")
    assert peak(lora_r=128) > peak()
    assert peak(optimizer="adamw_8bit") < peak()
    assert peak(targets=["q_proj", "v_proj"]) < peak()
    assert peak(double_quant=False) > peak()
    assert peak(gradient_checkpointing=False) > peak()
    # full fine-tuning of 8B: 16 bytes a parameter before activations
    full = estimate(LLAMA_8B, Settings(method="full", tokens=4096))
    assert full.weights + full.trainable > 16 * 8.0e9


def _gpu(total_gb: float, index: int = 0) -> GpuInfo:
    return GpuInfo(index, "Test GPU", int(total_gb * 1e9), int(total_gb * 1e9) - 500_000_000)


def test_the_demo_model_fits_and_the_line_says_so():
    cfg = RunConfig().with_overrides(demo_overrides_list())
    line = fit.fit_line(cfg, [_gpu(24)])
    assert line.startswith("fits on GPU 0: ~") and "of 24 GB" in line
    assert fit.fit_line(cfg, []).startswith("No CUDA GPU here")
    fit.refuse_if_too_big(cfg, [_gpu(24)])  # no error


def test_a_run_that_cannot_fit_is_refused_naming_the_setting(tmp_path, fresh_home, monkeypatch):
    """A wide model (config.json only, no weights) with full fine-tuning on a 4 GB GPU."""
    from transformers import LlamaConfig

    folder = tmp_path / "wide"
    LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16,
                num_key_value_heads=4, vocab_size=32000).save_pretrained(folder)
    cfg = RunConfig().with_overrides(demo_overrides_list() + [f"model.name_or_path={folder}", "method=full"])
    with pytest.raises(ConfigError, match=r"does not fit on GPU 0: ~\d+\.\d of 4 GB.*set method=qlora"):
        fit.refuse_if_too_big(cfg, [_gpu(4)])
    # The job manager refuses it before anything is written.
    from tunesmith.engine import gpus

    monkeypatch.setattr(gpus, "list_gpus", lambda fresh=False: [_gpu(4)])
    monkeypatch.setattr(jobs, "validate", lambda cfg: None)  # a config-only folder is no model to train
    with pytest.raises(ConfigError, match="set method=qlora"):
        jobs.submit(cfg, start=False)
    assert not list((fresh_home / "runs").glob("*")) if (fresh_home / "runs").exists() else True
    # On a larger GPU the same run fits.
    fit.refuse_if_too_big(cfg, [_gpu(80)])
