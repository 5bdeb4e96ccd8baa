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
    # lora.precision bf16: 2 bytes a weight and gradient instead of 4 (1B, r=16 on all seven: 11.3M weights)
    assert 40e6 < peak() - peak(adapter_bytes=2) < 50e6
    cfg = RunConfig().with_overrides(["lora.precision=bf16"])
    assert Settings.from_run(cfg, kernels_active=True).adapter_bytes == 2
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


# ---- several GPUs: FSDP divides what it shards -------------------------------------------------------------


def test_fsdp_divides_the_layers_adapter_and_optimizer_by_the_gpus():
    s = Settings(method="lora", tokens=4096, gradient_checkpointing=True)
    one = estimate(LLAMA_8B, s)
    ddp = estimate(LLAMA_8B, Settings(**{**s.__dict__, "world": 4, "strategy": "ddp"}))
    two = estimate(LLAMA_8B, Settings(**{**s.__dict__, "world": 2, "strategy": "fsdp"}))
    four = estimate(LLAMA_8B, Settings(**{**s.__dict__, "world": 4, "strategy": "fsdp"}))
    assert ddp.weights == one.weights and ddp.trainable > one.trainable  # every GPU a whole copy, plus a bucket
    assert four.weights < two.weights < one.weights
    # the layers' 16-bit weights split; the embedding and head (2 x 1.05 GB) and two gathered layers stay
    layer_bytes = 2 * LLAMA_8B.linear_params
    assert two.weights == pytest.approx(layer_bytes / 2 + 2 * LLAMA_8B.other_params
                                        + 2 * layer_bytes / LLAMA_8B.layers, rel=0.01)
    assert two.trainable == pytest.approx(one.trainable / 2, rel=0.001)
    assert two.activations == one.activations  # each GPU still runs its own rows through every layer


def test_fsdp_keeps_the_kernels_plan_without_the_dequantized_nf4_weights():
    """Under FSDP the kernels run as on one GPU (same activations, same plan) but the memory plan keeps
    no 16-bit copy of the NF4 weights: each GPU would hold every layer whole."""
    cfg = RunConfig().with_overrides(["training.batch_size=2", "data.cutoff_len=2048"])
    assert Settings.from_run(cfg, kernels_active=True, world=2, strategy="fsdp").kernels
    s = Settings(method="qlora", tokens=4096, kernels=True)
    one = estimate(LLAMA_8B, s, free_bytes=140 * GiB)
    two = estimate(LLAMA_8B, Settings(**{**s.__dict__, "world": 2, "strategy": "fsdp"}), free_bytes=140 * GiB)
    assert one.weight_cache > 0 and one.plan == "no checkpointing, NF4 weights kept dequantized"
    assert two.weight_cache == 0 and two.plan == "no checkpointing"
    assert two.activations == one.activations and two.weights < one.weights


def test_auto_picks_fsdp_only_when_one_gpu_is_too_small():
    from tunesmith.engine.fit import choose_strategy

    cfg = RunConfig().with_overrides(["method=lora", "training.batch_size=1", "data.cutoff_len=1024",
                                      "training.gradient_accumulation=1"])
    name, why = choose_strategy(cfg, 2, int(80e9), LLAMA_8B, "llama")
    assert name == "ddp" and "one GPU holds the whole run" in why
    name, why = choose_strategy(cfg, 2, int(16e9), LLAMA_8B, "llama")
    assert name == "fsdp" and "one GPU would need" in why and "sharded over 2 GPUs" in why
    assert choose_strategy(cfg, 1, int(16e9), LLAMA_8B, "llama")[0] == "single"
    assert choose_strategy(cfg, 2, None, LLAMA_8B, "llama")[0] == "ddp"  # CPU processes
    forced = cfg.with_overrides(["resources.strategy=fsdp"])
    assert choose_strategy(forced, 2, int(80e9), LLAMA_8B, "llama") == ("fsdp", "resources.strategy is fsdp")
    full = cfg.with_overrides(["method=full"])
    assert choose_strategy(full, 2, int(16e9), LLAMA_8B, "llama")[0] == "ddp"


def test_the_fit_line_of_a_two_gpu_run_names_the_strategy(monkeypatch):
    """8B LoRA (16 GB of 16-bit weights) on two 16 GB GPUs: a whole copy per GPU does not fit, so auto shards it."""
    monkeypatch.setattr(fit, "model_shape", lambda cfg: (LLAMA_8B, "llama"))
    cfg = RunConfig().with_overrides(["method=lora", "training.batch_size=1", "data.cutoff_len=512",
                                      "training.gradient_accumulation=1", "resources.gpus=2"])
    fits = fit.check(cfg, [_gpu(16, 0), _gpu(16, 1)], use_free=False)
    assert [f.strategy for f in fits] == ["fsdp", "fsdp"]
    assert fits[0].line().endswith("each (FSDP over 2 GPUs)")
    ddp = fit.check(cfg.with_overrides(["resources.strategy=ddp"]), [_gpu(16, 0), _gpu(16, 1)], use_free=False)
    assert ddp[0].estimate.peak_bytes > fits[0].estimate.peak_bytes
    assert not ddp[0].fits and fits[0].fits
    assert fit.suggest(cfg.with_overrides(["resources.strategy=ddp"]), [_gpu(16, 0), _gpu(16, 1)]) \
        == "resources.strategy=fsdp"


def test_tokens_per_pass_follow_the_trainer():
    cfg = RunConfig().with_overrides(["training.batch_size=2", "data.cutoff_len=1024", "training.gradient_accumulation=4"])
    assert fit.pass_tokens(cfg, kernels_active=False) == (2048, 0)
    assert fit.pass_tokens(cfg, kernels_active=True) == (2048, 8192)  # auto: a whole step first
    mem = cfg.with_overrides(["training.memory_mode=memory"])
    assert fit.pass_tokens(mem, kernels_active=True) == (1024, 0)  # one cutoff-long row per pass
    # auto halves the pass until no layer is checkpointed, as the trainer's _fit_capacity does
    s = Settings.from_run(cfg, kernels_active=True)
    roomy, tight = estimate(LLAMA_8B, s, free_bytes=140 * GiB), estimate(LLAMA_8B, s, free_bytes=30 * GiB)
    assert roomy.plan.startswith("no checkpointing") and tight.activations < roomy.activations


def test_fsdp_is_refused_for_what_it_cannot_shard():
    with pytest.raises(ConfigError, match="resources.strategy: fsdp shards LoRA and QLoRA runs only"):
        RunConfig().with_overrides(["method=full", "resources.strategy=fsdp"])
    with pytest.raises(ConfigError, match="fsdp shards 4-bit QLoRA"):
        RunConfig().with_overrides(["quantization.bits=8", "resources.strategy=fsdp"])
    with pytest.raises(ConfigError, match="resources.strategy"):
        RunConfig().with_overrides(["resources.strategy=zero"])


def test_the_studio_strategy_choices_are_values_the_config_takes():
    from tunesmith.studio import gpu_panel

    assert [v for _, v in gpu_panel.STRATEGIES] == ["auto", "ddp", "fsdp"]
    for _, value in gpu_panel.STRATEGIES:
        assert RunConfig().with_overrides([f"resources.strategy={value}"]).resources.strategy == value
    assert "resources.strategy" in gpu_panel.FIT_FIELDS  # the fit line follows it
