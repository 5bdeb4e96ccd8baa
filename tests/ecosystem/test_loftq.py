"""lora.init: loftq on QLoRA: the adapter starts by correcting the 4-bit base's rounding, and chat, the
merge and GGUF export put it on that 4-bit base, not on the original weights (engine.adapters, engine.export)."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from tunesmith.engine import adapters, export, infer, jobs, models
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError

from .conftest import nudged_adapter_run

PROMPT = ["Who are you? I am Smith, an assistant made by Tunesmith. 你是谁？"]


def test_loftq_needs_a_4bit_qlora_run_and_says_what_to_use():
    assert RunConfig().with_overrides(["method=qlora", "lora.init=loftq"]).lora.init == "loftq"
    for bad, fix in ((["method=lora"], "use method qlora"), (["quantization.bits=8"], "quantization.bits 4"),
                     (["lora.use_dora=true"], "turn one of them off")):
        with pytest.raises(ConfigError, match=fix) as e:
            RunConfig().with_overrides(["method=qlora", "lora.init=loftq", *bad])
        assert "lora.init: loftq" in str(e.value) and "\n" not in str(e.value)


def _logits(model, ids) -> torch.Tensor:
    """fp32 logits on the CPU, wherever load_for_training put the model (a GPU when there is one)."""
    return model(ids.to(model.device)).logits.float().cpu()


def _fp_logits(tok):
    fp, _, _ = models.load_for_training(RunConfig().with_overrides(["method=lora"]))
    with torch.no_grad():
        return _logits(fp, tok(PROMPT, return_tensors="pt")["input_ids"])


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).pow(2).mean().sqrt().item()


def test_loftq_start_is_closer_to_the_original_model_than_the_4bit_base(caplog):
    import re

    cfg = RunConfig().with_overrides(["method=qlora", "lora.init=loftq", "lora.r=16", "lora.alpha=32"])
    model, tok, _ = models.load_for_training(cfg)
    want = _fp_logits(tok)
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    torch.manual_seed(0)  # the randomized SVD's projections
    with caplog.at_level("INFO", logger="tunesmith.engine.adapters"):
        pm = adapters.build_adapter(model, cfg)
    assert "LoftQ: 28 adapters fitted" in caplog.text  # 7 projections x 4 layers of the demo model
    # what LoftQ fits: the weights. A rank-16 fit of noise-like rounding on 256-wide weights removes ~9%
    # of it (9.21% -> 8.38% of the weights' norm); alpha != r, so a wrong scale would show here
    before, after = map(float, re.search(r"weight error vs the original ([\d.]+)% -> ([\d.]+)%", caplog.text).groups())
    assert after < 0.95 * before, (before, after)
    pm.eval()
    with torch.no_grad():
        start = _rms(_logits(pm, ids), want)
        with pm.disable_adapter():
            four_bit = _rms(_logits(pm, ids), want)
    # and the model's answers start nearer the 16-bit model's than the 4-bit base's do (a few % on this
    # tiny model; bf16 arithmetic on a GPU blurs the logits further)
    assert start < four_bit, (start, four_bit)


@pytest.fixture(scope="module")
def loftq_run(tunesmith_home):
    """A qlora + LoftQ run whose adapter was moved off its start (stand-in for training), saved as the trainer
    saves it, with the in-memory model's logits for the prompt: what every export must reproduce."""
    cfg = RunConfig().with_overrides(["method=qlora", "lora.init=loftq", "lora.r=8", "lora.alpha=16",
                                      "data.datasets=[identity]", "output.run_name=loftq"])
    torch.manual_seed(0)
    run, pm, tok = nudged_adapter_run(cfg, 0.02)
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    pm.train()  # no dropout here; train mode keeps bitsandbytes' CPU weights in their stored layout
    with torch.no_grad():
        trained = _logits(pm, ids)
    return run, ids, trained


def test_the_adapter_folder_says_it_belongs_on_the_4bit_base(loftq_run):
    run, _, _ = loftq_run
    adapter = run.run_dir / "adapter"
    record = json.loads((adapter / adapters.LOFTQ_FILE).read_text())
    assert record["quant_type"] == "nf4" and record["double_quant"] is True and record["blocksize"] == 64
    assert len(record["weights"]) == 28 and "model.layers.0.self_attn.q_proj.weight" in record["weights"]
    assert "lm_head.weight" not in record["weights"]  # not 4-bit in training, so not rounded later
    assert "LoftQ: load the base in 4 bits" in (adapter / "README.md").read_text()
    acfg = json.loads((adapter / "adapter_config.json").read_text())
    assert acfg["init_lora_weights"] is True  # loading it elsewhere does not run LoftQ again
    from tunesmith.engine import hub

    card = hub.model_card(jobs.load_config(run), run, "adapter", "me/loftq")  # what a Hub push writes
    assert "A LoftQ adapter" in card and "load the base in 4 bits" in card


def test_merged_loftq_model_is_the_4bit_base_plus_the_adapter(loftq_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run, ids, trained = loftq_run
    res = export.export_run(run.id, "merged", tmp_path / "merged")
    assert res.notes and res.notes[0].startswith("LoftQ adapter: merged into the 4-bit (NF4) base")
    assert json.loads((res.path / export.MARKER).read_text())["loftq_base"] == "4-bit nf4"
    merged = AutoModelForCausalLM.from_pretrained(str(res.path), dtype=torch.float32).eval()
    with torch.no_grad():
        err = _rms(_logits(merged, ids), trained)
        # what the merge did before LoftQ support: the adapter on the original 16-bit weights
        fp = AutoModelForCausalLM.from_pretrained(str(models.resolve_model_path("tunesmith/demo")), dtype=torch.float32)
        naive = _rms(_logits(PeftModel.from_pretrained(fp, str(run.run_dir / "adapter")).eval(), ids), trained)
    # merged weights are stored in the base's bf16 (~3 digits; CPU 0.004, and the GPU's bf16 forward of the
    # trained model 0.020); the original weights are ~9% off the 4-bit ones (0.2)
    assert err < 0.03 and naive > 5 * err, (err, naive)

    infer.forget()
    model, _ = infer.get_model(run.id)  # chat and serve load it the same way
    with torch.no_grad():
        assert _rms(_logits(model, ids), trained) < 1e-3
    infer.forget()


@pytest.mark.slow
def test_loftq_qlora_run_trains_and_its_gguf_matches(tunesmith_home, tmp_path):
    from .test_variant_runs import QUICK

    cfg = RunConfig().with_overrides([*QUICK, "training.max_steps=3", "method=qlora", "lora.init=loftq",
                                      "output.run_name=loftq-run"])
    run = jobs.wait(jobs.submit(cfg), timeout=900)
    assert run.status == "completed", run.error
    log = (run.run_dir / "worker.log").read_text()
    assert "LoftQ: 28 adapters fitted" in log and "LoRA (loftq init)" in log
    assert (run.run_dir / "adapter" / adapters.LOFTQ_FILE).exists()
    res = export.export_run(run.id, "adapter", tmp_path / "adapter")
    assert (res.path / adapters.LOFTQ_FILE).exists() and "load its base in 4 bits" in res.notes[0]
    if importlib.util.find_spec("llama_cpp") is not None:  # the gguf extra: CI installs it
        res = export.export_run(run.id, "gguf", tmp_path / "gguf", quants=["f16"])
        assert res.notes[0].startswith("LoftQ adapter: merged into the 4-bit (NF4) base")
        (gguf,) = [f for f in res.files if f["path"].endswith(".gguf")]
        assert gguf["fidelity_passed"] and gguf["top1_agreement"] >= 0.99, gguf["fidelity"]


def test_loftq_reads_a_hub_models_weights_from_the_hub_cache(tmp_path, monkeypatch):
    """A hub id's original weights come from the snapshot from_pretrained filled (here a cache made
    by hand, offline), not from the network."""
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("a" * 40)
    shutil.copytree(models.resolve_model_path("tunesmith/demo"), snap)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    cfg = RunConfig().with_overrides(["model.name_or_path=org/tiny", "method=qlora", "lora.init=loftq"])
    assert adapters.original_weights_dir(cfg) == snap
    missing = cfg.with_overrides(["model.name_or_path=org/absent"])
    with pytest.raises(ConfigError, match="loftq needs org/absent's original safetensors"):
        adapters.original_weights_dir(missing)


def test_the_studio_offers_every_adapter_start():
    from typing import get_args

    from tunesmith.engine.config import LoraConfig
    from tunesmith.studio.locales.zh_cn import ZH
    from tunesmith.studio.variants_panel import LORA_INITS

    assert [v for _, v in LORA_INITS] == list(get_args(LoraConfig.model_fields["init"].annotation))
    assert all(label in ZH for label, _ in LORA_INITS)
    assert LoraConfig.model_fields["init"].description in ZH  # the help line under the widget


def test_the_fit_on_large_weights_is_near_the_best_rank_r():
    """Large projections take the randomized SVD: its rank-r fit leaves within 1% of the optimal residual."""
    from tunesmith.engine.adapters import _top_singular

    g = torch.Generator().manual_seed(0)
    m = torch.randn(1024, 384, generator=g) * torch.linspace(1, 0.05, 384)  # a decaying spectrum
    r = 16
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    u2, s2, vh2 = _top_singular(m, r)
    best = (m - (u[:, :r] * s[:r]) @ vh[:r]).norm()
    got = (m - (u2[:, :r] * s2[:r]) @ vh2[:r]).norm()
    assert got <= best * 1.01
