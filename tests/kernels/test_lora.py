"""LoRA-fused ops (single linear, QKV, gated MLP) against plain PyTorch, 16-bit and NF4 bases."""
import pytest
import torch
from kernel_testutils import DEVICE, assert_close, assert_close_norm, gpu_param, leaf

from tunesmith.kernels.lora import Proj, lora_linear, lora_linear_reference
from tunesmith.kernels.lora_mlp import lora_mlp, lora_mlp_reference
from tunesmith.kernels.lora_qkv import lora_qkv
from tunesmith.kernels.nf4 import dequantize_nf4_reference

CASES = [(torch.float32, 1e-4, 1e-4), (torch.bfloat16, 5e-2, 5e-2)]


def _check(actual, expected, atol, rtol, name, n_rows):
    """Elementwise on small shapes; on GPU-sized ones (thousands of rows summed in bf16) by norm."""
    if n_rows > 256:
        assert_close_norm(actual, expected, 1e-2 if rtol > 1e-3 else 1e-4, name)
    else:
        assert_close(actual, expected, atol, rtol, name)


def _proj(out_f, in_f, r, dtype, nf4=False, lora=True, bias=False):
    w = torch.randn(out_f, in_f, device=DEVICE) / in_f**0.5
    b = torch.randn(out_f, device=DEVICE, dtype=dtype) * 0.1 if bias else None
    if nf4:
        F = pytest.importorskip("bitsandbytes.functional")
        packed, qs = F.quantize_4bit(w.to(dtype), blocksize=64, compress_statistics=True, quant_type="nf4")
        qs.dtype = dtype
        p = Proj(packed, qs, b, 0.5, out_f)
        # the quantizer's flat blocks (bitsandbytes' CPU dequantizer blocks per row when rows are not a
        # multiple of 64; see test_nf4.py)
        w_ref = dequantize_nf4_reference(packed, qs).float()
    else:
        w = w.to(dtype)
        p = Proj(w, None, b, 0.5, out_f)
        w_ref = w.float()
    A = leaf(torch.randn(r, in_f, device=DEVICE) / in_f**0.5) if lora else None  # fp32, like PEFT
    B = leaf(torch.randn(out_f, r, device=DEVICE) * 0.2) if lora else None
    return p, A, B, w_ref


def _ref_args(p, A, B, w_ref):
    return (w_ref, None if p.bias is None else p.bias.float(), None if A is None else leaf(A.detach()),
            None if B is None else leaf(B.detach()), p.scale)


def _grads(ref_args):
    return ref_args[2].grad, ref_args[3].grad


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("nf4", [False, True], ids=["16bit", "nf4"])
@pytest.mark.parametrize("n,in_f,out_f,r", [(6, 64, 48, 4), (10, 128, 192, 8), gpu_param(4096, 4096, 4096, 16)])
def test_lora_linear(dtype, atol, rtol, nf4, n, in_f, out_f, r):
    p, A, B, w_ref = _proj(out_f, in_f, r, dtype, nf4, bias=True)
    x = torch.randn(2, n // 2, in_f, device=DEVICE, dtype=dtype)
    dy = torch.randn(2, n // 2, out_f, device=DEVICE, dtype=dtype)
    x1 = leaf(x)
    y = lora_linear(x1, p, A, B)
    y.backward(dy)
    ra = _ref_args(p, A, B, w_ref)
    x2 = leaf(x.float())
    yr = lora_linear_reference(x2, *ra)
    yr.backward(dy.float())
    assert y.dtype == dtype
    _check(y, yr, atol, rtol, "y", n)
    _check(x1.grad, x2.grad, atol, rtol, "dx", n)
    assert A.grad.dtype == torch.float32
    _check(A.grad, ra[2].grad, atol, rtol, "dA", n)
    _check(B.grad, ra[3].grad, atol, rtol, "dB", n)


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("nf4", [False, True], ids=["16bit", "nf4"])
def test_lora_qkv(dtype, atol, rtol, nf4):
    h, r = 64, 4
    projs = [_proj(64, h, r, dtype, nf4, bias=True), _proj(32, h, r, dtype, nf4, lora=False),
             _proj(32, h, r, dtype, nf4)]
    x = torch.randn(3, 5, h, device=DEVICE, dtype=dtype)
    dys = [torch.randn(3, 5, p[0].out_features, device=DEVICE, dtype=dtype) for p in projs]
    x1 = leaf(x)
    outs = lora_qkv(x1, *[p[0] for p in projs], *[t for p in projs for t in p[1:3]])
    torch.autograd.backward(outs, dys)
    x2 = leaf(x.float())
    ras = [_ref_args(*p) for p in projs]
    refs = [lora_linear_reference(x2, *ra) for ra in ras]
    torch.autograd.backward(refs, [d.float() for d in dys])
    for name, o, rf in zip("qkv", outs, refs):
        assert_close(o, rf, atol, rtol, name)
    assert_close(x1.grad, x2.grad, atol, rtol, "dx")
    for name, p, ra in zip("qkv", projs, ras):
        if p[1] is not None:
            assert_close(p[1].grad, ra[2].grad, atol, rtol, f"dA_{name}")
            assert_close(p[2].grad, ra[3].grad, atol, rtol, f"dB_{name}")


@pytest.mark.parametrize("dtype,atol,rtol", CASES)
@pytest.mark.parametrize("nf4", [False, True], ids=["16bit", "nf4"])
@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("h,i,r", [(64, 192, 4), gpu_param(4096, 14336, 16)])
def test_lora_mlp(dtype, atol, rtol, nf4, act, h, i, r):
    gate, up, down = _proj(i, h, r, dtype, nf4), _proj(i, h, r, dtype, nf4), _proj(h, i, r, dtype, nf4)
    rows = 7 if h < 1024 else 1024
    x = torch.randn(2, rows, h, device=DEVICE, dtype=dtype)
    dy = torch.randn(2, rows, h, device=DEVICE, dtype=dtype)
    x1 = leaf(x)
    out = lora_mlp(x1, gate[0], up[0], down[0], act, *gate[1:3], *up[1:3], *down[1:3])
    out.backward(dy)
    x2 = leaf(x.float())
    ras = [_ref_args(*p) for p in (gate, up, down)]
    ref = lora_mlp_reference(x2, *ras, act=act)
    ref.backward(dy.float())
    n = 2 * rows
    _check(out, ref, atol, rtol, "out", n)
    _check(x1.grad, x2.grad, atol, rtol, "dx", n)
    for name, p, ra in zip(("gate", "up", "down"), (gate, up, down), ras):
        _check(p[1].grad, ra[2].grad, atol, rtol, f"dA_{name}", n)
        _check(p[2].grad, ra[3].grad, atol, rtol, f"dB_{name}", n)


def test_lora_mlp_without_input_grad_and_backward_twice_refused():
    gate, up, down = _proj(96, 64, 4, torch.float32), _proj(96, 64, 4, torch.float32), _proj(64, 96, 4, torch.float32)
    x = torch.randn(5, 64, device=DEVICE)  # no grad: the first layer above frozen embeddings
    out = lora_mlp(x, gate[0], up[0], down[0], "silu", *gate[1:3], *up[1:3], *down[1:3])
    out.sum().backward(retain_graph=True)
    assert gate[1].grad is not None and down[2].grad is not None
    with pytest.raises(RuntimeError, match="backward twice"):
        out.sum().backward()


@pytest.mark.parametrize("nf4", [False, True], ids=["16bit", "nf4"])
def test_lora_mlp_ungrouped_and_odd_widths(nf4):
    """Memory mode runs gate and up as two GEMMs (group_nf4 off); widths that are not a multiple
    of the NF4 block (80) dequantize through the fallback. Same results as the reference."""
    h, i, r = 80, 144, 4
    gate, up, down = _proj(i, h, r, torch.float32, nf4), _proj(i, h, r, torch.float32, nf4, bias=True), \
        _proj(h, i, r, torch.float32, nf4, lora=False)
    x = torch.randn(9, h, device=DEVICE)
    dy = torch.randn(9, h, device=DEVICE)
    x1 = leaf(x)
    out = lora_mlp(x1, gate[0], up[0], down[0], "silu", *gate[1:3], *up[1:3], *down[1:3], group_nf4=False)
    out.backward(dy)
    x2 = leaf(x.clone())
    ras = [_ref_args(*p) for p in (gate, up, down)]
    ref = lora_mlp_reference(x2, *ras)
    ref.backward(dy)
    assert_close(out, ref, 1e-4, 1e-4, "out")
    assert_close(x1.grad, x2.grad, 1e-4, 1e-4, "dx")
    for name, p, ra in zip(("gate", "up"), (gate, up), ras):
        assert_close(p[1].grad, ra[2].grad, 1e-4, 1e-4, f"dA_{name}")
        assert_close(p[2].grad, ra[3].grad, 1e-4, 1e-4, f"dB_{name}")


def test_weight_cache_serves_the_same_results_after_the_adapters_change():
    """Speed mode keeps dequantized weights across steps; only the adapter columns are rewritten.
    Two steps with different adapter values must both match the reference (no stale B or A)."""
    pytest.importorskip("bitsandbytes")
    from tunesmith.kernels.lora import WeightCache

    cache = WeightCache()
    h, i, r = 64, 192, 4
    gate, up, down = _proj(i, h, r, torch.float32, True), _proj(i, h, r, torch.float32, True), \
        _proj(h, i, r, torch.float32, True)
    qkv = [_proj(64, h, r, torch.float32, True), _proj(32, h, r, torch.float32, True, lora=False),
           _proj(32, h, r, torch.float32, True)]
    o = _proj(h, 64, r, torch.float32, True)
    for step in range(2):
        x = torch.randn(7, h, device=DEVICE)
        x1 = leaf(x)
        q, k, v = lora_qkv(x1, *[p[0] for p in qkv], *[t for p in qkv for t in p[1:3]], cache=cache)
        y = lora_linear(q, o[0], *o[1:3], cache=cache)
        out = lora_mlp(x1 + y, gate[0], up[0], down[0], "silu", *gate[1:3], *up[1:3], *down[1:3], cache=cache)
        (out.square().sum() + k.sum() + v.square().sum()).backward()
        x2 = leaf(x.clone())
        ra = {n: _ref_args(*p) for n, p in zip(("q", "k", "v", "o", "gate", "up", "down"), (*qkv, o, gate, up, down))}
        qr, kr, vr = [lora_linear_reference(x2, *ra[n]) for n in "qkv"]
        yr = lora_linear_reference(qr, *ra["o"])
        ref = lora_mlp_reference(x2 + yr, ra["gate"], ra["up"], ra["down"])
        (ref.square().sum() + kr.sum() + vr.square().sum()).backward()
        assert_close(out, ref, 1e-4, 1e-4, f"out step {step}")
        assert_close(x1.grad, x2.grad, 1e-3, 1e-3, f"dx step {step}")
        for n, p in zip(("q", "o", "gate", "down"), (qkv[0], o, gate, down)):
            assert_close(p[1].grad, ra[n][2].grad, 1e-3, 1e-3, f"dA_{n} step {step}")
            assert_close(p[2].grad, ra[n][3].grad, 1e-3, 1e-3, f"dB_{n} step {step}")
        with torch.no_grad():  # an optimizer step: new adapter values, same frozen weights
            for p in (gate, up, down, qkv[0], qkv[2], o):
                p[1].add_(torch.randn_like(p[1]) * 0.1)
                p[2].add_(torch.randn_like(p[2]) * 0.1)
                p[1].grad = p[2].grad = None
    assert cache.nbytes, "the cache was used"


def test_weight_cache_serves_a_reference_pass_from_the_same_buffers():
    """DPO/KTO's reference pass runs the same NF4 layers with the adapters switched off (A, B None):
    it must read the cached training buffers' base block (right values, no second dequantized copy)."""
    pytest.importorskip("bitsandbytes")
    from tunesmith.kernels.lora import WeightCache

    cache = WeightCache()
    h, i, r = 64, 192, 4
    gate, up, down = [_proj(o, n, r, torch.float32, True) for o, n in ((i, h), (i, h), (h, i))]
    qkv = [_proj(64, h, r, torch.float32, True), _proj(32, h, r, torch.float32, True),
           _proj(32, h, r, torch.float32, True)]
    x = torch.randn(7, h, device=DEVICE)
    q, k, v = lora_qkv(leaf(x), *[p[0] for p in qkv], *[t for p in qkv for t in p[1:3]], cache=cache)
    out = lora_mlp(leaf(x), gate[0], up[0], down[0], "silu", *gate[1:3], *up[1:3], *down[1:3], cache=cache)
    (out.sum() + q.sum() + k.sum() + v.sum()).backward()
    kept = cache.nbytes
    with torch.no_grad():  # the reference: base weights only
        qb, kb, vb = lora_qkv(x, *[p[0] for p in qkv], *[None] * 6, cache=cache)
        ob = lora_mlp(x, gate[0], up[0], down[0], "silu", *[None] * 6, cache=cache)
    assert cache.nbytes == kept, "the reference pass made a second copy of the weights"
    base = lambda p: (p[3], None, None, None, p[0].scale)  # noqa: E731
    for got, p in zip((qb, kb, vb), qkv):
        assert_close(got, lora_linear_reference(x, *base(p)), 1e-4, 1e-4, "qkv without adapters")
    assert_close(ob, lora_mlp_reference(x, base(gate), base(up), base(down)), 1e-4, 1e-4, "mlp without adapters")


def test_lora_qkv_and_mlp_with_different_scales_per_projection():
    """Adapters sharing an input usually share alpha/r, and their xa come from one GEMM; when the
    scales differ each projection gets its own. Both paths match the reference."""
    h, r = 64, 4
    qkv = [_proj(64, h, r, torch.float32, True), _proj(32, h, r, torch.float32, True),
           _proj(32, h, r, torch.float32, True)]
    qkv[1][0].scale = 0.25
    gate, up, down = _proj(96, h, r, torch.float32), _proj(96, h, r, torch.float32), _proj(h, 96, r, torch.float32)
    up[0].scale = 2.0
    x = torch.randn(6, h, device=DEVICE)
    x1, x2 = leaf(x), leaf(x.clone())
    outs = lora_qkv(x1, *[p[0] for p in qkv], *[t for p in qkv for t in p[1:3]])
    y = lora_mlp(x1, gate[0], up[0], down[0], "silu", *gate[1:3], *up[1:3], *down[1:3])
    (sum(o.square().sum() for o in outs) + y.square().sum()).backward()
    ra = [_ref_args(*p) for p in (*qkv, gate, up, down)]
    refs = [lora_linear_reference(x2, *a) for a in ra[:3]]
    yr = lora_mlp_reference(x2, *ra[3:])
    (sum(o.square().sum() for o in refs) + yr.square().sum()).backward()
    for o, rf in zip(outs, refs):
        assert_close(o, rf, 1e-4, 1e-4, "qkv out")
    assert_close(y, yr, 1e-4, 1e-4, "mlp out")
    assert_close(x1.grad, x2.grad, 1e-3, 1e-3, "dx")
    for p, a in zip((*qkv, gate, up, down), ra):
        assert_close(p[1].grad, a[2].grad, 1e-3, 1e-3, "dA")
        assert_close(p[2].grad, a[3].grad, 1e-3, 1e-3, "dB")


def test_stacked_a_views_one_buffer_and_copies_separate_tensors():
    """Separate parameters that happen to sit back to back in memory are not one matrix."""
    from tunesmith.kernels.lora import cast_adapters, stacked_a

    buf = torch.randn(2 * 4 * 8)
    a1, a2 = buf[:32].view(4, 8), buf[32:].view(4, 8)
    assert stacked_a([a1, a2]).data_ptr() == buf.data_ptr()
    sep = [torch.randn(4, 8), torch.randn(4, 8)]
    stacked = stacked_a(sep)
    assert torch.equal(stacked, torch.cat(sep))
    casts = cast_adapters([(sep[0], torch.randn(16, 4)), (sep[1], torch.randn(16, 4))], torch.bfloat16)
    assert torch.equal(stacked_a([c[0] for c in casts]), torch.cat(sep).to(torch.bfloat16))
