"""What the Train monitor shows for one run, built from its events and RunInfo.

Pure functions (no Gradio): `loss_figure(events)` -> plotly figure with the raw
loss as markers, an EMA-smoothed line and eval-loss points; `summarize(run,
events)` -> the numbers and text around it. The Train tab polls these with a
gr.Timer while a run is live; tests call them directly.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from tunesmith.engine.jobs import RunInfo

from .i18n import T, tr

LIVE_STATES = ("queued", "running", "stopping")
SMOOTHING = 0.6  # EMA weight of the past; TensorBoard's default slider value

# Colours match assets/studio.css.
RAW_COLOUR = "rgba(99, 102, 241, 0.55)"
EMA_COLOUR = "#4f46e5"
EVAL_COLOUR = "#f59e0b"


def ema(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average (as TensorBoard smooths scalars).

    Without the debias term the first points would be pulled towards 0.
    """
    out, last, n = [], 0.0, 0
    for v in values:
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n) if weight < 1 else v)
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def loss_points(events: list[dict[str, Any]]) -> tuple[list[int], list[float], list[int], list[float]]:
    """(train steps, train losses, eval steps, eval losses) from an event list."""
    ts, tl, es, el = [], [], [], []
    for ev in events:
        if ev.get("type") == "train" and _finite(ev.get("loss")) and ev.get("step") is not None:
            ts.append(int(ev["step"]))
            tl.append(float(ev["loss"]))
        elif ev.get("type") == "eval" and _finite(ev.get("eval_loss")) and ev.get("step") is not None:
            es.append(int(ev["step"]))
            el.append(float(ev["eval_loss"]))
    return ts, tl, es, el


# Preference objectives (dpo, orpo, simpo, kto, reward) log these next to the loss.
PREFERENCE_SERIES = (
    ("rewards/margins", "reward margin", "#16a34a", "solid"),
    ("rewards/chosen", "reward: chosen", "#0ea5e9", "dot"),
    ("rewards/rejected", "reward: rejected", "#ef4444", "dot"),
    ("rewards/accuracies", "preference accuracy", "#a855f7", "dash"),
    # on the held-out split (eval events, data.val_size / val_file): markers on the same axis
    ("eval_rewards/margins", "eval reward margin", "#16a34a", "eval"),
    ("eval_rewards/accuracies", "eval preference accuracy", "#a855f7", "eval"),
)


def preference_points(events: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} of the preference metrics the train events carry (empty for sft)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for ev in events:
        if ev.get("type") not in ("train", "eval") or ev.get("step") is None:
            continue
        for key, *_ in PREFERENCE_SERIES:
            if _finite(ev.get(key)):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(int(ev["step"]))
                ys.append(float(ev[key]))
    return out


# grpo logs rewards next to the loss: total, per reward function (reward/<name>), completion length and KL.
REWARD_COLOURS = ("#16a34a", "#0ea5e9", "#a855f7", "#ef4444", "#14b8a6", "#f97316")
REWARD_HIDDEN = ("completion_length", "kl")  # other scales: listed in the legend, shown on a click


def reward_points(events: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} of the reward metrics the train events carry (empty for other objectives)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for ev in events:
        if ev.get("type") != "train" or ev.get("step") is None or not _finite(ev.get("reward")):
            continue
        for key, v in ev.items():
            if (key == "reward" or key.startswith("reward/") or key in REWARD_HIDDEN) and _finite(v):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(int(ev["step"]))
                ys.append(float(v))
    return out


def samples_rows(events: list[dict[str, Any]]) -> list[list[Any]]:
    """The latest samples event as table rows: step, prompt, completion, answer, reward, scores."""
    last = next((e for e in reversed(events) if e.get("type") == "samples"), None)
    if last is None:
        return []
    return [[last.get("step"), s.get("prompt", ""), s.get("completion", ""), s.get("answer") or "",
             s.get("reward"), ", ".join(f"{k} {v:g}" for k, v in (s.get("scores") or {}).items())]
            for s in last.get("samples", [])]


def loss_figure(events: list[dict[str, Any]], title: str = "") -> go.Figure:
    steps, losses, eval_steps, eval_losses = loss_points(events)
    pref = preference_points(events)
    fig = go.Figure()
    for key, name, colour, dash in PREFERENCE_SERIES:  # on a second axis: rewards and accuracy are not losses
        if key in pref and dash == "eval":
            fig.add_trace(go.Scatter(x=pref[key][0], y=pref[key][1], mode="markers", name=tr(name), yaxis="y2",
                                     marker=dict(color=colour, size=9, symbol="diamond-open")))
        elif key in pref:
            fig.add_trace(go.Scatter(x=pref[key][0], y=pref[key][1], mode="lines", name=tr(name), yaxis="y2",
                                     line=dict(color=colour, width=2, dash=dash)))
    rewards = reward_points(events)
    for i, (key, (xs, ys)) in enumerate(sorted(rewards.items(), key=lambda kv: (kv[0] != "reward", kv[0]))):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=key.replace("/", ": "), yaxis="y2",
                                 visible="legendonly" if key in REWARD_HIDDEN else True,
                                 line=dict(color=REWARD_COLOURS[i % len(REWARD_COLOURS)],
                                           width=2.5 if key == "reward" else 1.5)))
    if steps:
        fig.add_trace(go.Scatter(x=steps, y=losses, mode="markers", name=tr("loss"),
                                 marker=dict(color=RAW_COLOUR, size=6)))
        fig.add_trace(go.Scatter(x=steps, y=ema(losses), mode="lines", name=tr("loss (smoothed)"),
                                 line=dict(color=EMA_COLOUR, width=2.5)))
    if eval_steps:
        fig.add_trace(go.Scatter(x=eval_steps, y=eval_losses, mode="markers+lines", name=tr("eval loss"),
                                 marker=dict(color=EVAL_COLOUR, size=9, symbol="diamond"),
                                 line=dict(color=EVAL_COLOUR, width=1, dash="dot")))
    fig.update_layout(
        template="plotly_white",
        height=340,
        margin=dict(l=50, r=20, t=40 if title else 20, b=45),
        title=dict(text=title, x=0.01, font=dict(size=14)) if title else None,
        xaxis=dict(title=tr("step"), rangemode="tozero"),
        yaxis=dict(title=tr("loss")),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"),
        showlegend=bool(steps or eval_steps),
    )
    if pref or rewards:
        title = tr("reward / accuracy") if pref else tr("reward")
        fig.update_layout(yaxis2=dict(title=title, overlaying="y", side="right", showgrid=False))
    if not steps and not eval_steps:
        fig.add_annotation(text=tr("No points yet: the chart fills in as the run logs steps."),
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                           font=dict(color="#6b7280", size=13))
        fig.update_xaxes(showticklabels=False)
        fig.update_yaxes(showticklabels=False)
    return fig


def fmt_duration(seconds: Any) -> str:
    if not _finite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


@dataclass
class Summary:
    status: str
    step: int
    max_steps: int | None
    percent: float | None  # 0..100, None when the total is unknown
    elapsed: str
    eta: str
    tokens_per_s: str
    peak_mem: str
    last_loss: str
    error: str  # last worker-log lines of a failed run, else ""
    live: bool


def summarize(run: RunInfo, events: list[dict[str, Any]]) -> Summary:
    last = next((e for e in reversed(events) if e.get("type") == "train"), {})
    step = int(last.get("step") or run.step or 0)
    max_steps = last.get("max_steps") or run.max_steps
    percent = None
    if max_steps:
        percent = max(0.0, min(100.0, 100.0 * step / max_steps))
    if run.status == "completed":
        percent = 100.0
    live = run.status in LIVE_STATES
    tps = last.get("tokens_per_s")
    mem = last.get("peak_mem_gb")
    loss = last.get("loss", run.last_loss)
    return Summary(
        status=run.status,
        step=step,
        max_steps=int(max_steps) if max_steps else None,
        percent=percent,
        elapsed=fmt_duration(last.get("elapsed_s")),
        eta=fmt_duration(last.get("eta_s")) if live else "—",
        tokens_per_s=f"{tps:,.0f}" if _finite(tps) else "—",
        peak_mem=f"{mem:.2f} GB" if _finite(mem) else "—",
        last_loss=f"{loss:.4f}" if _finite(loss) else "—",
        error=(run.error or "").strip() if run.status == "failed" else "",
        live=live,
    )


def progress_html(s: Summary) -> str:
    pct = 0.0 if s.percent is None else s.percent
    steps = (tr("step {step} / {total}", step=s.step, total=s.max_steps) if s.max_steps
             else tr("step {step}", step=s.step))
    label = f"{pct:.0f}% · {steps}" if s.percent is not None else steps
    return (
        f'<div class="ts-progress" data-status="{html.escape(s.status)}">'
        f'<div class="ts-progress-track"><div class="ts-progress-fill" style="width:{pct:.1f}%"></div></div>'
        f'<div class="ts-progress-label">{html.escape(label)}</div></div>'
    )


def stats_html(run: RunInfo, s: Summary) -> str:
    badge = f'<span class="ts-badge ts-{html.escape(s.status)}">{html.escape(tr(s.status))}</span>'
    cells = [
        (tr("Elapsed"), s.elapsed), (tr("Time left"), s.eta), (tr("Speed (tokens/s)"), s.tokens_per_s),
        (tr("Peak memory"), s.peak_mem), (tr("Last loss"), s.last_loss),
    ]
    grid = "".join(
        f'<div class="ts-stat"><div class="ts-stat-label">{k}</div><div class="ts-stat-value">{html.escape(v)}</div></div>'
        for k, v in cells
    )
    return (
        f'<div class="ts-run-head">{badge}<span class="ts-run-name">{html.escape(run.name)}</span>'
        f'<span class="ts-run-id">{html.escape(run.id)}</span></div>'
        f'<div class="ts-stats">{grid}</div>'
    )


# The page's first view: the marker is translated in the browser (one per string, as Gradio replaces one).
EMPTY_STATS_HTML = (
    '<div class="ts-run-head"><span class="ts-badge ts-none">—</span>'
    f'<span class="ts-run-name">{T("No run yet. Press Start training, or open one from the Runs tab.")}</span></div>'
)


def empty_stats_html() -> str:
    """The same, translated here (for handlers)."""
    return ('<div class="ts-run-head"><span class="ts-badge ts-none">—</span><span class="ts-run-name">'
            + html.escape(tr("No run yet. Press Start training, or open one from the Runs tab.")) + "</span></div>")
