"""Early stopping: stop a run when its eval loss has stopped improving.

    stopper = EarlyStopping(patience=3)
    for step, eval_loss in evaluations:
        if stopper.update(step, eval_loss):
            break            # stopper.reason says why, stopper.best_step which step to keep

A pure decision, with no trainer in it, so any training loop can call it after
each evaluation and tests can drive it with plain numbers. An evaluation counts
as an improvement when it beats the best so far by more than `min_delta`
(absolute); `patience` evaluations in a row without one stop the run.

What it does not know: where the best weights are. The loop that calls it
saves (or keeps) the adapter of `best_step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class EarlyStopping:
    patience: int
    min_delta: float = 0.0
    best_loss: float = math.inf
    best_step: int | None = None
    bad_evals: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError("patience must be at least 1 evaluation")

    def update(self, step: int, eval_loss: float) -> bool:
        """Record one evaluation; True when training should stop now.

        A NaN or infinite loss never counts as an improvement.
        """
        self.history.append((step, eval_loss))
        if math.isfinite(eval_loss) and eval_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_step, self.bad_evals = eval_loss, step, 0
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.patience

    @property
    def should_stop(self) -> bool:
        return self.bad_evals >= self.patience

    @property
    def reason(self) -> str:
        if not self.should_stop:
            return ""
        return (f"eval loss has not improved for {self.bad_evals} evaluation(s); "
                f"the best was {self.best_loss:.4f} at step {self.best_step}")
