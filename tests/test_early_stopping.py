"""Early stopping: the decision, and the trainer's hook that acts on it."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tunesmith.engine.config import RunConfig
from tunesmith.engine.early_stopping import EarlyStopping


def test_stops_after_patience_evaluations_without_improvement():
    es = EarlyStopping(patience=2)
    assert not es.update(10, 2.0)
    assert not es.update(20, 1.5)  # better
    assert not es.update(30, 1.6)  # worse: 1 of 2
    assert not es.update(40, 1.4)  # better again: the count starts over
    assert not es.update(50, 1.41)
    assert es.update(60, 1.45)
    assert (es.best_step, es.best_loss) == (40, 1.4)
    assert "step 40" in es.reason


def test_min_delta_and_nan():
    es = EarlyStopping(patience=1, min_delta=0.1)
    assert not es.update(1, 1.0)
    assert es.update(2, 0.95)  # better, but by less than min_delta
    es = EarlyStopping(patience=2)
    assert not es.update(1, math.nan) and es.best_step is None
    assert es.update(2, math.inf)
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)


def test_the_option_is_in_the_one_schema():
    cfg = RunConfig().with_overrides(["training.early_stopping_patience=3"])
    assert cfg.training.early_stopping_patience == 3
    assert "early_stopping_patience: 3" in cfg.to_yaml()


def test_the_trainer_stops_training_when_eval_loss_turns_up(tmp_path):
    from tunesmith.engine.events import EventWriter, read_events
    from tunesmith.engine.trainer import early_stop

    stopper, ev = EarlyStopping(patience=2), EventWriter(tmp_path)
    for step, loss in [(10, 2.0), (20, 1.5), (30, 1.7), (40, 1.9)]:
        stop = early_stop(stopper, step, loss, ev.write)
        assert stop == (step == 40)
    info = [e for e in read_events(tmp_path) if e.get("early_stop")]
    assert info and info[0]["best_step"] == 20
