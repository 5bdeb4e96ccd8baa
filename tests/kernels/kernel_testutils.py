"""Shared by the kernel tests: device, dtype tolerance cases, comparisons."""
import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"


def gpu_param(*values, id=None):
    """A parametrize case that runs only with CUDA (bf16/fp16 and large shapes)."""
    return pytest.param(*values, id=id, marks=[pytest.mark.gpu, pytest.mark.skipif(not ON_GPU, reason="needs CUDA")])


# (dtype, atol, rtol): fp32 on CPU; 16-bit cases are real on the GPU. bf16 also
# runs under the interpreter (it is emulated with numpy), so it is kept on CPU
# for the kernels where the cast rules matter.
FP32 = (torch.float32, 1e-5, 1e-5)
BF16 = (torch.bfloat16, 2e-2, 2e-2)
FP16 = (torch.float16, 2e-3, 2e-3)


def assert_close(actual, expected, atol, rtol, name=""):
    assert actual is not None, f"{name}: missing"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: NaN in output (an element was not written?)"
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def assert_close_norm(actual, expected, rel: float, name=""):
    """For long 16-bit reductions (GEMMs over thousands of rows), where single elements near
    zero carry large relative error: compare the error's norm to the reference's norm."""
    assert actual is not None and actual.shape == expected.shape, name
    assert not torch.isnan(actual).any(), f"{name}: NaN in output"
    err = (actual.float() - expected.float()).norm() / expected.float().norm().clamp_min(1e-12)
    assert err <= rel, f"{name}: relative error norm {float(err):.3e} > {rel}"


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)
