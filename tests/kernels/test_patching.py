"""patch(model) on tiny random models of every supported architecture.

Each test builds a 2-layer model, wraps it with PEFT (LoRA on all seven
projections, random A and B so every gradient is non-zero), deep-copies it,
patches the copy, and checks: the forwards really changed; logits in eval
mode, and loss plus every LoRA gradient in training mode, match stock.
"""
import copy

import pytest
import torch
from kernel_testutils import DEVICE, ON_GPU

import tunesmith.kernels as K

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, vocab_size=128, max_position_embeddings=64)


def _config(arch):
    C = transformers
    if arch == "llama":
        return C.LlamaConfig(**SMALL, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    if arch == "mistral":
        return C.MistralConfig(**SMALL, sliding_window=8)
    if arch == "qwen2":
        return C.Qwen2Config(**SMALL)
    if arch == "qwen3":
        return C.Qwen3Config(**SMALL)
    if arch == "gemma2":
        return C.Gemma2Config(**SMALL, query_pre_attn_scalar=16, final_logit_softcapping=30.0,
                              attn_logit_softcapping=50.0, sliding_window=8)
    if arch == "gemma3_text":
        return C.Gemma3TextConfig(**SMALL, query_pre_attn_scalar=16, sliding_window=8)
    raise ValueError(arch)


def _models(arch, dtype=torch.float32):
    torch.manual_seed(0)
    cfg = _config(arch)
    cfg._attn_implementation = "eager"
    base = transformers.AutoModelForCausalLM.from_config(cfg).to(DEVICE, dtype)
    with torch.no_grad():  # Gemma norms start at zero (scale 1 + 0): make them non-trivial
        for name, p in base.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False, lora_dropout=0.0)
    stock = peft.get_peft_model(base, lora)
    ours = copy.deepcopy(stock)
    return stock, ours


def _batch(vocab, b=2, s=12):
    ids = torch.randint(0, vocab, (b, s), device=DEVICE)
    labels = ids.clone()
    labels[:, :3] = -100
    return ids, labels


def _lora_grads(m):
    return {n: p.grad for n, p in m.named_parameters() if p.requires_grad}


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text"]


@pytest.mark.parametrize("arch", ARCHS)
def test_patch_matches_stock(arch):
    stock, ours = _models(arch)
    report = K.patch(ours, mode="on")
    assert report.applied, report.summary()
    swapped = " ".join(report.swapped)
    for kernel in ("rms_norm", "mlp", "attention", "fused_linear_ce"):
        assert kernel in swapped, report.summary()
    assert "2 LoRA-fused" in swapped, report.summary()

    inner = ours.get_base_model()
    layer = inner.model.layers[0]
    assert layer.mlp.forward.__func__.__name__ == "_mlp_forward"
    assert layer.self_attn.forward.__func__.__name__ == "_attn_forward"
    assert layer.input_layernorm.forward.__func__.__name__ == "_rms_forward"
    assert inner.forward.__func__.__name__ == "_causal_lm_forward"
    assert "forward" not in stock.get_base_model().model.layers[0].mlp.__dict__

    ids, labels = _batch(inner.config.vocab_size)
    stock.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, stock(input_ids=ids).logits, atol=2e-4, rtol=2e-4)

    stock.train(), ours.train()
    out_s = stock(input_ids=ids, labels=labels)
    out_o = ours(input_ids=ids, labels=labels)
    assert out_o.logits is None  # the fused head never builds them
    torch.testing.assert_close(out_o.loss, out_s.loss, atol=1e-5, rtol=1e-5)
    out_s.loss.backward()
    out_o.loss.backward()
    gs, go = _lora_grads(stock), _lora_grads(ours)
    assert gs.keys() == go.keys() and len(gs) == 2 * 7 * 2
    for name in gs:
        torch.testing.assert_close(go[name], gs[name], atol=1e-4, rtol=1e-3, msg=lambda m: f"{name}: {m}")


def test_packed_position_ids_match_stock():
    """Two sequences packed in one row: position ids restart; RoPE must follow them."""
    stock, ours = _models("llama")
    K.patch(ours, mode="on")
    ids, labels = _batch(128, b=1, s=12)
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]], device=DEVICE)
    stock.train(), ours.train()
    ls = stock(input_ids=ids, labels=labels, position_ids=pos).loss
    lo = ours(input_ids=ids, labels=labels, position_ids=pos).loss
    torch.testing.assert_close(lo, ls, atol=1e-5, rtol=1e-5)


def test_auto_on_cpu_is_stock_and_off_restores():
    stock, ours = _models("llama")
    if not ON_GPU:
        r = K.patch(ours, mode="auto")
        assert not r.applied and "need CUDA" in r.summary()
    K.patch(ours, mode="on")
    assert "forward" in ours.get_base_model().model.layers[0].mlp.__dict__
    r = K.patch(ours, mode="off")
    assert "restored" in r.summary()
    assert "forward" not in ours.get_base_model().model.layers[0].mlp.__dict__


def test_unknown_architecture_is_a_logged_no_op(caplog):
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64)
    m = transformers.AutoModelForCausalLM.from_config(cfg)
    with caplog.at_level("INFO", logger="tunesmith.kernels"):
        r = K.patch(m, mode="on")
    assert not r.applied and "gpt2" in r.summary() and "not in the kernel table" in r.summary()
    assert any("not in the kernel table" in rec.message for rec in caplog.records)


def test_dropout_keeps_stock_lora_layers_with_a_reason():
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_config(_config("qwen2")).to(DEVICE)
    m = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=TARGETS, lora_dropout=0.1))
    r = K.patch(m, mode="on")
    assert "lora_dropout > 0" in r.summary()
    m.train()
    ids, labels = _batch(128)
    m(input_ids=ids, labels=labels).loss.backward()  # runs: GLU kernel around PEFT's own layers


def test_dora_keeps_stock_lora_layers_with_a_reason():
    """[issue 15] DoRA layers run PEFT's own forward (the report says why); the rest is still fused."""
    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_config(_config("qwen2")).to(DEVICE)
    stock = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=TARGETS, use_dora=True,
                                                       init_lora_weights=False))
    ours = copy.deepcopy(stock)
    r = K.patch(ours, mode="on")
    assert "DoRA or another LoRA variant" in r.summary() and r.applied
    stock.eval(), ours.eval()
    ids, _ = _batch(128)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=ids).logits, stock(input_ids=ids).logits, atol=2e-4, rtol=2e-4)


def test_under_autocast_fp32_master_weights():
    """prepare_model_for_kbit_training leaves norms/embeddings/head in fp32 and the Trainer runs
    under bf16 autocast: the fused ops must run their GEMMs in bf16 and agree with stock."""
    stock, ours = _models("llama")
    K.patch(ours, mode="on")
    ids, labels = _batch(128)
    stock.train(), ours.train()
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        ls = stock(input_ids=ids, labels=labels).loss
        lo = ours(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(lo, ls, atol=2e-2, rtol=2e-2)
    ls.backward()
    lo.backward()
    gs, go = _lora_grads(stock), _lora_grads(ours)
    for name in gs:
        assert go[name].dtype == torch.float32
        # bf16 GEMMs on both sides, different rounding points: compare as directions and norms
        cos = torch.nn.functional.cosine_similarity(go[name].flatten(), gs[name].flatten(), dim=0)
        assert cos > 0.99, (name, float(cos))
        torch.testing.assert_close(go[name].norm(), gs[name].norm(), rtol=5e-2, atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_memory_mode_recompute_matches_stock_and_skips_only_a_residual_tail(arch):
    """Memory mode checkpoints every layer; the recompute of a Llama MLP skips its activation and
    down projection (its output only feeds the residual add), Gemma 2's (a norm reads it) does not.
    Gradients match stock either way."""
    from tunesmith.kernels import lora_mlp
    from tunesmith.kernels.checkpoint import apply_checkpointing, plan_checkpointing

    stock, ours = _models(arch)
    K.patch(ours, mode="on")
    plan = plan_checkpointing(ours, 24, "memory")
    plan.offload = plan.offload and ON_GPU
    apply_checkpointing(ours, plan)
    seen = []
    orig = lora_mlp.LoRAMLPFunction.forward
    lora_mlp.LoRAMLPFunction.forward = staticmethod(lambda ctx, x, *a: (seen.append(a[4]), orig(ctx, x, *a))[1])
    try:
        ids, labels = _batch(ours.get_base_model().config.vocab_size)
        stock.train(), ours.train()
        ls, lo = stock(input_ids=ids, labels=labels).loss, ours(input_ids=ids, labels=labels).loss
        ls.backward()
        lo.backward()
    finally:
        lora_mlp.LoRAMLPFunction.forward = staticmethod(orig)
    # two layers: a forward each, then a recompute each
    assert seen == ([False, False, True, True] if arch == "llama" else [False] * 4)
    torch.testing.assert_close(lo, ls, atol=1e-5, rtol=1e-5)
    gs, go = _lora_grads(stock), _lora_grads(ours)
    for name in gs:
        torch.testing.assert_close(go[name], gs[name], atol=1e-4, rtol=1e-3, msg=lambda m: f"{name}: {m}")
