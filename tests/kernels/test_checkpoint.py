"""Checkpointing policy and the checkpoint function (offload needs CUDA: gpu-marked)."""
import copy

import pytest
import torch
from kernel_testutils import DEVICE, ON_GPU

from tunesmith.kernels.checkpoint import (
    GiB,
    apply_checkpointing,
    decoder_layers,
    layer_activation_bytes,
    plan_checkpointing,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _model():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=64)
    base = transformers.AutoModelForCausalLM.from_config(cfg).to(DEVICE)
    return peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                                     init_lora_weights=False))


def test_plan_prefers_no_checkpointing_then_fewest_layers():
    m = _model()
    cfg = m.get_base_model().config
    full, ckpt = layer_activation_bytes(cfg, 4096)
    assert full > ckpt > 0
    roomy = plan_checkpointing(m, 4096, free_bytes=80 * GiB)
    assert roomy.checkpointed == 0 and "fits" in roomy.summary()
    tight = plan_checkpointing(m, 4096, "auto", free_bytes=int(GiB + 2.5 * full + 4096 * 32 * 4 + 256 * 2**20 +
                                                                 2.6 * full))
    assert 0 < tight.checkpointed < 4, tight.summary()
    assert plan_checkpointing(m, 4096, "memory").checkpointed == 4


@pytest.mark.parametrize("offload", [False, pytest.param(True, marks=pytest.mark.skipif(not ON_GPU, reason="CUDA"))])
def test_checkpointed_layers_give_the_same_grads(offload):
    stock = _model()
    ours = copy.deepcopy(stock)
    plan = plan_checkpointing(ours, 24, "memory")
    plan.offload = offload
    plan.checkpointed = 3  # layers 0-2 checkpointed, layer 3 not
    apply_checkpointing(ours, plan)
    layers = decoder_layers(ours)
    assert [layer.gradient_checkpointing for layer in layers] == [True, True, True, False]
    calls = []
    from tunesmith.kernels import checkpoint as ck

    orig = ck._CheckpointFunction.forward
    ck._CheckpointFunction.forward = staticmethod(lambda ctx, *a: (calls.append(1), orig(ctx, *a))[1])
    ids = torch.randint(0, 64, (2, 12), device=DEVICE)
    stock.train(), ours.train()
    ls = stock(input_ids=ids, labels=ids).loss
    lo = ours(input_ids=ids, labels=ids).loss
    ls.backward()
    lo.backward()
    ck._CheckpointFunction.forward = staticmethod(orig)
    assert len(calls) == 3  # our checkpoint ran for the three checkpointed layers
    torch.testing.assert_close(lo, ls)
    gs = {n: p.grad for n, p in stock.named_parameters() if p.requires_grad}
    go = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    for n in gs:
        assert go[n] is not None, n
        torch.testing.assert_close(go[n], gs[n], atol=1e-5, rtol=1e-4)


def _nf4_model():
    """The tiny Llama with every decoder projection an NF4 bitsandbytes layer, then LoRA."""
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    base = transformers.AutoModelForCausalLM.from_config(cfg)
    n = 0
    for layer in base.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False, compute_dtype=torch.float32,
                                      compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8)
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", blocksize=64)
                q = q.to(DEVICE)
                if not q.weight.bnb_quantized:
                    q.weight = q.weight._quantize(DEVICE)
                setattr(parent, name, q)
                n += lin.in_features * lin.out_features
    model = peft.get_peft_model(base.to(DEVICE), peft.LoraConfig(r=4, target_modules=["q_proj", "down_proj"]))
    return model, n


def test_auto_keeps_dequantized_weights_only_when_they_fit():
    """Auto's order: no checkpointing with the NF4 weights kept dequantized, then without them, then
    checkpointing; memory mode never keeps them. The plan's summary says which."""
    from tunesmith.kernels import choose_plan, nf4_cache_bytes

    model, n_params = _nf4_model()
    need = nf4_cache_bytes(model)
    assert need == 2 * n_params
    roomy = choose_plan(model, 4096, "auto", 80 * GiB)
    assert roomy.checkpointed == 0 and roomy.weight_cache_bytes == need
    assert "NF4 weights kept dequantized" in roomy.summary()
    # the least free memory that trains without checkpointing: no room left for the kept weights
    lo, hi = 0, 80 * GiB
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if plan_checkpointing(model, 4096, "auto", free_bytes=mid).checkpointed == 0 else (mid, hi)
    tight = choose_plan(model, 4096, "auto", hi)
    assert tight.checkpointed == 0 and tight.weight_cache_bytes == 0
    assert "kept" not in tight.summary()
    assert choose_plan(model, 4096, "auto", hi + need).weight_cache_bytes == need
    assert choose_plan(model, 4096, "memory", 80 * GiB).weight_cache_bytes == 0
    assert choose_plan(model, 4096, "auto", None).weight_cache_bytes == 0  # no CUDA: nothing to keep
