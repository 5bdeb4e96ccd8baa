"""ctx.reference(): the base model's outputs while inside, the adapter's again after, grads untouched."""

from __future__ import annotations

import contextlib

import peft
import torch
from transformers import AutoModelForCausalLM

from tunesmith.engine.paths import demo_model_dir
from tunesmith.engine.training.lm import StepContext


def test_reference_is_the_base_and_the_adapter_comes_back():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir(), dtype=torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)  # a trained adapter: outputs differ from the base
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(tuned, base, atol=1e-3)
    ctx = StepContext(model, None, torch.device("cpu"), contextlib.nullcontext)
    for _ in range(2):  # the second time reuses the layers found the first time
        with ctx.reference():
            ref = model(input_ids=ids).logits
            assert not torch.is_grad_enabled()
        torch.testing.assert_close(ref, base)
        again = model(input_ids=ids).logits
        torch.testing.assert_close(again.detach(), tuned)
        assert again.requires_grad  # the adapter is trained again after the reference pass
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads_before
