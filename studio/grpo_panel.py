"""GRPO in the Train tab: the reward picker, and the monitor's answer-length chart and samples table.

The picker shows each reward function of engine/rewards.py as a checkbox with a sentence of
help, a weight and, where the function has one, its option (pattern, text, target length,
Python file). It edits the same `objective_settings.rewards` list a YAML file holds (one
schema): its widgets write the list into a gr.State that the Train tab's objective section
treats as the `rewards` setting (`setting_editor`). A YAML file may list a reward twice (two
patterns); the picker shows one of each.

While a GRPO run is live the monitor's timer also refreshes `monitor_extras_view`: completion
length and KL per step on a chart of their own (the loss chart carries the rewards), and the
latest `samples` event (recent completions with their scores per reward) as a table. Both
stay hidden for runs without rewards.

Pure functions (`rewards_from_picker`, `picker_values`, `length_kl_figure`, `samples_frame`)
are tested without a browser in tests/grpo/test_grpo_panel.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
import yaml

from tunesmith.engine import events, jobs
from tunesmith.engine.errors import RunError

from . import monitor
from .i18n import T, localize, tr


@dataclass(frozen=True)
class PickerRow:
    name: str  # the engine's reward name (RewardChoice.name)
    label: str  # checkbox label, plain English (also the zh key)
    help: str  # one sentence under it
    option: str | None = None  # the RewardChoice field holding its parameter
    option_label: str | None = None


# Order: what most GRPO recipes start with first.
PICKER: tuple[PickerRow, ...] = (
    PickerRow("numeric_match", "Right number",
              "1 when the last number of the answer equals the number in the answer column (GSM8K's '#### 42' "
              "works), else 0."),
    PickerRow("exact_match", "Exact answer",
              "1 when the answer (inside <answer>...</answer> if there is one, else the whole reply) equals the "
              "answer column, ignoring case and spaces, else 0."),
    PickerRow("format", "Thinks, then answers",
              "1 when the reply is thinking inside <think>...</think> followed by the answer inside "
              "<answer>...</answer>, else 0."),
    PickerRow("answer_tags", "Answer in tags", "1 when the reply puts an answer inside <answer>...</answer>, else 0."),
    PickerRow("regex", "Matches a pattern",
              "1 when the reply matches the pattern (a regular expression; pick one or type your own), else 0.",
              "pattern", "Pattern (regular expression)"),
    PickerRow("contains", "Contains a text", "1 when the reply contains the text, ignoring case, else 0.",
              "text", "Text to look for"),
    PickerRow("length_penalty", "Shorter is better",
              "From 0 down to -1: minus the reply's length over the target length, so shorter replies score higher.",
              "max_chars", "Target length (characters)"),
    PickerRow("python", "Your Python function",
              "For engineers: a .py file with def reward(prompt, completion, **row) -> float. Trusted code: it "
              "runs inside the training worker with your rights, so name only files you wrote or checked.",
              "path", "Python file (.py)"),
)
# Presets of the pattern box, named in words; any other regular expression can be typed in.
PATTERN_PRESETS = [("An answer inside <answer>...</answer>", r"<answer>.+?</answer>"),
                   ("Thinking in <think>...</think>, then an answer in tags",
                    r"^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$"),
                   ("Ends with a number", r"\d+\.?\s*$")]
OPTION_DEFAULTS: dict[str, Any] = {"pattern": PATTERN_PRESETS[0][1], "text": "", "max_chars": 200, "path": ""}
SAMPLE_COLUMNS = ["Step", "Prompt", "Completion", "Answer", "Reward", "Score per reward"]


# ---------------------------------------------------------------------------
# Picker values <-> the rewards list (pure)
# ---------------------------------------------------------------------------


def widgets_per_row(row: PickerRow) -> int:
    return 3 if row.option else 2  # checkbox, weight[, option]


def _plain(choice: Any) -> dict:
    return choice.model_dump(mode="json", exclude_none=True) if hasattr(choice, "model_dump") else dict(choice)


def picker_values(rewards: list | None) -> list[Any]:
    """The picker's widget values (row after row: ticked, weight[, option]) for a rewards list; the
    first entry of each name is shown."""
    first: dict[str, dict] = {}
    for c in rewards or []:
        c = _plain(c)
        first.setdefault(c.get("name"), c)
    out: list[Any] = []
    for row in PICKER:
        c = first.get(row.name)
        out += [c is not None, float(c.get("weight", 1.0)) if c else 1.0]
        if row.option:
            v = c.get(row.option) if c else None
            out.append(v if v is not None else OPTION_DEFAULTS[row.option])
    return out


def rewards_from_picker(values: list[Any]) -> list[dict]:
    """The rewards list (as in YAML) for the picker's widget values; the engine checks it (a ticked
    pattern reward with no pattern is named when the run is started)."""
    out, i = [], 0
    for row in PICKER:
        ticked, weight = values[i], values[i + 1]
        option = values[i + 2] if row.option else None
        i += widgets_per_row(row)
        if not ticked:
            continue
        choice: dict[str, Any] = {"name": row.name, "weight": 1.0 if weight in (None, "") else float(weight)}
        if row.option == "max_chars":
            choice["max_chars"] = int(option) if option not in (None, "") else None
        elif row.option:
            choice[row.option] = (option or "").strip() or None
        out.append({k: v for k, v in choice.items() if v is not None})
    return out


HISTORY = 8  # the picker's recent writes, to tell an echo of one from a real refill


def picker_refill(value: Any, shown: list[Any], history: list[list[dict]]) -> tuple[Any, list[Any]]:
    """(state value or None, new picker values with None = leave that widget) for what was put in the
    picker's state. The objective section refilling its settings writes YAML text: the picker then
    shows it, unless it is one of the picker's own earlier lists coming back late (`history`, newest
    last) while the user kept editing; then the newest list is put back instead. The picker's own
    edits (lists) are left alone, so nothing is rewritten under the user's cursor."""
    keep = [None] * len(shown)
    if not isinstance(value, str):
        return None, keep
    try:
        rewards = yaml.safe_load(value) or []
        want = picker_values(rewards if isinstance(rewards, list) else [])
    except (yaml.YAMLError, AttributeError, TypeError, ValueError):
        return None, keep
    same = rewards_from_picker  # compared as the picker would write them (weights filled in, one of each)
    seen = [same(picker_values(h)) for h in history]
    if seen and same(want) == seen[-1]:
        return None, keep
    if same(want) in seen:  # a stale echo of an earlier edit: the newest edit stands
        return history[-1], keep
    return None, [None if w == v else w for w, v in zip(want, shown)]


# ---------------------------------------------------------------------------
# The picker (built inside the Train tab's GRPO settings)
# ---------------------------------------------------------------------------


def setting_editor(objective: str, key: str, current: Any = None) -> gr.State | None:
    """For grpo's `rewards`: build the picker here and return the gr.State holding the rewards list
    (the objective section reads it like any setting widget); None for every other setting."""
    if (objective, key) != ("grpo", "rewards"):
        return None
    from tunesmith.engine.objectives.grpo import GRPOSettings

    rewards = [_plain(c) for c in (current if current is not None
                                   else GRPOSettings.model_fields["rewards"].default_factory())]
    values = picker_values(rewards)
    widgets: list[gr.components.Component] = []
    with gr.Group(elem_id="reward-picker"):
        gr.Markdown(T("**Rewards**: tick what makes an answer good. Each reward scores every sampled answer; the "
                      "weights say how much each one counts in the total."), elem_classes="ts-section")
        i = 0
        for row in PICKER:
            with gr.Row(equal_height=True, elem_id=f"reward-{row.name}"):
                widgets.append(gr.Checkbox(value=values[i], label=T(row.label), info=T(row.help), scale=4,
                                           elem_id=f"reward-{row.name}-on"))
                widgets.append(gr.Number(value=values[i + 1], label=T("Weight"), step=0.1, scale=1, min_width=90,
                                         elem_id=f"reward-{row.name}-weight"))
                if row.option == "pattern":
                    widgets.append(localize(gr.Dropdown(choices=PATTERN_PRESETS, value=values[i + 2],
                                                        allow_custom_value=True, label=T(row.option_label), scale=3,
                                                        elem_id="reward-regex-pattern"), PATTERN_PRESETS))
                elif row.option == "max_chars":
                    widgets.append(gr.Number(value=values[i + 2], label=T(row.option_label), precision=0, minimum=1,
                                             scale=3, elem_id="reward-length-target"))
                elif row.option:
                    widgets.append(gr.Textbox(value=values[i + 2], label=T(row.option_label), scale=3,
                                              elem_id=f"reward-{row.name}-{row.option}"))
            i += widgets_per_row(row)
    state = PickerState(rewards)
    history = gr.State([rewards])

    def update(past: list, *vals):
        now = rewards_from_picker(list(vals))
        return now, (past + [now])[-HISTORY:]

    def follow(value: Any, past: list, *shown):
        put_back, values = picker_refill(value, list(shown), past)
        return [gr.skip() if put_back is None else put_back, *(gr.skip() if v is None else v for v in values)]

    for w in widgets:
        w.change(update, [history, *widgets], [state, history], show_progress="hidden")
    state.change(follow, [state, history, *widgets], [state, *widgets], show_progress="hidden")
    return state


class PickerState(gr.State):
    """The rewards list the picker edits. A State has no `input` event of its own; the picker's edits
    are its input, so `input` listens to its changes (the objective section wires settings by either)."""

    def input(self, *args: Any, **kwargs: Any):
        return self.change(*args, **kwargs)


# ---------------------------------------------------------------------------
# Monitor: completion length and KL, and the samples table
# ---------------------------------------------------------------------------


def length_kl_figure(evs: list[dict[str, Any]]) -> go.Figure:
    """Completion length (tokens, left axis) and KL to the base (right axis) per step."""
    pts = monitor.reward_points(evs)
    fig = go.Figure()
    if "completion_length" in pts:
        xs, ys = pts["completion_length"]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=tr("completion length (tokens)"),
                                 line=dict(color="#0ea5e9", width=2)))
    if "kl" in pts:
        xs, ys = pts["kl"]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=tr("KL to the base model"), yaxis="y2",
                                 line=dict(color="#f97316", width=2, dash="dot")))
    fig.update_layout(template="plotly_white", height=240, margin=dict(l=50, r=50, t=20, b=40),
                      xaxis=dict(title=tr("step"), rangemode="tozero"),
                      yaxis=dict(title=tr("tokens"), rangemode="tozero"),
                      yaxis2=dict(title="KL", overlaying="y", side="right", showgrid=False, rangemode="tozero"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"))
    return fig


def samples_frame(evs: list[dict[str, Any]]) -> pd.DataFrame:
    """The latest samples event as a table with translated headers."""
    return pd.DataFrame(monitor.samples_rows(evs), columns=[tr(c) for c in SAMPLE_COLUMNS])


@dataclass
class MonitorExtras:
    box: gr.Column
    chart: gr.Plot
    samples: gr.Dataframe
    seen: gr.State


def build_monitor_extras() -> MonitorExtras:
    """Create the length/KL chart and the samples table (hidden until a run has rewards)."""
    with gr.Column(visible=False, elem_id="grpo-monitor") as box:
        chart = gr.Plot(length_kl_figure([]), show_label=False, elem_id="grpo-length-chart", elem_classes="ts-quiet")
        samples = gr.Dataframe(headers=SAMPLE_COLUMNS, interactive=False, wrap=True, max_height=420,
                               label=T("Recent sampled answers and their scores"), elem_id="samples-table",
                               elem_classes="ts-quiet")
    return MonitorExtras(box, chart, samples, gr.State(None))


def monitor_extras_view(run_id: str | None, seen: Any = None) -> tuple:
    """(column visibility, chart, table, seen key) for a run; gr.skip() when nothing new."""
    if not run_id:
        return gr.Column(visible=False), gr.skip(), gr.skip(), None
    try:
        run = jobs.get_run(run_id)
    except RunError:
        return gr.Column(visible=False), gr.skip(), gr.skip(), None
    evs = events.read_events(run.run_dir)
    key = (run.id, len(evs))
    if key == seen:
        return gr.skip(), gr.skip(), gr.skip(), seen
    if not any(e.get("type") == "train" and "reward" in e for e in evs):
        return gr.Column(visible=False), gr.skip(), gr.skip(), key
    return gr.Column(visible=True), length_kl_figure(evs), samples_frame(evs), key


def wire_monitor_extras(extras: MonitorExtras, timer: gr.Timer, run_id: gr.State) -> None:
    """Refresh on the monitor's timer (it runs while the run is live) and when another run is shown."""
    outputs = [extras.box, extras.chart, extras.samples, extras.seen]
    timer.tick(monitor_extras_view, [run_id, extras.seen], outputs, show_progress="hidden", concurrency_limit=None)
    run_id.change(monitor_extras_view, run_id, outputs, show_progress="hidden")
