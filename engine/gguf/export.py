"""Merged HF model folder -> GGUF files (+ Ollama Modelfiles), checked in llama.cpp.

    from tunesmith.engine.gguf import export_gguf
    results = export_gguf(Path("merged/"), Path("out/"), ["f16", "q8_0", "q4_k_m"])

Order of work:
1. plan: config.json + shard headers -> GGUF keys and tensors; tokenizer -> GGUF vocab. Unsupported
   architectures and unknown tokenizers stop here, before anything is written.
2. disk: the expected sizes must fit in the free space of out_dir.
3. one streaming pass writes every direct type (f32/f16/bf16/q8_0), plus an F16/BF16 source for
   llama.cpp's quantizer when none was asked for (deleted at the end).
4. tokenization check in llama.cpp (vocab only, seconds): different ids fail the export.
5. llama.cpp quantizes q4_k_m/q5_k_m/q6_k/q4_0/q3_k_m from the F16/BF16 file.
6. fidelity: every file against the HF model (or reference_model_dir: base + adapter).
7. a Modelfile next to every GGUF.

Every file is written as .<name>.partial in out_dir and renamed when complete; on any failure or
interruption the partial files go, so no half-written file is ever left under a final name.

Raises:
    ExportError: unsupported architecture, unknown tokenizer, unknown quant type, missing files,
        not enough disk space (checked first, and ENOSPC while writing), tokenization that differs
        in llama.cpp, llama.cpp failing to quantize or load a file.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from tunesmith.engine.errors import ExportError

from .arch import ModelPlan, plan_model
from .fidelity import Fidelity, Reference, check_fidelity, check_tokenization
from .modelfile import ollama_create_command, write_modelfile
from .llamacpp_setup import INSTALL_HINT, TYPICAL_TIME, llama_cpp_available
from .quantize import LLAMA_QUANTS, fallback_note, quantize_file
from .vocab import GgufVocab, build_vocab
from .writer import DIRECT_QUANTS, DirectOutput, tensor_type, write_direct, _nbytes

log = logging.getLogger(__name__)

QUANTS: tuple[str, ...] = DIRECT_QUANTS + tuple(LLAMA_QUANTS)

Progress = Callable[[float, str], None]


@dataclass
class GgufResult:
    path: Path
    quant: str
    size_bytes: int
    fallback: str | None  # which tensors did not fit the type and what they became; None = all fit
    fidelity: Fidelity | None  # None when check=False
    modelfile: Path | None = None
    ollama_command: str | None = None
    notes: list[str] = field(default_factory=list)


def _normalise_quants(quants: list[str]) -> list[str]:
    out: list[str] = []
    for q in quants:
        k = str(q).strip().lower().replace("-", "_")
        if k not in QUANTS:
            raise ExportError(f"Unknown GGUF type {q!r}. Choose from: {', '.join(QUANTS)}.")
        if k not in out:
            out.append(k)
    if not out:
        raise ExportError(f"No GGUF type chosen. Choose one or more of: {', '.join(QUANTS)}.")
    return out


def _file_name(base: str, quant: str) -> str:
    return f"{base}-{quant.upper()}.gguf"


def _partial(final: Path) -> Path:
    return final.with_name(f".{final.name}.partial")


def _estimate_bytes(plan: ModelPlan, quant: str) -> int:
    if quant in DIRECT_QUANTS:
        return sum(_nbytes(tensor_type(quant, t)[0], t.shape) for t in plan.tensors)
    return int(plan.n_params * LLAMA_QUANTS[quant][2] / 8)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _check_space(out_dir: Path, needed: int) -> None:
    free = shutil.disk_usage(out_dir).free
    margin = 64 * 2**20  # headers, vocab, filesystem slack
    if free < needed + margin:
        raise ExportError(
            f"Not enough disk space in {out_dir}: this export needs about {_gb(needed)}, {_gb(free)} is free. "
            "Free some space, choose another folder, or export fewer / smaller types."
        )


def _source_quant(plan: ModelPlan, wanted: list[str]) -> str:
    """The 16-bit type llama.cpp quantizes from: the checkpoint's own when possible."""
    own = "bf16" if plan.source_dtype == torch.bfloat16 else "f16"
    if own in wanted:
        return own
    for q in ("f16", "bf16"):
        if q in wanted:
            return q
    return own


def export_gguf(
    model_dir: Path,
    out_dir: Path,
    quants: list[str],
    progress: Progress | None = None,
    reference_model_dir: Path | None = None,
    check: bool = True,
    *,
    name: str | None = None,
    threads: int | None = None,
) -> list[GgufResult]:
    """Convert the merged HF model in model_dir to one GGUF per quant in out_dir.

    quants: any of f32, f16, bf16, q8_0 (written directly) and q4_k_m, q5_k_m, q6_k, q4_0, q3_k_m
    (llama.cpp's quantizer, from the F16/BF16 file). progress(fraction, message) is called
    throughout. reference_model_dir: the HF model to compare with (default model_dir; a PEFT
    adapter folder means base + adapter). check=False skips the llama.cpp checks. name: file
    name stem (default: model_dir's name). Returns one GgufResult per quant, in the order asked.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    wanted = _normalise_quants(quants)
    report = progress or (lambda f, m: None)
    if not model_dir.is_dir():
        raise ExportError(f"Model folder {model_dir} does not exist; merge the run first (export format 'merged').")
    check_note: str | None = None
    if not llama_cpp_available():
        # Tunesmith writes the direct types itself; only the K-quants need llama.cpp before anything is written.
        need = [q.upper() for q in wanted if q in LLAMA_QUANTS]
        if need:
            raise ExportError(
                f"{', '.join(need)} need llama.cpp support, which is not installed yet: {INSTALL_HINT} installs it "
                f"({TYPICAL_TIME}). F32, F16, BF16 and Q8_0 export without it."
            )
        if check:
            check, check_note = False, f"llama.cpp check: not run yet (llama.cpp support is not installed; {INSTALL_HINT} installs it)"

    report(0.0, "reading config, weights index and tokenizer")
    plan = plan_model(model_dir)
    vocab = build_vocab(model_dir, plan.n_vocab, plan.config.to_dict())
    base = name or model_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)

    direct = [q for q in wanted if q in DIRECT_QUANTS]
    quantized = [q for q in wanted if q in LLAMA_QUANTS]
    src_q = _source_quant(plan, wanted) if quantized else None
    temp_source = src_q is not None and src_q not in direct
    to_write = direct + ([src_q] if temp_source else [])
    needed = sum(_estimate_bytes(plan, q) for q in to_write) + sum(_estimate_bytes(plan, q) for q in quantized)
    _check_space(out_dir, needed)

    finals = {q: out_dir / _file_name(base, q) for q in wanted}
    if temp_source:
        finals[src_q] = out_dir / f".{base}-{src_q.upper()}.quant-source.gguf"
    for p in finals.values():  # leftovers of an earlier, killed export
        _partial(p).unlink(missing_ok=True)

    # progress budget: writing, quantizing, checking
    w_write = 0.5 if quantized else (0.75 if check else 1.0)
    w_quant = (0.95 if not check else 0.75) - w_write if quantized else 0.0
    tok_warnings: list[str] = []
    done_files: list[Path] = []
    partials: list[Path] = []
    try:
        outputs = [DirectOutput(q, _partial(finals[q])) for q in to_write]
        partials += [o.path for o in outputs]
        label = ", ".join(q.upper() for q in to_write)
        report(0.01, f"writing {label}")
        write_direct(plan, vocab, outputs, base, lambda f: report(0.01 + f * (w_write - 0.01), f"writing {label}"))
        fallbacks: dict[str, str | None] = {}
        for o in outputs:
            fallbacks[o.quant] = _q8_fallback_note(o) if o.fallback else None

        if check and outputs:
            report(w_write, "checking tokenization in llama.cpp")
            bad, tok_warnings = check_tokenization(outputs[0].path, reference_model_dir or model_dir)
            if bad:
                raise ExportError(
                    "llama.cpp tokenizes differently from the Hugging Face tokenizer, so the GGUF would not be "
                    "the model you trained; nothing was written. First differences: " + "; ".join(bad[:3])
                )
        for o in outputs:
            o.path.replace(finals[o.quant])
            partials.remove(o.path)
            done_files.append(finals[o.quant])

        for i, q in enumerate(quantized):
            assert src_q is not None
            tmp = _partial(finals[q])
            partials.append(tmp)
            start = w_write + w_quant * i / len(quantized)
            step = w_quant / len(quantized)
            report(start, f"quantizing {q.upper()} with llama.cpp")
            quantize_file(finals[src_q], tmp, q, threads,
                          lambda f, s=start, st=step, q=q: report(s + f * st, f"quantizing {q.upper()} with llama.cpp"))
            fallbacks[q] = fallback_note(tmp, q)
            tmp.replace(finals[q])
            partials.remove(tmp)
            done_files.append(finals[q])
    except OSError as e:
        _cleanup(partials)
        if e.errno == errno.ENOSPC:
            raise ExportError(
                f"The disk filled up while writing to {out_dir}; the partial file was removed. This export needs "
                f"about {_gb(needed)}: free space or export fewer / smaller types."
            ) from e
        raise ExportError(f"Could not write the GGUF in {out_dir}: {e}") from e
    except BaseException as e:  # ExportError, KeyboardInterrupt, ...: no partial file survives
        _cleanup(partials)
        kept = ", ".join(p.name for p in done_files) or "none"
        if hasattr(e, "add_note"):  # Python 3.11+
            e.add_note(f"GGUF export stopped; partial files removed. Complete files kept: {kept}.")
        raise
    finally:
        if temp_source:
            finals[src_q].unlink(missing_ok=True)

    results: list[GgufResult] = []
    fidelity: dict[str, Fidelity] = {}
    if check:
        ref_dir = Path(reference_model_dir or model_dir)
        report(0.8 if quantized else w_write, "running the Hugging Face reference model")
        reference = Reference.compute(ref_dir)
        for i, q in enumerate(wanted):
            report(0.82 + 0.16 * i / len(wanted), f"checking {q.upper()} against the Hugging Face model")
            fidelity[q] = check_fidelity(finals[q], ref_dir, quant=q, reference=reference)
            if not fidelity[q].tokenization_ok:  # checked before quantizing too; same vocab in every file
                _cleanup(list(finals.values()))
                raise ExportError(
                    f"{finals[q].name}: llama.cpp tokenizes differently from Hugging Face, so the files were removed: "
                    + "; ".join(fidelity[q].tokenization_mismatches[:2])
                )

    report(0.99, "writing Ollama Modelfiles")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))  # once: a 150k vocabulary takes a second to load
    for q in wanted:
        mf = write_modelfile(finals[q], model_dir, stop_tokens=vocab.stop_tokens, context_length=plan.context_length, tokenizer=tokenizer)
        results.append(
            GgufResult(
                path=finals[q],
                quant=q,
                size_bytes=finals[q].stat().st_size,
                fallback=fallbacks.get(q),
                fidelity=fidelity.get(q),
                modelfile=mf,
                ollama_command=ollama_create_command(mf),
                notes=[*([check_note] if check_note and not results else []), *plan.notes, *vocab.notes, *tok_warnings[:1]],
            )
        )
    report(1.0, "done")
    return results


def _q8_fallback_note(o: DirectOutput) -> str:
    names = ", ".join(o.fallback[:4]) + (" ..." if len(o.fallback) > 4 else "")
    return f"{len(o.fallback)} tensor(s) have rows that are not a multiple of 32 values, which Q8_0 needs; stored as F16: {names}"


def _cleanup(paths: list[Path]) -> None:
    for p in list(paths):
        try:
            p.unlink(missing_ok=True)
        except OSError:
            log.warning("could not remove %s", p)
