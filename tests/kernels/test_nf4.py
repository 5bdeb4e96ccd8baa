import pytest
import torch
from kernel_testutils import DEVICE, gpu_param

from tunesmith.kernels.nf4 import dequantize_nf4, dequantize_nf4_reference

bnb = pytest.importorskip("bitsandbytes")
F = pytest.importorskip("bitsandbytes.functional")


def _quantize(shape, dtype, nested):
    w = (torch.randn(shape, device=DEVICE) * 0.02).to(dtype)
    w.view(-1)[:7] *= 50  # a few outliers, so blocks have very different absmax
    packed, qs = F.quantize_4bit(w, blocksize=64, compress_statistics=nested, quant_type="nf4")
    return packed, qs


@pytest.mark.parametrize("shape", [(64, 64), (96, 192), (40, 1000), (3, 64), gpu_param((4096, 14336))])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("nested", [True, False], ids=["double_quant", "single"])
def test_nf4_dequant_bit_identical_to_bitsandbytes(shape, dtype, nested):
    packed, qs = _quantize(shape, dtype, nested)
    ours = dequantize_nf4(packed, qs)
    theirs = F.dequantize_4bit(packed, qs)
    assert ours.dtype == theirs.dtype == dtype and ours.shape == theirs.shape
    assert torch.equal(ours.view(torch.uint8 if dtype != torch.float32 else torch.int32).view(-1).float(),
                       theirs.view(torch.uint8 if dtype != torch.float32 else torch.int32).view(-1).float()), \
        f"{(ours.float() != theirs.float()).sum()} elements differ"
    assert torch.equal(dequantize_nf4_reference(packed, qs), theirs)


def test_nf4_scratch_buffer_is_reused():
    packed, qs = _quantize((64, 128), torch.bfloat16, True)
    a = dequantize_nf4(packed, qs, out="scratch")
    b = dequantize_nf4(packed, qs, out="scratch")
    assert a.data_ptr() == b.data_ptr()
    assert torch.equal(b, F.dequantize_4bit(packed, qs))


def test_nf4_from_a_bnb_linear4bit_layer():
    """The weight of a real bnb.nn.Linear4bit (what PEFT wraps under QLoRA)."""
    lin = torch.nn.Linear(128, 48, bias=False, dtype=torch.bfloat16)
    q = bnb.nn.Linear4bit(128, 48, bias=False, compute_dtype=torch.bfloat16, compress_statistics=True,
                          quant_type="nf4", quant_storage=torch.uint8)
    q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4",
                                 blocksize=64)
    q = q.to(DEVICE)
    if DEVICE == "cpu":
        q.weight = q.weight._quantize(DEVICE) if not q.weight.bnb_quantized else q.weight
    w = q.weight
    theirs = F.dequantize_4bit(w.data, w.quant_state)
    assert torch.equal(dequantize_nf4(w.data, w.quant_state), theirs)


def test_nf4_rows_not_a_multiple_of_the_block():
    """(96, 80): blocks of 64 straddle rows. bitsandbytes quantizes in flat blocks of 64 and its
    CUDA and default backends dequantize the same way; its AVX CPU kernel (0.50) blocks per row
    and disagrees with its own quantizer here. We follow the quantizer (and CUDA)."""
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute

    packed, qs = _quantize((96, 80), torch.bfloat16, True)
    absmax = F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
    flat = _dequantize_4bit_compute(packed.view(-1), absmax.float(), qs.code, 64, qs.shape, qs.dtype)
    assert torch.equal(dequantize_nf4(packed, qs), flat)


def test_nf4_rows_into_a_wider_buffer_leave_the_adapter_columns_alone():
    """The LoRA-fused ops dequantize q/k/v (or gate/up) stacked by rows into a buffer with extra
    adapter columns: each weight lands at its rows, row stride = buffer width, extras untouched."""
    from tunesmith.kernels.nf4 import dequantize_nf4_rows

    ws = [_quantize(shape, torch.bfloat16, True) for shape in [(64, 128), (32, 128)]]
    buf = torch.full((100, 128 + 8), 7.0, dtype=torch.bfloat16, device=DEVICE)
    assert dequantize_nf4_rows(ws, buf)
    single = _quantize((64, 128), torch.bfloat16, False)  # not nested: cannot share a launch with nested ones
    assert not dequantize_nf4_rows([ws[0], single], buf[:, :128].clone())
    assert torch.equal(buf[:64, :128], F.dequantize_4bit(*ws[0]))
    assert torch.equal(buf[64:96, :128], F.dequantize_4bit(*ws[1]))
    assert (buf[:, 128:] == 7).all() and (buf[96:] == 7).all()
    straddling = _quantize((8, 80), torch.bfloat16, True)  # blocks of 64 cross rows of 80
    assert not dequantize_nf4_rows([straddling], torch.zeros(8, 88, dtype=torch.bfloat16, device=DEVICE))
