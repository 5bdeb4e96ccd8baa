"""K-quants and Q4_0 from an F16/BF16 GGUF with llama.cpp's quantizer (llama-cpp-python).

`llama_model_quantize` runs in a child process (`python .../quantize.py IN OUT TYPE THREADS`, run
as a file so the child does not import torch): it can be stopped (Ctrl-C, the studio's stop) without waiting for the C call, an
abort inside llama.cpp cannot take the studio down, and its log is captured for error messages.
Progress is the output size against the expected size.

Fallbacks: k-quants need rows that are a multiple of 256 values (Q4_0: 32). llama.cpp then picks
another type per tensor (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q3_K -> Q4_0; F16 if even that
does not fit). We read the types back from the written file and say which tensors fell back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as a file: keep this folder's modules (arch, writer, ...) off sys.path
    sys.path.pop(0)
from typing import Callable

from tunesmith.engine.errors import ExportError

# quant -> (llama_cpp ftype constant, block size of its main type, bits per weight for estimates)
LLAMA_QUANTS: dict[str, tuple[str, int, float]] = {
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", 256, 4.9),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", 256, 5.7),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", 256, 6.6),
    "q4_0": ("LLAMA_FTYPE_MOSTLY_Q4_0", 32, 4.6),
    "q3_k_m": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", 256, 3.9),
}


def _expected_bytes(src: Path, quant: str) -> int:
    # F16/BF16 input: 16 bits per weight
    return int(src.stat().st_size * LLAMA_QUANTS[quant][2] / 16)


def quantize_file(
    src: Path,
    dst: Path,
    quant: str,
    threads: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> None:
    """Quantize src (F16/BF16 GGUF) into dst. Raises ExportError with llama.cpp's last log lines."""
    # imported here: the child process (this file run as a script) must not import the gguf package (torch)
    from tunesmith.engine.gguf.llamacpp_setup import INSTALL_HINT, llama_cpp_available

    if not llama_cpp_available():
        raise ExportError(
            f"{quant.upper()} needs llama.cpp support (llama-cpp-python), which is not installed yet: {INSTALL_HINT} "
            "installs it. F32, F16, BF16 and Q8_0 export without it."
        )
    threads = threads or os.cpu_count() or 1
    expected = max(_expected_bytes(src, quant), 1)
    cmd = [sys.executable, str(Path(__file__).resolve()), str(src), str(dst), quant, str(threads)]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                time.sleep(0.2)
                if progress is not None and dst.exists():
                    progress(min(dst.stat().st_size / expected, 0.99))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        if "No space left" in text:
            raise OSError(28, f"No space left on device while writing {dst}")
        tail = "\n".join(line for line in text.strip().splitlines()[-6:])
        raise ExportError(f"llama.cpp could not quantize {src.name} to {quant.upper()} (exit {proc.returncode}):\n{tail}")
    if progress is not None:
        progress(1.0)


def fallback_note(path: Path, quant: str) -> str | None:
    """Which matrices of a quantized file did not fit the type's block size, and what they became."""
    import gguf

    block = LLAMA_QUANTS[quant][1] if quant in LLAMA_QUANTS else 32
    reader = gguf.GGUFReader(str(path))
    odd: dict[str, list[str]] = {}
    cols: set[int] = set()
    for t in reader.tensors:
        ne0 = int(t.shape[0])
        if len(t.shape) >= 2 and ne0 % block != 0:
            odd.setdefault(t.tensor_type.name, []).append(t.name)
            cols.add(ne0)
    if not odd:
        return None
    n = sum(len(v) for v in odd.values())
    became = "; ".join(f"{k}: {', '.join(v[:4])}{' ...' if len(v) > 4 else ''}" for k, v in sorted(odd.items()))
    return (
        f"{n} tensor(s) have rows of {', '.join(map(str, sorted(cols)))} values, not a multiple of {block} that "
        f"{quant.upper()} needs; llama.cpp stored them in a fallback type ({became})."
    )


def _main(argv: list[str]) -> int:
    import ctypes

    import llama_cpp

    src, dst, quant, threads = argv
    from llama_cpp._logger import set_verbose

    set_verbose(True)  # llama.cpp's log (errors, fallbacks) goes to stderr, which the parent keeps
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, LLAMA_QUANTS[quant][0])
    params.nthread = int(threads)
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    return int(rc)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
