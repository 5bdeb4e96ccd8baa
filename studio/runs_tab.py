"""Runs tab: every run in the registry, whoever started it (studio or CLI).

The table is refreshed every few seconds (only sent when it changed). Pick a
run to open it in the Train monitor, copy its settings back into the form,
see why it failed, download its log and settings, or delete it. Pick two or
more under "Compare runs" to overlay their loss curves and list the settings
that differ between them. Queued runs show their place in the queue
("#1" starts next) and the GPUs they asked for; they can be moved up or down
or cancelled (engine.scheduler).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from tunesmith.engine import catalog, events, jobs, scheduler
from tunesmith.engine.errors import RunError
from tunesmith.engine.trackers import tensorboard_command, tensorboard_logs

from . import monitor
from .context import StudioContext, config_values
from .i18n import T, tr
from .notices import toast_errors

REFRESH_SECONDS = 5.0
COLUMNS = ["id", "name", "status", "queue", "gpus", "model", "dataset", "steps", "last loss", "created"]


@dataclass
class RunsHandles:
    compare: gr.Dropdown
    compare_chart: gr.Plot
    compare_table: gr.Dataframe
    files: gr.File
    table: gr.Dataframe
    run: gr.Dropdown
    open: gr.Button
    reuse: gr.Button
    resume: gr.Button
    delete: gr.Button
    queue_up: gr.Button
    queue_down: gr.Button
    cancel: gr.Button
    error: gr.Code
    timer: gr.Timer


def gpus_cell(run_id: str) -> str:
    """The GPUs a run was given ('0,1', 'cpu') or, while it waits, asked for ('auto', '2 GPUs')."""
    return scheduler.gpus_label(run_id, count="{n} GPUs") or ""


def runs_frame() -> pd.DataFrame:
    rows = []
    pos = scheduler.positions()
    for r in sorted(jobs.list_runs(), key=lambda r: r.created_at, reverse=True):
        steps = f"{r.step} / {r.max_steps}" if r.max_steps else str(r.step)
        rows.append([
            r.id, r.name, r.status, f"#{pos[r.id]}" if r.id in pos else "", gpus_cell(r.id),
            r.model, ", ".join(r.datasets), steps,
            "" if r.last_loss is None else f"{r.last_loss:.4f}",
            datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M"),
        ])
    return pd.DataFrame(rows, columns=[tr(c) for c in COLUMNS])


# ---------------------------------------------------------------------------
# Comparing runs (pure: unit tested)
# ---------------------------------------------------------------------------

RUN_FILES = ("config.yaml", "worker.log", "events.jsonl")


def run_files(run_id: str | None) -> list[Path]:
    """The files of a run a person may want to keep: its settings, its log, its metrics."""
    if not run_id:
        return []
    try:
        run = jobs.get_run(run_id)
    except RunError:
        return []
    # [issue 15] with training.report_to tensorboard, its event files too
    return [run.run_dir / f for f in RUN_FILES if (run.run_dir / f).is_file()] + tensorboard_logs(run.run_dir)


def tensorboard_hint(run_id: str | None) -> dict:
    """[issue 15] How to open a run's TensorBoard logs, shown when it kept them."""
    try:
        run_dir = jobs.get_run(run_id).run_dir if run_id else None
    except RunError:
        run_dir = None
    if run_dir is None or not tensorboard_logs(run_dir):
        return gr.update(value="", visible=False)
    return gr.update(visible=True, value=tr("TensorBoard logs: download the event files above, or view them "
                                            "with `{how}`", how=tensorboard_command(run_dir)))


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = ", ".join(map(str, v)) if isinstance(v, list) else v
    return out


def settings_diff(configs: dict[str, dict]) -> pd.DataFrame:
    """One row per setting whose value differs between the runs ({run label: config dict}), one column per run."""
    flat = {name: _flatten(cfg) for name, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    rows = [[k, *(("" if f.get(k) is None else str(f.get(k))) for f in flat.values())]
            for k in keys if len({str(f.get(k)) for f in flat.values()}) > 1]
    return pd.DataFrame(rows, columns=[tr("setting"), *flat])


def compare_figure(curves: dict[str, list[dict]]) -> go.Figure:
    """Each run's smoothed training loss as a line and its eval loss as dotted markers, on one chart."""
    fig = go.Figure()
    palette = ["#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#0ea5e9", "#a855f7"]
    for i, (name, evs) in enumerate(curves.items()):
        colour = palette[i % len(palette)]
        steps, losses, eval_steps, eval_losses = monitor.loss_points(evs)
        if steps:
            fig.add_trace(go.Scatter(x=steps, y=monitor.ema(losses), mode="lines", name=f"{name} · {tr('loss')}",
                                     line=dict(color=colour, width=2.5)))
        if eval_steps:
            fig.add_trace(go.Scatter(x=eval_steps, y=eval_losses, mode="markers+lines",
                                     name=f"{name} · {tr('eval loss')}",
                                     marker=dict(color=colour, size=8, symbol="diamond"),
                                     line=dict(color=colour, width=1, dash="dot")))
    fig.update_layout(template="plotly_white", height=340, margin=dict(l=50, r=20, t=20, b=45),
                      xaxis=dict(title=tr("step"), rangemode="tozero"), yaxis=dict(title=tr("loss")),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"))
    return fig


def compare_runs(run_ids: list[str] | None):
    """(figure, settings-diff table) for two or more runs."""
    run_ids = list(run_ids or [])
    if len(run_ids) < 2:
        raise gr.Error(tr("Pick two or more runs to compare."), print_exception=False)
    curves, configs = {}, {}
    for rid in run_ids:
        run = jobs.get_run(rid)
        label = run.name if run.name not in curves else f"{run.name} ({run.id})"
        curves[label] = events.read_events(run.run_dir)
        configs[label] = jobs.load_config(run).model_dump(mode="json")
    return compare_figure(curves), settings_diff(configs)


def refresh(current: str | None, seen: list | None):
    """(table, run picker, seen) — all skipped when nothing changed since `seen`."""
    df = runs_frame()
    key = df.values.tolist()
    if key == seen:
        return gr.skip(), gr.skip(), seen, gr.skip()
    ids = df.iloc[:, 0].tolist()
    choices = [(f"{name} ({rid}, {status})", rid) for rid, name, status in df.iloc[:, :3].itertuples(index=False)]
    return (df, gr.update(choices=choices, value=current if current in ids else None), key,
            gr.update(choices=choices))


def run_error(run_id: str | None):
    if not run_id:
        return gr.update(value="", visible=False)
    try:
        run = jobs.get_run(run_id)
    except Exception:  # deleted meanwhile; the next refresh drops it
        return gr.update(value="", visible=False)
    return gr.update(value=run.error or "", visible=run.status == "failed" and bool(run.error))


def build_runs_tab(ctx: StudioContext) -> RunsHandles:
    table = gr.Dataframe(value=runs_frame(), headers=COLUMNS, interactive=False, wrap=True, label=T("Runs"),
                         elem_id="runs-table", max_height=420, elem_classes="ts-quiet")
    with gr.Row():
        run = gr.Dropdown(choices=[], label=T("Run"), info=T("Or click a row in the table."), elem_id="runs-pick",
                          scale=4, elem_classes="ts-quiet")
        refresh_btn = gr.Button(T("Refresh"), size="sm", scale=1, min_width=80)
        open_btn = gr.Button(T("Open in Train monitor"), variant="primary", scale=2, elem_id="runs-open")
        reuse = gr.Button(T("Reuse its settings"), scale=2, elem_id="runs-reuse")
        resume_btn = gr.Button(T("Resume"), scale=1, min_width=90, elem_id="runs-resume")
        delete = gr.Button(T("Delete…"), variant="stop", scale=1, min_width=90)
    with gr.Row():
        gr.Markdown(T("Queued runs start in order (#1 next) when their GPUs are free."), elem_classes="ts-hint")
        queue_up = gr.Button(T("Move up"), size="sm", scale=0, min_width=90, elem_id="runs-queue-up")
        queue_down = gr.Button(T("Move down"), size="sm", scale=0, min_width=90, elem_id="runs-queue-down")
        cancel_btn = gr.Button(T("Cancel queued run"), size="sm", variant="stop", scale=0, min_width=140,
                               elem_id="runs-cancel")
    with gr.Row(visible=False) as confirm_row:
        confirm_text = gr.Markdown()
        confirm = gr.Button(T("Yes, delete it and its files"), variant="stop")
        cancel = gr.Button(T("Cancel"))
    files = gr.File(label=T("Its settings, log and metrics (download)"), file_count="multiple", interactive=False,
                    visible=False, elem_id="runs-files")
    tb_hint = gr.Markdown(visible=False, elem_id="runs-tensorboard")  # [issue 15]
    error = gr.Code(label=T("Why it failed (last lines of its log)"), language="shell", visible=False,
                    interactive=False, elem_id="runs-error")
    with gr.Accordion(T("Compare runs"), open=False, elem_id="runs-compare-box"):
        with gr.Row():
            compare = gr.Dropdown(choices=[], multiselect=True, label=T("Runs to compare"), scale=4,
                                  info=T("Pick two or more: their loss curves on one chart, and the settings "
                                         "that differ."), elem_id="runs-compare")
            compare_btn = gr.Button(T("Compare"), variant="primary", scale=1, elem_id="runs-compare-btn")
        compare_chart = gr.Plot(visible=False, show_label=False, elem_id="runs-compare-chart")
        compare_table = gr.Dataframe(label=T("Settings that differ"), interactive=False, wrap=True, visible=False,
                                     elem_id="runs-compare-table")
    timer = gr.Timer(REFRESH_SECONDS, active=True)
    seen = gr.State(None)

    def pick_row(df: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return df.iloc[row, 0] if 0 <= row < len(df) else gr.skip()

    @toast_errors
    def open_run(run_id: str | None):
        if not run_id:
            raise gr.Error(tr("Pick a run first."), print_exception=False)
        return run_id, gr.Tabs(selected="train")

    @toast_errors
    def ask_delete(run_id: str | None):
        if not run_id:
            raise gr.Error(tr("Pick a run first."), print_exception=False)
        return gr.update(visible=True), tr("Delete run **{run}** and everything in its folder?", run=run_id)

    @toast_errors
    def reuse_settings(run_id: str | None) -> dict:
        """Fill every tab's form with the run's config (to repeat or tweak it)."""
        if not run_id:
            raise gr.Error(tr("Pick a run first."), print_exception=False)
        cfg = jobs.load_config(run_id)
        shown = config_values(cfg, list(ctx.fields))
        out: dict = {ctx.fields[p]: v for p, v in shown.items()}
        out[ctx.applied_overrides] = catalog.recommended_overrides(cfg.model.name_or_path)
        out[ctx.tabs] = gr.Tabs(selected="train")
        gr.Info(tr("Loaded the settings of {run}. Change what you like and start a new run.", run=run_id))
        return out

    @toast_errors
    def resume_run(run_id: str | None):
        """Continue a stopped or failed run from its newest checkpoint and watch it."""
        if not run_id:
            raise gr.Error(tr("Pick a run first."), print_exception=False)
        jobs.resume(run_id)
        gr.Info(tr("Resuming {run} from its last checkpoint.", run=run_id))
        return run_id, gr.Tabs(selected="train")

    @toast_errors
    def move_run(run_id: str | None, where: str):
        if not run_id:
            raise gr.Error(tr("Pick a queued run first."), print_exception=False)
        place = scheduler.move(run_id, where)
        gr.Info(tr("{run} is now number {place} in the queue.", run=run_id, place=place))

    @toast_errors
    def cancel_run(run_id: str | None):
        if not run_id:
            raise gr.Error(tr("Pick a queued run first."), print_exception=False)
        jobs.cancel(run_id)
        gr.Info(tr("Cancelled {run}; it will not start.", run=run_id))

    @toast_errors
    def do_delete(run_id: str | None, shown: str | None):
        jobs.delete(run_id)
        gr.Info(tr("Deleted run {run}.", run=run_id))
        return gr.update(visible=False), None, (None if shown == run_id else shown)

    def picked(run_id: str | None):
        found = run_files(run_id)
        return (run_error(run_id), gr.update(value=[str(f) for f in found] or None, visible=bool(found)),
                tensorboard_hint(run_id))

    @toast_errors
    def show_comparison(run_ids: list[str] | None):
        fig, diff = compare_runs(run_ids)
        return gr.update(value=fig, visible=True), gr.update(value=diff, visible=True)

    # ---- events ---------------------------------------------------------------
    refresh_outputs = [table, run, seen, compare]
    timer.tick(refresh, [run, seen], refresh_outputs, show_progress="hidden", concurrency_limit=None)
    refresh_btn.click(lambda cur: refresh(cur, None), run, refresh_outputs)
    ctx.demo.load(refresh, [run, seen], refresh_outputs, show_progress="hidden")
    table.select(pick_row, table, run)
    run.change(picked, run, [error, files, tb_hint], show_progress="hidden")
    open_btn.click(open_run, run, [ctx.run_id, ctx.tabs])
    resume_btn.click(resume_run, run, [ctx.run_id, ctx.tabs])
    reuse.click(reuse_settings, run, [*ctx.fields.values(), ctx.applied_overrides, ctx.tabs])
    delete.click(ask_delete, run, [confirm_row, confirm_text])
    for btn, where in ((queue_up, "up"), (queue_down, "down")):
        btn.click(lambda rid, w=where: move_run(rid, w), run, None).then(
            lambda cur: refresh(cur, None), run, refresh_outputs)
    cancel_btn.click(cancel_run, run, None).then(lambda cur: refresh(cur, None), run, refresh_outputs)
    cancel.click(lambda: gr.update(visible=False), None, confirm_row)
    confirm.click(do_delete, [run, ctx.run_id], [confirm_row, run, ctx.run_id]).then(
        lambda cur: refresh(cur, None), run, refresh_outputs)
    compare_btn.click(show_comparison, compare, [compare_chart, compare_table])
    return RunsHandles(table=table, run=run, open=open_btn, reuse=reuse, resume=resume_btn, delete=delete,
                       queue_up=queue_up, queue_down=queue_down, cancel=cancel_btn,
                       error=error, timer=timer, compare=compare, compare_chart=compare_chart,
                       compare_table=compare_table, files=files)
