"""Runs of the LoRA variants through the worker on the demo model, then exported."""

from __future__ import annotations

import json

import pytest

from tunesmith.engine import export, jobs
from tunesmith.engine.config import RunConfig

QUICK = ["data.datasets=[identity]", "data.max_samples=8", "data.cutoff_len=96", "training.max_steps=2",
         "training.batch_size=2", "training.gradient_accumulation=1", "training.gradient_checkpointing=false"]


def _run(*overrides: str):
    cfg = RunConfig().with_overrides([*QUICK, *overrides])
    info = jobs.wait(jobs.submit(cfg), timeout=900)
    assert info.status == "completed", info.error
    return info


@pytest.mark.slow
def test_freeze_with_neftune_trains_and_merges(tunesmith_home, tmp_path):
    run = _run("method=freeze", "freeze.trainable_layers=1", "training.neftune_alpha=5", "output.run_name=freeze-neft")
    assert run.has_full_model and not run.has_adapter
    log = (run.run_dir / "worker.log").read_text()
    assert "freeze: training layers 3-3 of 4" in log and "NEFTune: noise alpha 5.0" in log
    res = export.export_run(run.id, "merged", tmp_path / "merged")
    assert (res.path / "config.json").exists()


@pytest.mark.slow
def test_dora_trains_and_merges(tunesmith_home, tmp_path):
    run = _run("method=lora", "lora.use_dora=true", "output.run_name=dora")
    acfg = json.loads((run.run_dir / "adapter" / "adapter_config.json").read_text())
    assert acfg["use_dora"] is True and acfg["base_model_name_or_path"] == "tunesmith/demo"
    from safetensors import safe_open

    with safe_open(str(run.run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert any("lora_magnitude_vector" in k for k in f.keys())
    assert (export.export_run(run.id, "merged", tmp_path / "merged").path / "config.json").exists()
    assert export.export_run(run.id, "adapter", tmp_path / "adapter").path.exists()


@pytest.mark.slow
def test_rslora_trains_and_exports_a_gguf_llama_cpp_reads(tunesmith_home, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python (the gguf extra) is not installed")
    run = _run("method=lora", "lora.use_rslora=true", "lora.r=8", "lora.alpha=16", "output.run_name=rslora")
    acfg = json.loads((run.run_dir / "adapter" / "adapter_config.json").read_text())
    assert acfg["use_rslora"] is True
    assert "LoRA (rsLoRA)" in (run.run_dir / "worker.log").read_text()
    res = export.export_run(run.id, "gguf", tmp_path / "gguf", quants=["f16"])
    (gguf,) = [f for f in res.files if f["path"].endswith(".gguf")]
    # llama.cpp ran the file against base + rsLoRA adapter in PyTorch: same next tokens, near-zero KL
    assert gguf["fidelity_passed"] and gguf["top1_agreement"] >= 0.99, gguf["fidelity"]
