"""Stream a planned model into one or more GGUF files (F32, F16, BF16, Q8_0) in a single pass.

Each source tensor is read once from its safetensors shard, transformed (Q/K permutation, Gemma
norm offset), converted for every requested output and written; only one tensor is in memory at a
time, so memory stays near the size of the largest tensor (the embedding) whatever the model size.
Headers are written first from shapes alone (`add_tensor_info`), data afterwards in the same order.

Types: vectors (norms, biases, rope_freqs) stay F32, as llama.cpp expects. Matrices take the
requested type; Q8_0 needs rows that are a multiple of 32 values, others fall back to F16 (what
llama.cpp's own converter does) and are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .arch import ModelPlan, TensorPlan
from .vocab import GgufVocab

DIRECT_QUANTS = ("f32", "f16", "bf16", "q8_0")


def _qtypes():
    import gguf

    T = gguf.GGMLQuantizationType
    F = gguf.LlamaFileType
    return {
        "f32": (T.F32, F.ALL_F32),
        "f16": (T.F16, F.MOSTLY_F16),
        "bf16": (T.BF16, F.MOSTLY_BF16),
        "q8_0": (T.Q8_0, F.MOSTLY_Q8_0),
    }


@dataclass
class DirectOutput:
    quant: str
    path: Path  # the temporary path being written
    fallback: list[str] = field(default_factory=list)  # tensors stored as F16 instead of Q8_0


def tensor_type(quant: str, t: TensorPlan):
    """(GGML type, fell back?) for tensor t in a `quant` file."""
    import gguf

    T = gguf.GGMLQuantizationType
    if not t.is_matrix:
        return T.F32, False
    qtype = _qtypes()[quant][0]
    if qtype == T.Q8_0 and t.shape[-1] % 32 != 0:
        return T.F16, True
    return qtype, False


def _nbytes(qtype, shape: tuple[int, ...]) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape))
    return n // block * size


def _convert(data: torch.Tensor, qtype) -> np.ndarray:
    import gguf

    T = gguf.GGMLQuantizationType
    if qtype == T.F32:
        return data.to(torch.float32).numpy()
    if qtype == T.F16:
        return data.to(torch.float16).numpy()
    if qtype == T.BF16:
        return data.to(torch.bfloat16).view(torch.int16).numpy()
    if qtype == T.Q8_0:
        return gguf.quants.quantize(data.to(torch.float32).numpy(), T.Q8_0)
    raise AssertionError(qtype)


def _write_tensor(writer, array: np.ndarray) -> None:
    """One tensor's bytes; a seam for tests that simulate a full disk."""
    writer.write_tensor_data(array)


def write_direct(
    plan: ModelPlan,
    vocab: GgufVocab,
    outputs: list[DirectOutput],
    name: str,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Write every output in `outputs` (to its .path) in one pass over the source tensors."""
    import gguf

    writers = []
    try:
        for out in outputs:
            w = gguf.GGUFWriter(out.path, plan.gguf_arch)
            writers.append(w)
            w.add_type("model")
            w.add_name(name)
            plan.write_hparams(w)
            w.add_file_type(_qtypes()[out.quant][1])
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
            vocab.write_to(w)
            for t in plan.tensors:
                qtype, fell_back = tensor_type(out.quant, t)
                if fell_back:
                    out.fallback.append(t.gguf_name)
                # numpy dtype only tells add_tensor_info "not raw bytes": the shape stays logical.
                w.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float32), _nbytes(qtype, t.shape), raw_dtype=qtype)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()

        total = sum(t.numel for t in plan.tensors) or 1
        done = 0
        for t in plan.tensors:
            data = t.load()
            for out, w in zip(outputs, writers):
                qtype, _ = tensor_type(out.quant, t)
                _write_tensor(w, _convert(data, qtype))
            del data
            done += t.numel
            if progress is not None:
                progress(done / total)
        for w in writers:
            assert w.fout is not None
            for f in w.fout:
                f.flush()
                os.fsync(f.fileno())
    finally:
        for w in writers:
            w.close()
