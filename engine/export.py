"""Export a run: its LoRA adapter, a merged 16-bit model, or GGUF files.

    export_run(run_id, "adapter")            # PEFT folder: PeftModel.from_pretrained loads it
    export_run(run_id, "merged")             # HF folder: AutoModelForCausalLM.from_pretrained loads it
    export_run(run_id, "gguf", quants=["f16", "q4_k_m"])   # llama.cpp / Ollama files (engine.gguf)

The merge adds the LoRA delta (alpha/r * B @ A; alpha/sqrt(r) for rsLoRA; DoRA
rescales each output row to its learned magnitude) to the *original* 16-bit base
weights, one safetensors shard at a time, in fp32 and cast back to the base
dtype: memory stays around one shard plus the adapter, whatever the model size,
and nothing goes through dequantized NF4 weights. Every output folder is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import atomic, jobs, models, paths
from .errors import ExportError

Progress = Callable[[float, str], None]

_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)


@dataclass
class ExportResult:
    format: str
    path: Path
    size_bytes: int
    files: list[dict] = field(default_factory=list)  # per file: path, size_bytes, and format-specific details
    notes: list[str] = field(default_factory=list)


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def _noop(frac: float, msg: str) -> None:
    pass


MARKER = "tunesmith_export.json"


def _check_out_dir(out: Path) -> None:
    """Only replace a folder Tunesmith wrote: an existing user folder is never deleted."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ExportError(f"{out} already exists and was not written by a Tunesmith export; "
                          "choose a new or empty folder (nothing was changed).")


def _write_marker(folder: Path, **info) -> None:
    (folder / MARKER).write_text(json.dumps(info, indent=2))


def _base_dir(name_or_path: str, revision: str | None = None) -> Path:
    """A local folder holding the base model's safetensors (downloads a hub id when possible)."""
    src = Path(models.resolve_model_path(name_or_path))
    if src.is_dir():
        return src
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, revision=revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as e:
        raise ExportError(f"Cannot get the base model {name_or_path!r} to merge into: {e}") from e


def _adapter_deltas(adapter_dir: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], float, dict]:
    """{base weight name: (A, B, DoRA magnitude or None)}, the LoRA scale (alpha/r, or alpha/sqrt(r)
    for rsLoRA), and adapter_config.json."""
    from safetensors.torch import load_file

    acfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    if acfg.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{adapter_dir}: only LoRA adapters can be merged (got {acfg.get('peft_type')}).")
    sd = load_file(str(adapter_dir / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        m = re.match(r"^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$", k)
        dora = re.match(r"^base_model\.model\.(.+)\.lora_magnitude_vector(?:\.default)?(?:\.weight)?$", k)
        if m:
            pairs.setdefault(m.group(1) + ".weight", {})[m.group(2)] = v
        elif dora:  # [issue 15] DoRA: the learned magnitude of each output row
            pairs.setdefault(dora.group(1) + ".weight", {})["M"] = v
        elif ".lora_embedding_" in k or "modules_to_save" in k:
            raise ExportError(f"{adapter_dir}: tensor {k} (embedding LoRA / modules_to_save) is not supported by the merge.")
    out = {}
    for name, ab in pairs.items():
        if set(ab) - {"M"} != {"A", "B"} or bool(acfg.get("use_dora")) != ("M" in ab):
            raise ExportError(f"{adapter_dir}: {name} has an incomplete LoRA pair (or DoRA magnitude).")
        out[name] = (ab["A"], ab["B"], ab.get("M"))
    r = acfg["r"]
    alpha = acfg.get("lora_alpha", r)
    scale = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    return out, scale, acfg


def merge_to_dir(run_id: str, out_dir: Path, progress: Progress | None = None) -> Path:
    """Write base + LoRA as a plain 16-bit HF model folder at out_dir (atomically)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    progress = progress or _noop
    run = jobs.get_run(run_id)
    cfg = jobs.load_config(run)
    if run.has_full_model:
        with atomic.atomic_dir(Path(out_dir), overwrite=True) as tmp:
            shutil.copytree(run.run_dir / "model", tmp, dirs_exist_ok=True)
            _write_marker(tmp, format="merged", run_id=run.id, base_model=cfg.model.name_or_path)
        return Path(out_dir)
    if not run.has_adapter:
        raise ExportError(f"Run {run.id} has no adapter to merge ({run.status}). Train it first, or wait for a save.")
    adapter_dir = run.run_dir / "adapter"
    deltas, scale, acfg = _adapter_deltas(adapter_dir)
    base = _base_dir(cfg.model.name_or_path, cfg.model.revision)
    shards = sorted(base.glob("*.safetensors"))
    if not shards:
        raise ExportError(f"{base}: no .safetensors weights to merge into (only safetensors bases are supported).")
    used: set[str] = set()
    with atomic.atomic_dir(Path(out_dir), overwrite=True) as tmp:
        for i, shard in enumerate(shards):
            progress(i / len(shards), f"merging {shard.name}")
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
                for name in f.keys():
                    t = f.get_tensor(name)
                    if name in deltas:
                        a, b, mag = deltas[name]
                        w = t.float() + scale * (b.float() @ a.float())
                        if mag is not None:  # DoRA: W' = m * (W + sBA) / ||W + sBA|| per output row
                            w = (mag.float() / torch.linalg.norm(w, dim=1)).unsqueeze(1) * w
                        t = w.to(t.dtype)
                        used.add(name)
                    tensors[name] = t.contiguous()
            save_file(tensors, str(tmp / shard.name), metadata={"format": meta.get("format", "pt")})
            del tensors
        missing = set(deltas) - used
        if missing:
            raise ExportError(f"The adapter targets weights not found in the base model: {sorted(missing)[:3]}")
        for name in ("config.json", "generation_config.json", "model.safetensors.index.json"):
            if (base / name).exists():
                shutil.copy2(base / name, tmp / name)
        # Tokenizer from the run's adapter folder: it is what training used (chat template included).
        tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else base
        for name in _TOKENIZER_FILES:
            if (tok_src / name).exists():
                shutil.copy2(tok_src / name, tmp / name)
        _write_marker(tmp, format="merged", run_id=run.id, base_model=cfg.model.name_or_path, lora_r=acfg["r"],
                      lora_alpha=acfg.get("lora_alpha"), merged_tensors=len(used))
    progress(1.0, "merged")
    return Path(out_dir)


def export_adapter(run_id: str, out_dir: Path, progress: Progress | None = None) -> Path:
    progress = progress or _noop
    run = jobs.get_run(run_id)
    if not run.has_adapter:
        what = "a full fine-tune (export it as merged)" if run.has_full_model else f"{run.status}, with no adapter saved"
        raise ExportError(f"Run {run.id} has no LoRA adapter: it is {what}.")
    progress(0.1, "copying adapter")
    with atomic.atomic_dir(Path(out_dir), overwrite=True) as tmp:
        shutil.copytree(run.run_dir / "adapter", tmp, dirs_exist_ok=True)
        _write_marker(tmp, format="adapter", run_id=run.id)
    progress(1.0, "adapter written")
    return Path(out_dir)


def export_run(
    run_id: str, fmt: str, out_dir: str | Path | None = None, quants: list[str] | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export one run in one format. Default out_dir: $TUNESMITH_HOME/exports/<run-id>/<format>."""
    progress = progress or _noop
    run = jobs.get_run(run_id)
    if fmt not in ("adapter", "merged", "gguf"):
        raise ExportError(f"format {fmt!r}: choose adapter, merged or gguf.")
    out = Path(out_dir).expanduser() if out_dir else paths.exports_dir() / run.id / fmt
    if fmt != "gguf":
        _check_out_dir(out)
    try:
        if fmt == "adapter":
            path = export_adapter(run.id, out, progress)
            return ExportResult("adapter", path, _dir_size(path))
        if fmt == "merged":
            path = merge_to_dir(run.id, out, progress)
            return ExportResult("merged", path, _dir_size(path))
        return _export_gguf(run.id, out, quants or ["f16"], progress)
    except OSError as e:
        raise ExportError(f"Could not write to {out}: {e.strerror or e}. Check free disk space and permissions.") from e


def _export_gguf(run_id: str, out: Path, quants: list[str], progress: Progress) -> ExportResult:
    """Merge into the 16-bit base, convert to GGUF, and check every file against base + adapter."""
    from .gguf import export_gguf

    run = jobs.get_run(run_id)
    merged = paths.exports_dir() / run.id / ".merged-for-gguf"
    merge_to_dir(run.id, merged, lambda f, m: progress(0.25 * f, m))
    # The fidelity check compares with the HF model as trained: base + adapter, unmerged
    # (a full fine-tune is its own reference).
    reference = run.run_dir / "adapter" if run.has_adapter else merged
    try:
        results = export_gguf(merged, out, quants, progress=lambda f, m: progress(0.25 + 0.75 * f, m),
                              reference_model_dir=reference,
                              name=re.sub(r"[^\w.-]+", "-", run.name))
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    files, notes = [], []
    for r in results:
        d = {"path": str(r.path), "quant": r.quant, "size_bytes": r.size_bytes,
             "modelfile": str(r.modelfile) if r.modelfile else None, "ollama_command": r.ollama_command}
        if r.fidelity is not None:
            d.update(top1_agreement=r.fidelity.top1_agreement, mean_kl=r.fidelity.mean_kl,
                     tokenization_ok=r.fidelity.tokenization_ok, fidelity_passed=r.fidelity.passed,
                     fidelity=r.fidelity.summary())
        files.append(d)
        if r.fallback:
            notes.append(f"{r.quant}: {r.fallback}")
        notes += [f"{r.quant}: {n}" for n in r.notes]
        if r.ollama_command:
            notes.append(f"Ollama: {r.ollama_command}")
    progress(1.0, "done")
    return ExportResult("gguf", out, sum(f["size_bytes"] for f in files), files, notes)
