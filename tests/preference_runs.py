"""A short preference run on the demo model, finished, for tests that need one to look at."""

from __future__ import annotations

from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig

STEPS = 6


def train_preference_run(objective: str, name: str, *extra: str):
    """`objective` on the bundled preference pairs (LoRA, a quarter held out) for STEPS steps; the run info."""
    from tunesmith.engine import jobs

    cfg = RunConfig().with_overrides(demo_overrides_list() + [
        f"objective={objective}", "data.datasets=[preference_pairs]", "method=lora", f"training.max_steps={STEPS}",
        "training.learning_rate=0.005", "data.val_size=0.25", f"output.run_name={name}", *extra])
    run = jobs.wait(jobs.submit(cfg), timeout=600)
    assert run.status == "completed", run.error
    return run
