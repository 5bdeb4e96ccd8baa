"""KernelSettings travel with each patched model: two models in one process keep their own.

The models are tiny NF4 Llamas (every decoder projection a bitsandbytes NF4 layer, LoRA on all
seven): the settings (NF4 grouping, the NF4 weight cache, the LM-head chunk size) only change how
they are computed, so both must also train exactly as the unpatched model does.
"""
import dataclasses

import pytest
import torch
from kernel_testutils import DEVICE, nf4_llama

import tunesmith.kernels as K
from tunesmith.kernels import fused_linear_ce, lora_mlp
from tunesmith.kernels.settings import MiB, KernelSettings

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_settings_are_immutable_and_follow_the_memory_mode():
    s = KernelSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.group_nf4 = False
    assert KernelSettings.for_mode("memory") == KernelSettings(group_nf4=False, ce_chunk_bytes=64 * MiB)
    assert KernelSettings.for_mode("auto", cache_nf4_weights=True) == KernelSettings(cache_nf4_weights=True)
    assert KernelSettings.for_mode("speed") == KernelSettings()
    with pytest.raises(ValueError, match="ce_chunk_bytes"):
        KernelSettings(ce_chunk_bytes=0)
    with pytest.raises(TypeError, match="KernelSettings"):
        K.set_settings(torch.nn.Linear(2, 2), {"group_nf4": False})


def _spy(monkeypatch):
    """Record, per kernel call, which model's settings it ran with: (group_nf4, cache) of each fused
    MLP and the chunk size of each fused LM head."""
    seen = {"mlp": [], "ce": []}
    mlp_forward = lora_mlp.LoRAMLPFunction.forward
    ce_forward = fused_linear_ce.fused_linear_ce_forward

    def mlp(ctx, *args):
        seen["mlp"].append((args[-2], args[-1]))  # group_nf4, cache: the last two arguments
        return mlp_forward(ctx, *args)

    def ce(*args, chunk_bytes, **kwargs):
        seen["ce"].append(chunk_bytes)
        return ce_forward(*args, chunk_bytes=chunk_bytes, **kwargs)

    monkeypatch.setattr(lora_mlp.LoRAMLPFunction, "forward", staticmethod(mlp))
    monkeypatch.setattr(fused_linear_ce, "fused_linear_ce_forward", ce)
    return seen


def _step(model, ids):
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def test_two_models_patched_with_different_settings_keep_their_own(monkeypatch):
    """A memory-mode model (tune_memory: ungrouped NF4, 64 MiB LM-head chunks, every layer
    checkpointed) and a speed-mode one patched after it with the NF4 weights kept: each runs with
    its own settings, in any order, and both give stock's loss and LoRA gradients."""
    stock = nf4_llama(layers=2, targets=TARGETS, random_lora=True)[0]
    lean = nf4_llama(layers=2, targets=TARGETS, random_lora=True)[0]
    fast = nf4_llama(layers=2, targets=TARGETS, random_lora=True)[0]
    assert K.patch(lean, mode="on").applied
    plan = K.tune_memory(lean, 2 * 12, prefer="memory")
    assert plan.settings == KernelSettings.for_mode("memory") and plan.checkpointed == 2
    speed = KernelSettings(cache_nf4_weights=True, ce_chunk_bytes=4096)
    assert K.patch(fast, mode="on", settings=speed).applied
    assert K.settings_of(lean) == KernelSettings.for_mode("memory") and K.settings_of(fast) == speed

    seen = _spy(monkeypatch)
    ids = torch.randint(0, 64, (2, 12), device=DEVICE)
    want_loss, want_grads = _step(stock, ids)
    for name, model in (("lean", lean), ("fast", fast), ("lean again", lean)):
        seen["mlp"].clear(), seen["ce"].clear()
        loss, grads = _step(model, ids)
        if model is lean:  # two layers, each run and then recomputed by its checkpoint
            assert [(g, c is None) for g, c in seen["mlp"]] == [(False, True)] * 4, name
            assert seen["ce"] == [64 * MiB], name
        else:
            assert [g for g, _ in seen["mlp"]] == [True, True], name
            assert all(c is not None for _, c in seen["mlp"]), name
            assert seen["ce"] == [4096], name
        torch.testing.assert_close(loss, want_loss, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")
        assert grads.keys() == want_grads.keys()
        for n in want_grads:
            torch.testing.assert_close(grads[n], want_grads[n], atol=1e-4, rtol=1e-3, msg=lambda m: f"{name} {n}: {m}")

    # the speed model's kept weights are its own: the lean model keeps none, and unpatching frees them
    caches = {id(m._tunesmith_cache) for m in fast.modules() if getattr(m, "_tunesmith_cache", None) is not None}
    assert len(caches) == 1
    cache = next(m._tunesmith_cache for m in fast.modules() if getattr(m, "_tunesmith_cache", None) is not None)
    assert cache.nbytes > 0
    assert all(getattr(m, "_tunesmith_cache", None) is None for m in lean.modules())
    K.patch(fast, mode="off")
    assert all(getattr(m, "_tunesmith_cache", None) is None for m in fast.modules())


def test_settings_given_before_patch_are_kept():
    """A plan applied before patch(): the forwards patched afterwards take the model's settings."""
    model = nf4_llama(layers=1)[0]
    K.apply_memory_plan(model, K.plan_memory(model, 24, prefer="memory"))
    K.patch(model, mode="on")
    mlp = model.get_base_model().model.layers[0].mlp
    assert mlp._tunesmith_settings == KernelSettings.for_mode("memory")
