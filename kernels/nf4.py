"""NF4 dequantization, bit-identical to bitsandbytes (blocksize 64, double-quantized absmax).

bitsandbytes stores a 4-bit weight W (out, in) as:
  - A: uint8, two codes per byte, the first element in the high nibble;
  - absmax: one scale per block of `blocksize` (64) consecutive elements.
    With double quantization ("nested") absmax is itself uint8 codes into an
    8-bit dynamic map `code2`, with one fp32 scale per 256 absmax values
    (`absmax2`) and an fp32 `offset` (the mean that was subtracted);
  - code: the 16 NF4 values (Dettmers et al. 2023, QLoRA, appendix E).

Dequantization, element i, all in fp32 and rounded once to the output dtype:

    s_j  = code2[absmax[j]] * absmax2[j // 256] + offset      (nested)
    s_j  = absmax[j]                                           (not nested)
    W_i  = code[nibble(A, i)] * s_{i // 64}

bitsandbytes computes s_j with a multiply, rounds it to fp32, then adds the
offset in a second op. To be bit-identical the kernel must do the same: two
roundings, not one fused multiply-add, so on the GPU it is compiled with
`enable_fp_fusion=False` (Triton otherwise contracts a*b+c into an FMA).

`dequantize_nf4(weight)` writes into a reused per-device scratch buffer by
default (`out="scratch"`), so a layer's 16-bit weight exists only for the
GEMM that needs it; the next dequantization overwrites it. Callers must use
the result before dequantizing again (same CUDA stream: ordering is free).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .utils import empty, interpreting


@triton.jit
def _dequant_tile(OUT, A, ABSMAX, CODE, ABSMAX2, CODE2, OFFSET, n, tile, bpr, ld,
                  BS: tl.constexpr, BLOCKSIZE2: tl.constexpr, NESTED: tl.constexpr, FLAT: tl.constexpr,
                  ROWS: tl.constexpr, INTERP: tl.constexpr):
    """ROWS quantization blocks of BS elements: one scale per block (computed once, not per
    element), BS/2 packed bytes per block split into high and low nibbles and interleaved.
    FLAT: the output is the contiguous weight; else block b lands at row b // bpr, column
    (b % bpr) * BS of a matrix with row stride ld (the weight inside a wider buffer)."""
    blk = tile.to(tl.int64) * ROWS + tl.arange(0, ROWS)
    n_blocks = tl.cdiv(n, BS)
    bmask = blk < n_blocks
    if NESTED:
        a8 = tl.load(ABSMAX + blk, mask=bmask, other=0).to(tl.int32)
        s = tl.load(CODE2 + a8, mask=bmask, other=0.0) * tl.load(ABSMAX2 + blk // BLOCKSIZE2, mask=bmask, other=0.0)
        s = s + tl.load(OFFSET)
    else:
        s = tl.load(ABSMAX + blk, mask=bmask, other=0.0)
    HALF: tl.constexpr = BS // 2
    byte_offs = blk[:, None] * HALF + tl.arange(0, HALF)[None, :]
    bmask2 = bmask[:, None] & (byte_offs * 2 < n)
    byte = tl.load(A + byte_offs, mask=bmask2, other=0).to(tl.int32)
    hi = tl.load(CODE + (byte >> 4))
    lo = tl.load(CODE + (byte & 15))
    w = tl.interleave(hi, lo) * s[:, None]  # element 2j is the high nibble of byte j
    if INTERP:
        if OUT.dtype.element_ty == tl.bfloat16:
            # the interpreter truncates fp32 -> bf16; round to nearest even by hand as compiled Triton does
            bits = w.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            w = bits.to(tl.float32, bitcast=True)
    j = tl.arange(0, BS)[None, :]
    elem = blk[:, None] * BS + j
    if FLAT:
        dst = elem
    else:
        dst = (blk // bpr * ld + blk % bpr * BS)[:, None] + j
    tl.store(OUT + dst, w.to(OUT.dtype.element_ty), mask=bmask[:, None] & (elem < n))


@triton.jit
def _nf4_dequant3_kernel(
    OUT, CODE, CODE2, bpr, ld,
    A0, M0, S0, O0, n0, r0, A1, M1, S1, O1, n1, r1, A2, M2, S2, O2, n2, r2,
    BS: tl.constexpr, BLOCKSIZE2: tl.constexpr, NESTED: tl.constexpr, FLAT: tl.constexpr, ROWS: tl.constexpr,
    INTERP: tl.constexpr,
):
    """Up to three weights (n1, n2 may be 0) stacked by rows into one buffer, one launch: the
    projections that share an input (q/k/v, gate/up). Weight k starts at row r_k; each program
    belongs to one weight."""
    pid = tl.program_id(0)
    t0 = tl.cdiv(tl.cdiv(n0, BS), ROWS)
    t1 = tl.cdiv(tl.cdiv(n1, BS), ROWS)
    if pid < t0:
        _dequant_tile(OUT + r0.to(tl.int64) * ld, A0, M0, CODE, S0, CODE2, O0, n0, pid, bpr, ld,
                      BS, BLOCKSIZE2, NESTED, FLAT, ROWS, INTERP)
    elif pid < t0 + t1:
        _dequant_tile(OUT + r1.to(tl.int64) * ld, A1, M1, CODE, S1, CODE2, O1, n1, pid - t0, bpr, ld,
                      BS, BLOCKSIZE2, NESTED, FLAT, ROWS, INTERP)
    else:
        _dequant_tile(OUT + r2.to(tl.int64) * ld, A2, M2, CODE, S2, CODE2, O2, n2, pid - t0 - t1, bpr, ld,
                      BS, BLOCKSIZE2, NESTED, FLAT, ROWS, INTERP)


_SCRATCH: dict[tuple, torch.Tensor] = {}


def scratch(numel: int, dtype: torch.dtype, device: torch.device, slot: int = 0) -> torch.Tensor:
    """A flat buffer of at least numel elements, reused across calls with the same (device, dtype, slot)."""
    key = (device, dtype, slot)
    buf = _SCRATCH.get(key)
    if buf is None or buf.numel() < numel:
        buf = empty((numel,), dtype, device)
        _SCRATCH[key] = buf
    return buf[:numel]


def scratch_identity() -> tuple:
    """Which scratch buffers exist now, by address: a CUDA graph that read them is stale once this changes."""
    return tuple((k, v.data_ptr()) for k, v in _SCRATCH.items())


def release_scratch() -> None:
    """Drop the reused dequantization buffers (they otherwise live as long as the process)."""
    _SCRATCH.clear()


def quant_parts(quant_state) -> dict:
    """The tensors and sizes the kernel needs from a bitsandbytes QuantState."""
    assert quant_state.quant_type == "nf4", f"only nf4 is supported, not {quant_state.quant_type}"
    nested = bool(getattr(quant_state, "nested", False))
    parts = dict(absmax=quant_state.absmax, code=quant_state.code, blocksize=quant_state.blocksize,
                 shape=tuple(quant_state.shape), dtype=quant_state.dtype, nested=nested)
    if nested:
        st2 = quant_state.state2
        off = quant_state.offset
        parts.update(absmax2=st2.absmax, code2=st2.code, blocksize2=st2.blocksize,
                     offset=off if torch.is_tensor(off) else torch.tensor(float(off)))
    return parts


def _prepared(quant_state, device: torch.device) -> tuple:
    """Launch arguments derived from a QuantState, computed once per (state, device) and kept on it:
    this runs before every GEMM of every LoRA projection, so its Python cost matters."""
    cache = getattr(quant_state, "_tunesmith_nf4", None)
    if cache is not None and cache[0] == device:
        return cache[1]
    p = quant_parts(quant_state)
    n = 1
    for d in p["shape"]:
        n *= d
    code = p["code"].to(device=device, dtype=torch.float32)
    if p["nested"]:
        absmax2 = p["absmax2"].to(device)
        code2 = p["code2"].to(device=device, dtype=torch.float32)
        offset = p["offset"].to(device=device, dtype=torch.float32).reshape(1)
        bs2 = p["blocksize2"]
    else:
        absmax2 = code2 = offset = code  # unused pointers
        bs2 = 1
    # the code tables' values, read once here, let dequantize_nf4_rows check that weights can
    # share a launch without a device sync per call
    tables = (tuple(code.tolist()), tuple(code2.tolist()) if p["nested"] else None)
    args = (p["shape"], p["dtype"], n, p["absmax"], code, absmax2, code2, offset, p["blocksize"], bs2, p["nested"],
            tables)
    try:
        quant_state._tunesmith_nf4 = (device, args)
    except AttributeError:  # a state object that takes no attributes: recompute each time
        pass
    return args


def dequantize_nf4_rows(weights: list, out: torch.Tensor) -> bool:
    """Dequantize 1 to 3 NF4 weights [(packed, quant_state), ...] of one input width, stacked by
    rows, into out[:sum(rows), :in] with ONE launch. out is 2-D with unit column stride and may
    be wider than the weights (the LoRA-fused ops keep adapter columns beside them) or taller.
    Returns False, writing nothing, when the weights cannot share a launch (different block
    sizes, code tables or nesting) or the layout needs blocks that straddle rows."""
    if not 1 <= len(weights) <= 3 or out.dim() != 2 or out.stride(1) != 1:
        return False
    device = out.device
    preps = [_prepared(qs, device) for _, qs in weights]
    first = preps[0]
    if any(p[8:] != first[8:] for p in preps[1:]):  # same block sizes, nesting and code-table values
        return False
    cols = first[0][1] if len(first[0]) == 2 else first[2]
    if any((p[0][1] if len(p[0]) == 2 else p[2]) != cols for p in preps) or any(p[1] != first[1] for p in preps):
        return False
    ld = out.stride(0)
    bs = first[8]
    flat = ld == cols or out.shape[0] == 1
    if not flat and cols % bs:
        return False
    rows = [p[2] // cols for p in preps]
    if sum(rows) > out.shape[0] or cols > out.shape[1]:
        return False
    args, r = [], 0
    for (packed, _), p, nr in zip(weights, preps, rows):
        if packed.dtype != torch.uint8:  # quant_storage other than uint8: same bytes
            packed = packed.view(torch.uint8)
        args += [packed, p[3], p[5], p[7], p[2], r]
        r += nr
    while len(args) < 18:  # unused slots: zero elements
        args += [weights[0][0].view(torch.uint8), preps[0][3], preps[0][5], preps[0][7], 0, 0]
    _, _, _, _, code, _, code2, _, bs, bs2, nested, _ = first
    rows_per_tile = max(1, 2048 // bs)
    grid = (sum(triton.cdiv(triton.cdiv(p[2], bs), rows_per_tile) for p in preps),)
    if grid[0]:
        _nf4_dequant3_kernel[grid](out, code, code2, max(cols // bs, 1), ld, *args, BS=bs, BLOCKSIZE2=bs2,
                                   NESTED=nested, FLAT=flat, ROWS=rows_per_tile, INTERP=interpreting(),
                                   num_warps=4, **_LAUNCH_KW)
    return True


def dequantize_nf4(packed: torch.Tensor, quant_state, out=None, dtype: torch.dtype | None = None,
                   slot: int = 0) -> torch.Tensor:
    """The 16-bit weight (out_features, in_features) of a bitsandbytes NF4 weight.

    out: None (fresh tensor), "scratch" (reused buffer, see module doc) or a tensor.
    """
    device = packed.device
    shape, qdtype, n = _prepared(quant_state, device)[:3]
    dtype = dtype or qdtype
    if out is None:
        out = empty(shape, dtype, device)
    elif isinstance(out, str):
        out = scratch(n, dtype, device, slot).view(shape)
    else:
        assert out.is_contiguous() and out.numel() == n and out.dtype == dtype
    if n:
        ok = dequantize_nf4_rows([(packed, quant_state)], out.view(-1, shape[-1]) if len(shape) == 2 else out.view(1, -1))
        assert ok, "a single NF4 weight always dequantizes"
    return out


# bit-identity needs two roundings, not an FMA (module doc); the interpreter has no such option
_LAUNCH_KW = {} if interpreting() else {"enable_fp_fusion": False}


def dequantize_nf4_reference(packed: torch.Tensor, quant_state, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Plain PyTorch, step for step as bitsandbytes' default backend."""
    p = quant_parts(quant_state)
    shape, dtype = p["shape"], dtype or p["dtype"]
    a = packed.view(torch.uint8).reshape(-1)
    n = 1
    for d in shape:
        n *= d
    codes = torch.empty(a.numel() * 2, dtype=torch.long, device=a.device)
    codes[0::2] = (a >> 4).long()
    codes[1::2] = (a & 15).long()
    vals = p["code"].float().to(a.device)[codes[:n]]
    if p["nested"]:
        absmax = p["code2"].float()[p["absmax"].long()]
        idx = torch.arange(absmax.numel(), device=a.device) // p["blocksize2"]
        absmax = absmax * p["absmax2"][idx]
        absmax = absmax + p["offset"].to(a.device)
    else:
        absmax = p["absmax"].float()
    scale = absmax[torch.arange(n, device=a.device) // p["blocksize"]]
    return (vals * scale).to(dtype).reshape(shape)


def is_nf4_weight(weight) -> bool:
    qs = getattr(weight, "quant_state", None)
    return qs is not None and getattr(qs, "quant_type", None) == "nf4"
