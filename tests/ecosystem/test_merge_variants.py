"""The merge (and so the GGUF export, which converts the merged folder) keeps DoRA and rsLoRA
adapters' outputs: merged logits equal the PEFT model's."""

from __future__ import annotations

import pytest
import torch

from tunesmith.engine import export
from tunesmith.engine.config import RunConfig

from .conftest import nudged_adapter_run


@pytest.mark.parametrize("variant", [["lora.use_dora=true"], ["lora.use_rslora=true"],
                                     ["lora.use_dora=true", "lora.use_rslora=true"]])
def test_merged_model_matches_the_adapter(tunesmith_home, tmp_path, variant):
    from transformers import AutoModelForCausalLM

    cfg = RunConfig().with_overrides(["method=lora", "lora.r=4", "lora.alpha=16", "data.datasets=[identity]", *variant])
    # stand-in for training: move B and the DoRA magnitudes off their start
    run, pm, tok = nudged_adapter_run(cfg, 0.05, names=("lora_B", "magnitude"))
    ids = tok(["Who are you? 你是谁？"], return_tensors="pt")["input_ids"]
    pm.eval()
    with torch.no_grad():
        want = pm(ids).logits
    merged = export.merge_to_dir(run.id, tmp_path / "merged")
    got = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()
    with torch.no_grad():
        got_logits = got(ids).logits
    # the merged weights are stored in the base's bf16: ~3 significant digits
    err = (got_logits - want).abs().max().item()
    assert err < 0.05, err
    with torch.no_grad():  # and the adapter did change the model far more than that: the check is not vacuous
        with pm.disable_adapter():
            assert (pm(ids).logits - want).abs().max().item() > 10 * err
