"""Runs tab: every run in the registry, whoever started it (studio or CLI).

The table is refreshed every few seconds (only sent when it changed). Pick a
run to open it in the Train monitor, copy its settings back into the form,
see why it failed, or delete it. Queued runs show their place in the queue
("#1" starts next) and the GPUs they asked for; they can be moved up or down
or cancelled (engine.scheduler).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import gradio as gr
import pandas as pd

from tunesmith.engine import catalog, jobs, scheduler

from .context import StudioContext, config_values, user_errors

REFRESH_SECONDS = 5.0
COLUMNS = ["id", "name", "status", "queue", "gpus", "model", "dataset", "steps", "last loss", "created"]


@dataclass
class RunsHandles:
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
    s = scheduler.slot(run_id)
    if s is None:
        return ""
    if s.assigned is not None:
        return ",".join(map(str, s.assigned)) or "cpu"
    if isinstance(s.gpus, list):
        return ",".join(map(str, s.gpus))
    return "auto" if s.gpus == "auto" else f"{s.gpus} GPUs"


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
    return pd.DataFrame(rows, columns=COLUMNS)


def refresh(current: str | None, seen: list | None):
    """(table, run picker, seen) — all skipped when nothing changed since `seen`."""
    df = runs_frame()
    key = df.values.tolist()
    if key == seen:
        return gr.skip(), gr.skip(), seen
    ids = df["id"].tolist()
    choices = [(f"{row.name} ({row.id}, {row.status})", row.id) for row in df.itertuples()]
    return df, gr.update(choices=choices, value=current if current in ids else None), key


def run_error(run_id: str | None):
    if not run_id:
        return gr.update(value="", visible=False)
    try:
        run = jobs.get_run(run_id)
    except Exception:  # deleted meanwhile; the next refresh drops it
        return gr.update(value="", visible=False)
    return gr.update(value=run.error or "", visible=run.status == "failed" and bool(run.error))


def build_runs_tab(ctx: StudioContext) -> RunsHandles:
    table = gr.Dataframe(value=runs_frame(), headers=COLUMNS, interactive=False, wrap=True, label="Runs",
                         elem_id="runs-table", max_height=420, elem_classes="ts-quiet")
    with gr.Row():
        run = gr.Dropdown(choices=[], label="Run", info="Or click a row in the table.", elem_id="runs-pick", scale=4,
                          elem_classes="ts-quiet")
        refresh_btn = gr.Button("Refresh", size="sm", scale=1, min_width=80)
        open_btn = gr.Button("Open in Train monitor", variant="primary", scale=2, elem_id="runs-open")
        reuse = gr.Button("Reuse its settings", scale=2, elem_id="runs-reuse")
        resume_btn = gr.Button("Resume", scale=1, min_width=90, elem_id="runs-resume")
        delete = gr.Button("Delete…", variant="stop", scale=1, min_width=90)
    with gr.Row():
        gr.Markdown("Queued runs start in order (#1 next) when their GPUs are free.", elem_classes="ts-hint")
        queue_up = gr.Button("Move up", size="sm", scale=0, min_width=90, elem_id="runs-queue-up")
        queue_down = gr.Button("Move down", size="sm", scale=0, min_width=90, elem_id="runs-queue-down")
        cancel_btn = gr.Button("Cancel queued run", size="sm", variant="stop", scale=0, min_width=140,
                               elem_id="runs-cancel")
    with gr.Row(visible=False) as confirm_row:
        confirm_text = gr.Markdown()
        confirm = gr.Button("Yes, delete it and its files", variant="stop")
        cancel = gr.Button("Cancel")
    error = gr.Code(label="Why it failed (last lines of worker.log)", language="shell", visible=False,
                    interactive=False, elem_id="runs-error")
    timer = gr.Timer(REFRESH_SECONDS, active=True)
    seen = gr.State(None)

    def pick_row(df: pd.DataFrame, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return df.iloc[row]["id"] if 0 <= row < len(df) else gr.skip()

    def open_run(run_id: str | None):
        if not run_id:
            raise gr.Error("Pick a run first.")
        return run_id, gr.Tabs(selected="train")

    def ask_delete(run_id: str | None):
        if not run_id:
            raise gr.Error("Pick a run first.")
        return gr.update(visible=True), f"Delete run **{run_id}** and everything in its folder?"

    @user_errors
    def reuse_settings(run_id: str | None) -> dict:
        """Fill every tab's form with the run's config (to repeat or tweak it)."""
        if not run_id:
            raise gr.Error("Pick a run first.")
        cfg = jobs.load_config(run_id)
        shown = config_values(cfg, list(ctx.fields))
        out: dict = {ctx.fields[p]: v for p, v in shown.items()}
        out[ctx.applied_overrides] = catalog.recommended_overrides(cfg.model.name_or_path)
        out[ctx.tabs] = gr.Tabs(selected="train")
        gr.Info(f"Loaded the settings of {run_id}. Change what you like and start a new run.")
        return out

    @user_errors
    def resume_run(run_id: str | None):
        """Continue a stopped or failed run from its newest checkpoint and watch it."""
        if not run_id:
            raise gr.Error("Pick a run first.")
        jobs.resume(run_id)
        gr.Info(f"Resuming {run_id} from its last checkpoint.")
        return run_id, gr.Tabs(selected="train")

    @user_errors
    def move_run(run_id: str | None, where: str):
        if not run_id:
            raise gr.Error("Pick a queued run first.")
        place = scheduler.move(run_id, where)
        gr.Info(f"{run_id} is now number {place} in the queue.")

    @user_errors
    def cancel_run(run_id: str | None):
        if not run_id:
            raise gr.Error("Pick a queued run first.")
        jobs.cancel(run_id)
        gr.Info(f"Cancelled {run_id}; it will not start.")

    @user_errors
    def do_delete(run_id: str | None, shown: str | None):
        jobs.delete(run_id)
        gr.Info(f"Deleted run {run_id}.")
        return gr.update(visible=False), None, (None if shown == run_id else shown)

    # ---- events ---------------------------------------------------------------
    refresh_outputs = [table, run, seen]
    timer.tick(refresh, [run, seen], refresh_outputs, show_progress="hidden", concurrency_limit=None)
    refresh_btn.click(lambda cur: refresh(cur, None), run, refresh_outputs)
    ctx.demo.load(refresh, [run, seen], refresh_outputs, show_progress="hidden")
    table.select(pick_row, table, run)
    run.change(run_error, run, error, show_progress="hidden")
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
    return RunsHandles(table=table, run=run, open=open_btn, reuse=reuse, resume=resume_btn, delete=delete,
                       queue_up=queue_up, queue_down=queue_down, cancel=cancel_btn, error=error, timer=timer)
