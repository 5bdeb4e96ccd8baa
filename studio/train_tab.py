"""Train tab: optimization settings, Start / Stop / Show YAML, and the live monitor.

Start builds a RunConfig from every tab's form and hands it to
engine.jobs.submit(); the engine owns the run from then on (its own process,
its own directory), so closing or reloading the page never stops it. The
monitor shows whichever run `ctx.run_id` points at: Start, Runs -> Open and
page load all set it. While that run is live a 1 s gr.Timer polls
engine.jobs.get_run() and events.jsonl; it switches itself off when the run
ends. Polls that find nothing new send nothing to the browser.

Picking a model applies that model's recommended settings to the form (from
engine.catalog), and undoes the previous model's ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from tunesmith.engine import catalog, events, jobs
from tunesmith.engine.errors import RunError

from . import monitor
from .context import StudioContext, form_value, override_updates, user_errors

POLL_SECONDS = 1.0


@dataclass
class TrainHandles:
    start: gr.Button
    stop: gr.Button
    show_yaml: gr.Button
    yaml: gr.Code
    stats: gr.HTML
    progress: gr.HTML
    chart: gr.Plot
    error: gr.Code
    timer: gr.Timer


# ---------------------------------------------------------------------------
# Monitor rendering (one function for open, poll and reload)
# ---------------------------------------------------------------------------


def monitor_view(run_id: str | None, seen: tuple | None = None) -> tuple:
    """(stats html, progress html, figure, error update, timer, seen key) for a run.

    `seen` is the key of what the browser already shows; when nothing changed
    every output is gr.skip() so an idle poll costs nothing.
    """
    if not run_id:
        return (monitor.EMPTY_STATS_HTML, "", monitor.loss_figure([]), gr.update(value="", visible=False),
                gr.Timer(active=False), None)
    try:
        run = jobs.get_run(run_id)
    except RunError:
        return (monitor.EMPTY_STATS_HTML.replace("Start a run", f"Run {run_id} no longer exists. Start a run"),
                "", monitor.loss_figure([]), gr.update(value="", visible=False), gr.Timer(active=False), None)
    evs = events.read_events(run.run_dir)
    key = (run.id, len(evs), run.status, run.step)
    summary = monitor.summarize(run, evs)
    if key == seen:
        return (gr.skip(),) * 4 + (gr.Timer(active=summary.live), seen)
    return (
        monitor.stats_html(run, summary),
        monitor.progress_html(summary),
        monitor.loss_figure(evs),
        gr.update(value=summary.error, visible=bool(summary.error)),
        gr.Timer(active=summary.live),
        key,
    )


def latest_running_run() -> str | None:
    live = [r for r in jobs.list_runs() if r.status in monitor.LIVE_STATES]
    return max(live, key=lambda r: r.created_at).id if live else None


def initial_run(saved: str | None) -> str | None:
    """The run to show when a page opens: the one this browser last showed, if it
    still exists, else the most recent live run."""
    if saved:
        try:
            return jobs.get_run(saved).id
        except RunError:
            pass
    return latest_running_run()


def open_initial_run(saved: str | None):
    """Page load: (run to show, tab). A live run brings the Train tab forward."""
    run_id = initial_run(saved)
    live = bool(run_id) and jobs.get_run(run_id).status in monitor.LIVE_STATES
    return run_id, (gr.Tabs(selected="train") if live else gr.skip())


# ---------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------


def build_train_tab(ctx: StudioContext) -> TrainHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            with gr.Group():
                gr.Markdown("### Schedule", elem_classes="ts-section")
                with gr.Row():
                    ctx.field("training.num_epochs", gr.Number, minimum=0.01, step=0.5, label="Epochs")
                    ctx.field("training.max_steps", gr.Number, precision=0, minimum=0,
                              label="Max steps (0 = use epochs)", elem_id="max-steps")
                with gr.Row():
                    ctx.field("training.learning_rate", gr.Number, minimum=0, step=1e-5, label="Learning rate")
                    ctx.field("training.lr_scheduler", gr.Dropdown,
                              choices=["linear", "cosine", "constant", "constant_with_warmup"], label="LR schedule")
                ctx.field("training.warmup_ratio", gr.Slider, 0.0, 0.5, step=0.01, label="Warmup fraction")
            with gr.Group():
                gr.Markdown("### Batch", elem_classes="ts-section")
                with gr.Row():
                    ctx.field("training.batch_size", gr.Slider, 1, 64, step=1, label="Batch size")
                    ctx.field("training.gradient_accumulation", gr.Slider, 1, 64, step=1,
                              label="Gradient accumulation")
            with gr.Accordion("Optimizer and precision", open=False):
                with gr.Row():
                    ctx.field("training.optimizer", gr.Dropdown,
                              choices=["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor"],
                              label="Optimizer")
                    ctx.field("training.weight_decay", gr.Number, minimum=0, step=0.01, label="Weight decay")
                with gr.Row():
                    ctx.field("training.max_grad_norm", gr.Number, minimum=0, step=0.1, label="Gradient clipping")
                    ctx.field("training.seed", gr.Number, precision=0, label="Seed")
                ctx.field("training.precision", gr.Radio, choices=["auto", "bf16", "fp16", "fp32"], label="Precision")
                ctx.field("training.gradient_checkpointing", gr.Checkbox, label="Gradient checkpointing")
                ctx.field("kernels", gr.Radio, choices=["auto", "on", "off"], label="Tunesmith kernels")
                ctx.field("training.memory_mode", gr.Radio, choices=["auto", "speed", "memory"],
                          label="Kernels: speed or memory")
            with gr.Accordion("Logging and checkpoints", open=False):
                with gr.Row():
                    ctx.field("training.logging_steps", gr.Number, precision=0, minimum=1, label="Log every N steps")
                    ctx.field("training.save_steps", gr.Number, precision=0, minimum=1, label="Save every N steps")
                    ctx.field("training.eval_steps", gr.Number, precision=0, minimum=0,
                              label="Eval every N steps (0 = at saves)")
            ctx.field("output.run_name", gr.Textbox, label="Run name", placeholder="picked from model and data",
                      elem_id="run-name")
            with gr.Row():
                start = gr.Button("Start training", variant="primary", elem_id="start")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
                show_yaml = gr.Button("Show YAML", variant="secondary", elem_id="show-yaml")
            yaml_box = gr.Code(language="yaml", label="Config (save as run.yaml, then: tunesmith train run.yaml)",
                               visible=False, interactive=False, elem_id="yaml")
        with gr.Column(scale=3, min_width=380, elem_classes="ts-monitor"):
            # ts-quiet: no "processing 0.1s" flicker on the widgets the timer refreshes (assets/studio.css).
            stats = gr.HTML(monitor.EMPTY_STATS_HTML, elem_id="run-stats", elem_classes="ts-quiet")
            progress = gr.HTML("", elem_id="run-progress", elem_classes="ts-quiet")
            chart = gr.Plot(monitor.loss_figure([]), label="Training loss", show_label=False, elem_id="loss-chart",
                            elem_classes="ts-quiet")
            error = gr.Code(label="Worker log (last lines)", language="shell", visible=False, interactive=False,
                            elem_id="run-error", elem_classes="ts-quiet")
    timer = gr.Timer(POLL_SECONDS, active=False)
    seen = gr.State(None)

    # ---- handlers ---------------------------------------------------------------

    @user_errors
    def start_run(values: dict) -> str:
        cfg = ctx.config_from(values)
        try:
            run_id = jobs.submit(cfg, dedupe=True)
        except jobs.DuplicateSubmit as e:  # a double click: one run, and say so
            gr.Info(str(e))
            return e.run_id
        gr.Info(f"Started run {run_id}. Closing this page does not stop it.")
        return run_id

    @user_errors
    def stop_run(run_id: str | None) -> None:
        if not run_id:
            raise gr.Error("No run is selected. Open one from the Runs tab.")
        run = jobs.stop(run_id)
        if run.finished:
            gr.Info(f"Run {run_id} has already {run.status}.")
        else:
            gr.Info("Stopping after the current step; the adapter so far is saved.")

    @user_errors
    def yaml_text(values: dict):
        return gr.update(value=ctx.config_from(values).to_yaml(), visible=True)

    def open_run(run_id: str | None):
        return (*monitor_view(run_id), run_id)

    def apply_recommended(values: dict) -> dict:
        model_name = values[ctx.fields["model.name_or_path"]]
        old = values[ctx.applied_overrides] or {}
        new = catalog.recommended_overrides((model_name or "").strip())
        out: dict[Any, Any] = {ctx.applied_overrides: new}
        for path, value in override_updates(old, new).items():
            if path in ctx.fields:
                out[ctx.fields[path]] = form_value(path, value)
        if new:
            gr.Info("Applied the recommended settings for this model (Train tab). You can still change them.")
        return out

    # ---- events -------------------------------------------------------------------
    monitor_outputs = [stats, progress, chart, error, timer, seen]
    # once: clicks while a Start is being handled are dropped by the page (the engine refuses repeats too).
    start.click(start_run, ctx.config_inputs(), ctx.run_id, trigger_mode="once", concurrency_limit=1)
    stop.click(stop_run, ctx.run_id, None).then(monitor_view, ctx.run_id, monitor_outputs, show_progress="hidden")
    show_yaml.click(yaml_text, ctx.config_inputs(), yaml_box)
    ctx.run_id.change(open_run, ctx.run_id, [*monitor_outputs, ctx.saved_run_id], show_progress="hidden")
    timer.tick(monitor_view, [ctx.run_id, seen], monitor_outputs, show_progress="hidden", concurrency_limit=None)
    model_field = ctx.fields["model.name_or_path"]
    # .input, not .change: only a model the user picks brings its settings (not one
    # loaded from a run's config by Runs -> Copy settings).
    model_field.input(apply_recommended, {model_field, ctx.applied_overrides},
                       [ctx.applied_overrides, *ctx.fields.values()], show_progress="hidden")
    ctx.demo.load(open_initial_run, ctx.saved_run_id, [ctx.run_id, ctx.tabs], show_progress="hidden")

    return TrainHandles(start=start, stop=stop, show_yaml=show_yaml, yaml=yaml_box, stats=stats,
                        progress=progress, chart=chart, error=error, timer=timer)
