"""Fixtures for tests/ecosystem: a quick run with a real LoRA adapter (no worker)."""

from __future__ import annotations

import pytest
import torch

from tunesmith.engine import adapters, jobs, models, registry, scheduler
from tunesmith.engine.config import RunConfig
from tunesmith.engine.events import EventWriter


def run_made_here(cfg: RunConfig) -> str:
    """A registered run whose folder the test fills itself (no worker): marked completed and out of the
    queue at once, so no later scheduler turn in this session starts a real worker for it."""
    run_id = jobs.submit(cfg, start=False)
    registry.update(run_id, status="completed")
    scheduler.forget(run_id)
    return run_id


def nudged_adapter_run(cfg: RunConfig, nudge: float, names: tuple[str, ...] = ("lora_B",)):
    """(run, adapter model, tokenizer): a run made here whose adapter was moved off its start (a
    stand-in for training: each parameter whose name holds one of `names` plus nudge x N(0, 1)),
    saved as the trainer saves it."""
    run = jobs.get_run(run_made_here(cfg))
    model, tok, _ = models.load_for_training(cfg)
    model = adapters.build_adapter(model, cfg)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(k in n for k in names):
                p.add_(nudge * torch.randn_like(p))
    adapters.save_adapter(model, run.run_dir / "adapter", cfg)
    tok.save_pretrained(str(run.run_dir / "adapter"))
    return run, model, tok


@pytest.fixture(scope="session")
def adapter_run(tunesmith_home):
    """A run with a real (freshly initialised, briefly nudged) LoRA adapter and a few metrics events,
    written in-process the way the trainer writes them: no worker, so it is quick."""
    cfg = RunConfig().with_overrides(["method=lora", "lora.r=4", "lora.alpha=8", "output.run_name=hub-push",
                                      "data.datasets=[identity]"])
    run, _, _ = nudged_adapter_run(cfg, 0.01)
    ev = EventWriter(run.run_dir)
    ev.write("train", step=1, max_steps=2, loss=2.0)
    ev.write("train", step=2, max_steps=2, loss=1.25)
    ev.write("eval", step=2, eval_loss=1.5)
    return run


