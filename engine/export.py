"""Export a run: its LoRA adapter, a merged 16-bit model, or GGUF files.

    export_run(run_id, "adapter")            # PEFT folder: PeftModel.from_pretrained loads it
    export_run(run_id, "merged")             # HF folder: AutoModelForCausalLM.from_pretrained loads it
    export_run(run_id, "gguf", quants=["f16", "q4_k_m"])   # llama.cpp / Ollama files (engine.gguf)

The merge adds the LoRA delta (alpha/r * B @ A; alpha/sqrt(r) for rsLoRA; DoRA
rescales each output row to its learned magnitude) to the *original* 16-bit base
weights, one safetensors shard at a time, in fp32 and cast back to the base
dtype: memory stays around one shard plus the adapter, whatever the model size,
and nothing goes through dequantized NF4 weights, except for a LoftQ adapter
(lora.init loftq): it corrects the 4-bit base's rounding, so it is merged into the
weights that base had in training, rounded through 4 bits again exactly as then
(engine.adapters.quantized_base_weight); on the original weights its correction
would count twice. The export notes say so.

Output folders: an export is written into a temporary sibling folder, then its
files are renamed into the output folder, which keeps a manifest
(tunesmith_export.json) of the files Tunesmith put there. A later export
replaces or removes only files listed in it; any other file (a README the user
added) is never touched, and an export that would overwrite one is refused
before anything changes. A non-empty folder without a manifest is refused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from . import adapters, atomic, jobs, models, paths
from .diskspace import disk_full_reason
from .errors import ExportError

log = logging.getLogger(__name__)
LOFTQ_NOTE = ("LoftQ adapter: merged into the 4-bit ({quant}) base it was trained against (its weights rounded "
              "through 4 bits as in training), not the original 16-bit weights, where its correction would count twice")

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


MARKER = "tunesmith_export.json"  # the manifest: what this export folder holds and which files Tunesmith wrote


def _check_out_dir(out: Path) -> None:
    """An output folder must be new, empty, or one a Tunesmith export wrote (it has a manifest)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise ExportError(f"{out} already exists and was not written by a Tunesmith export; "
                          "choose a new or empty folder (nothing was changed).")


def _owned_files(out: Path) -> set[str] | None:
    """Files (relative paths) an earlier export wrote into `out`; None for a manifest from before
    file lists were kept (then nothing is removed, and only same-named files are replaced)."""
    try:
        files = json.loads((out / MARKER).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        return set() if not (out / MARKER).exists() else None
    return set(files) if isinstance(files, list) else None


def _files_in(folder: Path) -> list[str]:
    return sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file() and f.name != MARKER)


def _refuse_overwrites(out: Path, names: list[str], owned: set[str] | None) -> None:
    if owned is None:
        return
    theirs = [n for n in names if (out / n).exists() and n not in owned]
    if theirs:
        raise ExportError(f"{out / theirs[0]} exists and was not written by Tunesmith; move it or choose another "
                          "folder (nothing was changed).")


def _write_manifest(out: Path, files: list[str], **info) -> None:
    atomic.write_text(out / MARKER, json.dumps({**info, "files": sorted(files)}, indent=2))


def _publish(staging: Path, out: Path, replace: bool, **info) -> None:
    """Move every file of `staging` into `out` and update its manifest.

    replace: files an earlier export wrote and this one did not are removed (a merged model
    with fewer shards must not keep a stale one); otherwise they stay (GGUF files of other
    types). Files not in the manifest are never removed or overwritten.
    """
    names = _files_in(staging)
    owned = _owned_files(out) if out.exists() else set()
    _refuse_overwrites(out, names, owned)
    out.mkdir(parents=True, exist_ok=True)
    old = owned or set()
    # The manifest first covers both sets: an interruption while moving leaves no file of ours unlisted.
    _write_manifest(out, sorted(old | set(names)), **info)
    for n in names:
        (out / n).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / n, out / n)
    kept = set(names)
    for n in sorted(old - set(names)):
        if replace:
            (out / n).unlink(missing_ok=True)
        elif (out / n).exists():
            kept.add(n)
    _write_manifest(out, sorted(kept), **info)


@contextmanager
def _staged(out: Path, replace: bool = True, **info) -> Iterator[Path]:
    """A temporary folder beside `out` (same disk, so the moves are renames), published on success."""
    out = Path(out)
    _check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{secrets.token_hex(3)}.tmp"
    staging.mkdir()
    try:
        yield staging
        _publish(staging, out, replace, **info)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
        with _staged(Path(out_dir), format="merged", run_id=run.id, base_model=cfg.model.name_or_path) as tmp:
            shutil.copytree(run.run_dir / "model", tmp, dirs_exist_ok=True)
        return Path(out_dir)
    if not run.has_adapter:
        raise ExportError(f"Run {run.id} has no adapter to merge ({run.status}). Train it first, or wait for a save.")
    adapter_dir = run.run_dir / "adapter"
    deltas, scale, acfg = _adapter_deltas(adapter_dir)
    loftq = _loftq_record(run, cfg, adapter_dir)
    rounded_names = set(loftq["weights"]) if loftq else set()
    base = _base_dir(cfg.model.name_or_path, cfg.model.revision)
    shards = sorted(base.glob("*.safetensors"))
    if not shards:
        raise ExportError(f"{base}: no .safetensors weights to merge into (only safetensors bases are supported).")
    used: set[str] = set()
    rounded: set[str] = set()
    info = dict(format="merged", run_id=run.id, base_model=cfg.model.name_or_path, lora_r=acfg["r"],
                lora_alpha=acfg.get("lora_alpha"))
    if loftq:
        info["loftq_base"] = f"4-bit {loftq['quant_type']}"
        log.info(LOFTQ_NOTE.format(quant=loftq["quant_type"].upper()))
    into = " into the 4-bit base (LoftQ)" if loftq else ""
    with _staged(Path(out_dir), **info) as tmp:
        for i, shard in enumerate(shards):
            progress(i / len(shards), f"merging {shard.name}{into}")
            tensors: dict[str, torch.Tensor] = {}
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
                for name in f.keys():
                    t = f.get_tensor(name)
                    base_w = None
                    if name in rounded_names:  # LoftQ: the 4-bit base weight training computed with
                        base_w = adapters.quantized_base_weight(t, loftq)
                        rounded.add(name)
                    if name in deltas:
                        a, b, mag = deltas[name]
                        w = (base_w if base_w is not None else t.float()) + scale * (b.float() @ a.float())
                        if mag is not None:  # DoRA: W' = m * (W + sBA) / ||W + sBA|| per output row
                            w = (mag.float() / torch.linalg.norm(w, dim=1)).unsqueeze(1) * w
                        t = w.to(t.dtype)
                        used.add(name)
                    elif base_w is not None:
                        t = base_w.to(t.dtype)
                    tensors[name] = t.contiguous()
            save_file(tensors, str(tmp / shard.name), metadata={"format": meta.get("format", "pt")})
            del tensors
        if rounded_names - rounded:
            raise ExportError(f"The LoftQ record names 4-bit weights not found in the base model: "
                              f"{sorted(rounded_names - rounded)[:3]}")
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
        from .objectives.reward import HEAD_FILE

        if (adapter_dir / HEAD_FILE).exists():  # a reward model: its score head goes with the merged weights
            shutil.copy2(adapter_dir / HEAD_FILE, tmp / HEAD_FILE)
    progress(1.0, "merged")
    return Path(out_dir)


def _loftq_record(run, cfg, adapter_dir: Path) -> dict | None:
    """The adapter's LoftQ record (which base weights were 4-bit, and how), None for other adapters."""
    record = adapters.loftq_record(adapter_dir)
    if record is None and cfg.lora.init == "loftq":
        raise ExportError(f"Run {run.id} trained a LoftQ adapter, but {adapter_dir} lacks {adapters.LOFTQ_FILE} "
                          "(which base weights were 4-bit), so it cannot be merged into its 4-bit base; train it again.")
    return record


def export_adapter(run_id: str, out_dir: Path, progress: Progress | None = None) -> Path:
    progress = progress or _noop
    run = jobs.get_run(run_id)
    if not run.has_adapter:
        what = "a full fine-tune (export it as merged)" if run.has_full_model else f"{run.status}, with no adapter saved"
        raise ExportError(f"Run {run.id} has no LoRA adapter: it is {what}.")
    progress(0.1, "copying adapter")
    with _staged(Path(out_dir), format="adapter", run_id=run.id) as tmp:
        shutil.copytree(run.run_dir / "adapter", tmp, dirs_exist_ok=True)
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
    if fmt == "gguf":
        from .objectives.reward import is_reward_run

        if is_reward_run(run):
            raise ExportError(f"Run {run.id} is a reward model: it scores replies rather than writing them, and GGUF "
                              "(llama.cpp, Ollama) has no place for its score head. Export it as adapter or merged "
                              "(both keep reward_head.safetensors).")
    out = Path(out_dir).expanduser() if out_dir else paths.exports_dir() / run.id / fmt
    _check_out_dir(out)  # every format: a user's folder is never written into
    try:
        if fmt == "adapter":
            path = export_adapter(run.id, out, progress)
            res = ExportResult("adapter", path, _dir_size(path))
            record = adapters.loftq_record(path)
            if record:
                res.notes.append(f"LoftQ adapter: load its base in 4 bits ({record['quant_type']}, bitsandbytes) "
                                 f"before adding it; README.md and {adapters.LOFTQ_FILE} say how")
            return res
        if fmt == "merged":
            path = merge_to_dir(run.id, out, progress)
            res = ExportResult("merged", path, _dir_size(path))
            _note_loftq(run, res)
            if (path / "reward_head.safetensors").exists():
                res.notes.append("reward model: the merged decoder plus reward_head.safetensors, the score head "
                                 "(hidden size -> 1) read at each reply's last token")
            return res
        res = _export_gguf(run.id, out, quants or ["f16"], progress)
        _note_loftq(run, res)
        return res
    except ExportError:
        raise
    except Exception as e:  # OSError, SafetensorError, torch.save's RuntimeError on a full disk
        full = disk_full_reason(e, out)
        if full:
            raise ExportError(f"{full} Nothing was written to {out}.") from e
        if isinstance(e, OSError):
            raise ExportError(f"Could not write to {out}: {e.strerror or e}. Check permissions.") from e
        raise


def _note_loftq(run, res: ExportResult) -> None:
    record = adapters.loftq_record(run.run_dir / "adapter") if run.has_adapter else None
    if record:
        res.notes.insert(0, LOFTQ_NOTE.format(quant=record["quant_type"].upper()))


def _export_gguf(run_id: str, out: Path, quants: list[str], progress: Progress) -> ExportResult:
    """Merge into the 16-bit base, convert to GGUF, and check every file against base + adapter."""
    from .gguf import export_gguf
    from .gguf.modelfile import ollama_create_command

    run = jobs.get_run(run_id)
    merged = paths.exports_dir() / run.id / ".merged-for-gguf"
    shutil.rmtree(merged, ignore_errors=True)  # left by a killed export
    merge_to_dir(run.id, merged, lambda f, m: progress(0.25 * f, m))
    # The fidelity check compares with the HF model as trained: base + adapter, unmerged
    # (a full fine-tune is its own reference). A LoftQ adapter's base is 4-bit, which the reference
    # loader (16-bit base + adapter) would not give: its merge, checked against training, stands in.
    loftq = run.has_adapter and adapters.loftq_record(run.run_dir / "adapter") is not None
    reference = run.run_dir / "adapter" if run.has_adapter and not loftq else merged
    stem = re.sub(r"[^\w.-]+", "-", run.name)
    try:
        with _staged(out, replace=False, format="gguf", run_id=run.id) as staging:
            results = export_gguf(merged, staging, quants, progress=lambda f, m: progress(0.25 + 0.75 * f, m),
                                  reference_model_dir=reference, name=stem)
            for r in results:  # the Modelfile's `ollama create` line names the folder it ends up in
                if r.modelfile:
                    text = r.modelfile.read_text(encoding="utf-8")
                    atomic.write_text(r.modelfile, text.replace(str(staging.resolve()), str(out.resolve())))
    finally:
        shutil.rmtree(merged, ignore_errors=True)
    for r in results:
        r.path = out / r.path.name
        if r.modelfile:
            r.modelfile = out / r.modelfile.name
            r.ollama_command = ollama_create_command(r.modelfile)
    files, notes = [], []
    for r in results:
        d = {"path": str(r.path), "quant": r.quant, "size_bytes": r.size_bytes,
             "modelfile": str(r.modelfile) if r.modelfile else None, "ollama_command": r.ollama_command}
        if r.fidelity is not None:
            d.update(top1_agreement=r.fidelity.top1_agreement, mean_kl=r.fidelity.mean_kl,
                     tokenization_ok=r.fidelity.tokenization_ok, fidelity_passed=r.fidelity.passed,
                     fidelity=r.fidelity.summary())
        else:  # llama.cpp support not installed yet: the file is written, its check is still to come
            d["fidelity"] = "llama.cpp check: not run yet"
        files.append(d)
        if r.fallback:
            notes.append(f"{r.quant}: {r.fallback}")
        notes += [f"{r.quant}: {n}" for n in r.notes]
        if r.ollama_command:
            notes.append(f"Ollama: {r.ollama_command}")
    progress(1.0, "done")
    return ExportResult("gguf", out, sum(f["size_bytes"] for f in files), files, notes)
