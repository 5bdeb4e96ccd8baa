"""Checkpoints: everything a resumed run needs to continue exactly where it stopped.

    checkpoints/checkpoint-N/
        trainable.pt        the trainable parameters (LoRA weights; all weights for full)
        optimizer.pt        optimizer state (8-bit AdamW included)
        scheduler.pt        learning-rate schedule position
        rng.pt              Python, torch CPU and CUDA generator states
        trainer_state.json  step, epoch, position in the epoch's row order, token counts,
                            the open logging window's metric sums (written last)

A checkpoint is written in a temporary folder next to the final one and renamed when
complete, so a crash never leaves a half-written checkpoint under its final name
(`latest_checkpoint` only considers complete ones). The newest `keep` checkpoints stay.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_dir

TRAINER_STATE = "trainer_state.json"


def checkpoint_step(ckpt: Path) -> int:
    """The optimizer step a checkpoint-N folder was saved at (-1 if the name is not one)."""
    tail = Path(ckpt).name.rsplit("-", 1)[-1]
    return int(tail) if Path(ckpt).name.startswith("checkpoint-") and tail.isdigit() else -1


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (checkpoint-N with its trainer state) of a run, if any."""
    found = [d for d in (Path(run_dir) / "checkpoints").glob("checkpoint-*")
             if checkpoint_step(d) >= 0 and (d / TRAINER_STATE).exists()]
    return max(found, key=checkpoint_step) if found else None


def rng_state() -> dict[str, Any]:
    st: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the trainable weights on the CPU (FSDP's shards stay sharded where they are)."""
    from .fsdp import is_dtensor

    return {n: p.detach().clone() if is_dtensor(p) else p.detach().to("cpu", copy=True)
            for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer, scheduler,
                    state: dict[str, Any], keep: int = 2, trainable: dict[str, torch.Tensor] | None = None,
                    optimizer_state: dict[str, Any] | None = None) -> Path:
    """`trainable` / `optimizer_state`: what FSDP gathered whole (engine/training/fsdp.py); by default
    they are read from `model` and `optimizer`."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"checkpoint-{step}"
    with atomic_dir(final, overwrite=True) as tmp:
        torch.save(trainable if trainable is not None else trainable_state(model), tmp / "trainable.pt")
        torch.save(optimizer_state if optimizer_state is not None else optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / TRAINER_STATE).write_text(json.dumps({"global_step": step, **state}, indent=1), encoding="utf-8")
    done = sorted((d for d in root.glob("checkpoint-*") if checkpoint_step(d) >= 0), key=checkpoint_step)
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore a checkpoint into model/optimizer/scheduler and the RNGs; returns the trainer state."""
    ckpt = Path(ckpt)
    saved = torch.load(ckpt / "trainable.pt", map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    missing = [n for n in saved if n not in params]
    if missing:
        raise ValueError(f"{ckpt}: parameters {missing[:3]} are not in this model; was the config changed?")
    opt_state = torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False)
    from .fsdp import is_sharded, load_checkpoint as load_whole

    if is_sharded(model) or any(isinstance(k, str) for k in opt_state.get("state", {})):
        load_whole(model, optimizer, saved, opt_state)  # written by an FSDP run, or read into one
    else:
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t.to(params[n].device))
        optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=False))
    set_rng_state(torch.load(ckpt / "rng.pt", map_location="cpu", weights_only=False))
    return json.loads((ckpt / TRAINER_STATE).read_text(encoding="utf-8"))
