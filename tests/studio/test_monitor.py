"""The Train monitor's chart and numbers, built from events.jsonl records."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tunesmith.engine.jobs import RunInfo
from tunesmith.studio import monitor


def _events(n: int = 10, eval_every: int = 5) -> list[dict]:
    evs = [{"type": "status", "status": "running", "message": "", "time": 0.0}]
    for step in range(1, n + 1):
        evs.append({"type": "train", "step": step, "max_steps": 20, "loss": 3.0 / step, "lr": 1e-4,
                    "tokens_per_s": 1234.5, "peak_mem_gb": 1.5, "elapsed_s": 10.0 * step, "eta_s": 10.0 * (20 - step),
                    "time": float(step)})
        if step % eval_every == 0:
            evs.append({"type": "eval", "step": step, "eval_loss": 2.0 / step, "time": float(step)})
    return evs


def _run(status: str = "running", **kw) -> RunInfo:
    return RunInfo(id="r1", name="demo-identity-lora", status=status, model="tunesmith/demo", datasets=["identity"],
                   method="lora", run_dir=Path("/nonexistent"), created_at=0.0, **kw)


def test_ema_is_debiased_and_smooth():
    assert monitor.ema([]) == []
    assert monitor.ema([5.0]) == pytest.approx([5.0])  # no pull towards 0
    assert monitor.ema([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])
    sm = monitor.ema([4.0, 0.0, 4.0, 0.0])
    assert max(sm) - min(sm) < 4.0


def test_chart_has_raw_points_smoothed_line_and_eval_points():
    fig = monitor.loss_figure(_events())
    by_name = {t.name: t for t in fig.data}
    raw, smooth, ev = by_name["loss"], by_name["loss (smoothed)"], by_name["eval loss"]
    assert raw.mode == "markers" and list(raw.x) == list(range(1, 11))
    assert list(raw.y) == pytest.approx([3.0 / s for s in range(1, 11)])
    assert smooth.mode == "lines" and list(smooth.y) == pytest.approx(monitor.ema(list(raw.y)))
    assert list(ev.x) == [5, 10]
    assert fig.layout.xaxis.title.text == "step"


def test_chart_ignores_non_finite_and_bad_lines():
    evs = [{"type": "train", "step": 1, "loss": float("nan")}, {"type": "train", "step": 2, "loss": None},
           {"type": "train", "loss": 1.0}, {"type": "train", "step": 3, "loss": 1.5}, {"type": "status"}]
    steps, losses, _, _ = monitor.loss_points(evs)
    assert steps == [3] and losses == [1.5]


def test_empty_chart_says_so():
    fig = monitor.loss_figure([])
    assert not fig.data
    assert "No points yet" in fig.layout.annotations[0].text


def test_summary_of_a_running_run():
    s = monitor.summarize(_run(), _events(10))
    assert (s.step, s.max_steps, s.percent) == (10, 20, 50.0)
    assert s.live and s.eta == "1m 40s" and s.elapsed == "1m 40s"
    assert s.tokens_per_s == "1,234" or s.tokens_per_s == "1,235"
    assert s.peak_mem == "1.50 GB" and s.last_loss == "0.3000" and s.error == ""
    html = monitor.progress_html(s)
    assert "50%" in html and "step 10 / 20" in html


def test_summary_of_finished_and_failed_runs():
    done = monitor.summarize(_run("completed"), _events(10))
    assert done.percent == 100.0 and not done.live and done.eta == "—"
    failed = monitor.summarize(_run("failed", error="Traceback...\nValueError: boom"), [])
    assert failed.error.endswith("boom") and failed.percent is None
    assert "step 0" in monitor.progress_html(failed)


def test_durations():
    assert monitor.fmt_duration(None) == "—"
    assert monitor.fmt_duration(math.inf) == "—"
    assert monitor.fmt_duration(59.6) == "1m 00s"
    assert monitor.fmt_duration(3 * 3600 + 125) == "3h 02m"
