import pytest
import torch
from kernel_testutils import BF16, DEVICE, FP16, FP32, assert_close, gpu_param, leaf

from tunesmith.kernels.swiglu import glu, glu_backward, glu_reference

# The interpreter evaluates sigmoid(-80) as 1/(1+exp(80)) = 1/inf = 0: right, but numpy warns.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")


@pytest.mark.parametrize("shape", [(3, 64), (2, 7, 90), (1, 1000), gpu_param((2, 2048, 8192))])
@pytest.mark.parametrize("dtype,atol,rtol", [FP32, BF16, gpu_param(*FP16)])
@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_glu_matches_reference(shape, dtype, atol, rtol, act):
    g = torch.randn(shape, device=DEVICE, dtype=dtype) * 3
    u = torch.randn(shape, device=DEVICE, dtype=dtype)
    dh = torch.randn(shape, device=DEVICE, dtype=dtype)
    g1, u1 = leaf(g), leaf(u)
    h1 = glu(g1, u1, act)
    h1.backward(dh)
    g2, u2 = leaf(g.float()), leaf(u.float())
    h2 = glu_reference(g2, u2, act)
    h2.backward(dh.float())
    assert h1.dtype == dtype
    assert_close(h1, h2, atol, rtol, "h")
    assert_close(g1.grad, g2.grad, atol, rtol, "dg")
    assert_close(u1.grad, u2.grad, atol, rtol, "du")


@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_glu_backward_inplace_and_recomputed_h(act):
    g = torch.randn(5, 77, device=DEVICE) * 4
    u = torch.randn(5, 77, device=DEVICE)
    dh = torch.randn(5, 77, device=DEVICE)
    ref_dg, ref_du, _ = glu_backward(dh, g.clone(), u.clone(), act)
    gb, ub = g.clone(), u.clone()
    dg, du, h = glu_backward(dh, gb, ub, act, want_h=True, inplace=True)
    assert dg.data_ptr() == gb.data_ptr() and du.data_ptr() == ub.data_ptr()
    assert_close(h, glu_reference(g, u, act), 1e-5, 1e-5, "h")
    assert_close(dg, ref_dg, 0, 0, "dg")
    assert_close(du, ref_du, 0, 0, "du")


def test_glu_backward_writes_h_over_dh():
    """The MLP backward keeps one activation-sized buffer fewer by writing h over dh."""
    g = torch.randn(3, 1100, device=DEVICE) * 4  # two column tiles per row
    u = torch.randn(3, 1100, device=DEVICE)
    dh = torch.randn(3, 1100, device=DEVICE)
    ref_dg, ref_du, _ = glu_backward(dh, g.clone(), u.clone())
    buf = dh.clone()
    dg, du, h = glu_backward(buf, g.clone(), u.clone(), want_h=True, inplace=True, h_out=buf)
    assert h.data_ptr() == buf.data_ptr()
    assert_close(h, glu_reference(g, u, "silu"), 1e-5, 1e-5, "h")
    assert_close(dg, ref_dg, 0, 0, "dg")
    assert_close(du, ref_du, 0, 0, "du")


def test_gelu_tanh_extremes_are_finite():
    g = torch.tensor([-80.0, -20.0, -1e-4, 0.0, 1e-4, 20.0, 80.0], device=DEVICE)
    u = torch.ones_like(g)
    assert_close(glu(g, u, "gelu_tanh"), glu_reference(g, u, "gelu_tanh"), 1e-6, 1e-5, "h")
