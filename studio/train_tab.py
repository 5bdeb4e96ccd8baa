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

A summary card above Start says what will be trained (model, datasets with
their row counts, method, length), in step with the other tabs. The whole form
is kept in the browser (gr.BrowserState), so a reload brings it back.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import yaml

from tunesmith.engine import catalog, events, jobs, scheduler
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import RunError, TunesmithError

from . import grpo_panel, monitor
from .context import StudioContext, field_help, form_value, override_updates
from .i18n import T, localize, tr
from .notices import toast_errors
from .gpu_panel import fit_line_markdown

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
    summary: gr.Markdown


# ---------------------------------------------------------------------------
# Monitor rendering (one function for open, poll and reload)
# ---------------------------------------------------------------------------


def monitor_view(run_id: str | None, seen: tuple | None = None) -> tuple:
    """(stats html, progress html, figure, error update, timer, seen key) for a run.

    `seen` is the key of what the browser already shows; when nothing changed
    every output is gr.skip() so an idle poll costs nothing.
    """
    if not run_id:
        return (monitor.empty_stats_html(), "", monitor.loss_figure([]), gr.update(value="", visible=False),
                gr.Timer(active=False), None)
    try:
        run = jobs.get_run(run_id)
    except RunError:
        return (tr("Run {run} no longer exists.", run=run_id) + monitor.empty_stats_html(),
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


LR_SCHEDULES = [("Straight down (linear)", "linear"), ("Smooth curve (cosine)", "cosine"),
                ("Constant", "constant"), ("Constant after warm-up", "constant_with_warmup")]
PRECISIONS = [("Automatic", "auto"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32 (slowest, most exact)", "fp32")]
KERNELS = [("Where they apply (auto)", "auto"), ("On", "on"), ("Off (stock code)", "off")]
MEMORY_MODES = [("Automatic", "auto"), ("Fastest", "speed"), ("Least memory", "memory")]

# ---------------------------------------------------------------------------
# What will be trained, and the form kept across reloads
# ---------------------------------------------------------------------------

METHOD_NAMES = {"qlora": "QLoRA (4-bit, least memory)", "lora": "LoRA (16-bit)", "full": "Full fine-tune (all weights)",
                "freeze": "Freeze (only the last layers)"}
OVERRIDES_KEY = "__overrides__"  # where the saved form keeps the applied recommended settings


@functools.lru_cache(maxsize=64)
def _row_count(ref: str, stamp: float) -> int | None:
    from tunesmith.engine.data import inspect as data_inspect

    try:
        return data_inspect.peek_dataset(ref, sample=1).n_rows
    except (TunesmithError, OSError):
        return None


def row_count(ref: str) -> int | None:
    """Rows in a dataset or file (cached while its file is unchanged); None when it cannot be read here."""
    from tunesmith.engine.data.examples import resolve_ref

    try:
        _, src, _entry = resolve_ref(ref)
        stamp = Path(str(src)).stat().st_mtime if src and Path(str(src)).exists() else 0.0
    except (TunesmithError, OSError):
        return None
    return _row_count(ref, stamp)


def summary_markdown(cfg: RunConfig) -> str:
    """The card above Start: which model, which datasets (with rows), how."""
    sets = []
    # a dataset listed twice is trained twice per pass (the demo weights its identity set so): one entry, "x 2"
    times = {ref: cfg.data.datasets.count(ref) for ref in cfg.data.datasets}
    for ref in times:
        n = row_count(ref)
        sets.append(f"**{html.escape(ref)}**" + (tr(" ({n} rows)", n=f"{n:,}") if n is not None else "")
                    + (tr(" x {k}, listed {k} times", k=times[ref]) if times[ref] > 1 else ""))
    t = cfg.training
    length = (tr("{n} steps", n=t.max_steps) if t.max_steps else tr("{n} passes over the data", n=f"{t.num_epochs:g}"))
    lines = [tr("**You will train** {model}", model=f"`{cfg.model.name_or_path}`"),
             tr("**on** {datasets}", datasets=" + ".join(sets)),
             tr("**how**: {method}, {length}, learning rate {lr:g}", method=tr(METHOD_NAMES[cfg.method]),
                length=length, lr=t.learning_rate)]
    if len(cfg.data.datasets) > 1:
        lines.append(tr("Several datasets are mixed into one. Remove any you do not want on the Data tab."))
    if t.early_stopping_patience:
        lines.append(tr("Stops early when the held-out loss has not improved for {n} checks.",
                        n=t.early_stopping_patience))
    return "\n\n".join(lines)


def saved_form(ctx: StudioContext, values: dict) -> dict:
    """The form as the browser keeps it: {dotted path: widget value} plus the applied overrides."""
    by_comp = {comp: path for path, comp in ctx.fields.items()}
    out = {by_comp[c]: v for c, v in values.items() if c in by_comp}
    out[OVERRIDES_KEY] = values.get(ctx.applied_overrides) or {}
    return out


def restored_form(ctx: StudioContext, saved: dict | None) -> dict:
    """Widget updates that put a saved form back (nothing when none was saved)."""
    if not saved:
        return {}
    out: dict[Any, Any] = {ctx.fields[p]: v for p, v in saved.items() if p in ctx.fields and v is not None}
    if isinstance(saved.get(OVERRIDES_KEY), dict):
        out[ctx.applied_overrides] = saved[OVERRIDES_KEY]
    return out


# ---------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------


def _top_level(ctx: StudioContext, make: Callable[[], Any]) -> Any:
    """Create a component at the top of the page rather than inside this tab: Gradio mounts a tab's
    components only once it is opened, and a gr.BrowserState that is not mounted reads as its default
    on page load (the saved form would come back only after the Train tab had been visited)."""
    from gradio.context import Context

    inside, Context.block = Context.block, ctx.demo
    try:
        return make()
    finally:
        Context.block = inside


# ---------------------------------------------------------------------------
# Objective: a plain choice, its sentence, and its settings generated from its Settings model
# ---------------------------------------------------------------------------


def objective_choices() -> list[tuple[str, str]]:
    """(label, name) per registered objective; the label is its description up to the colon."""
    from tunesmith.engine.objectives import get_objective, names

    return [(get_objective(n).description.split(":")[0], n) for n in names()]


def objective_note(name: str) -> str:
    from tunesmith.engine.objectives import get_objective

    try:
        return get_objective(name).description.split(":", 1)[-1].strip()
    except KeyError:
        return ""


def _is_text(field) -> bool:
    """str or str | None: a text box."""
    from typing import get_args

    return field.annotation is str or set(get_args(field.annotation)) == {str, type(None)}


def _is_structured(field) -> bool:
    """Lists and mappings (e.g. grpo's rewards): edited as YAML in a text box."""
    from typing import get_origin

    return get_origin(field.annotation) in (list, dict)


def _default_of(field) -> Any:
    from pydantic_core import PydanticUndefined

    if field.default is not PydanticUndefined:
        return field.default
    return field.default_factory() if field.default_factory is not None else None


def _setting_widget(key: str, field, elem_id: str | None = None) -> gr.components.Component:
    from typing import Literal, get_args, get_origin

    import yaml

    name = field.title or key.replace("_", " ").capitalize()  # Field(title=...) where the key reads badly
    label, info = T(name), T(field.description) if field.description else None
    default = _default_of(field)
    if get_origin(field.annotation) is Literal:
        return gr.Dropdown(choices=list(get_args(field.annotation)), value=default, label=label,
                           info=info, elem_id=elem_id)
    if field.annotation is bool:
        return gr.Checkbox(value=default, label=label, info=info, elem_id=elem_id)
    if _is_text(field):
        return gr.Textbox(value=default or "", label=label, info=info, elem_id=elem_id)
    if _is_structured(field):
        plain = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in default or []] \
            if isinstance(default, list) else default
        return gr.Code(value=yaml.safe_dump(plain, sort_keys=False, allow_unicode=True) if plain else "",
                       language="yaml", label=T(f"{name} (YAML)"), interactive=True, elem_id=elem_id)
    return gr.Number(value=default, label=label, info=info, elem_id=elem_id)


def setting_value(field, value: Any) -> Any:
    """A settings widget's value as the objective's Settings expects it (validation names mistakes)."""
    import yaml

    if _is_text(field):
        return (value or "").strip() or None
    if _is_structured(field) and isinstance(value, str):
        try:
            return yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            return value  # Settings validation then names the field
    return value


def build_objective_section(ctx: StudioContext) -> None:
    """The objective dropdown and, per objective with settings, a group of widgets shown while it is
    picked; their values reach the config through the objective_settings state."""
    from tunesmith.engine.objectives import get_objective, names

    chosen = ctx.initial.objective
    with gr.Group():
        gr.Markdown(T("### What to learn"), elem_classes="ts-section")
        objective = localize(ctx.field("objective", gr.Dropdown, choices=objective_choices(), label=T("Objective"),
                                       elem_id="objective"), objective_choices())
        for name in names():
            T(objective_note(name))  # every note is a key the page may show (tests/studio/test_i18n.py)
        note = gr.Markdown(T(objective_note(chosen)), elem_id="objective-note")
        groups, widgets = {}, []  # widgets: (objective, key, component)
        for name in names():
            settings = get_objective(name).Settings
            if settings is None:
                continue
            current = dict(ctx.initial.objective_settings) if name == chosen else {}
            with gr.Column(visible=name == chosen, elem_id=f"settings-{name}") as col:
                for key, field in settings.model_fields.items():
                    w = grpo_panel.setting_editor(name, key, current.get(key))  # grpo's reward picker
                    if w is None:
                        w = _setting_widget(key, field, elem_id=f"{name}-{key.replace('_', '-')}")
                    if key in current and not isinstance(w, gr.State):  # an editor starts from it itself
                        v = current[key]
                        w.value = yaml.safe_dump(v, sort_keys=False, allow_unicode=True) \
                            if isinstance(v, (list, dict)) else v
                    widgets.append((name, key, w))
            groups[name] = col
    state = gr.State(dict(ctx.initial.objective_settings))
    state.info = field_help("objective_settings")  # the widgets above show it per setting
    ctx.fields["objective_settings"] = state

    def collect(name: str, *values) -> dict:
        out = {}
        for (obj, key, _), v in zip(widgets, values):
            if obj == name:
                v = setting_value(get_objective(obj).Settings.model_fields[key], v)
                if v is not None:
                    out[key] = v
        return out

    def show(name: str):
        return (tr(objective_note(name)), *[gr.Column(visible=obj == name) for obj in groups])

    def fill(name: str, saved: dict | None, *values):
        """The picked objective's widgets from the settings state, when something other than these
        widgets set it (Runs -> Reuse its settings, the form coming back after a reload): keys the
        state lacks show their defaults; widgets that already show their value are left alone (no
        rewrite under the user's cursor)."""
        saved = saved or {}
        out = []
        for (obj, key, _), shown in zip(widgets, values):
            field = get_objective(obj).Settings.model_fields[key] if obj == name else None
            want = saved.get(key, _default_of(field)) if field is not None else None
            if field is None or setting_value(field, shown) == want:
                out.append(gr.skip())
                continue
            if isinstance(want, list):
                want = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in want]
            if isinstance(want, (list, dict)):
                want = yaml.safe_dump(want, sort_keys=False, allow_unicode=True) if want else ""
            out.append("" if want is None else want)
        return out

    comps = [w for _, _, w in widgets]
    # A picked objective (.input: the user's own pick) takes its widgets' values into the state; a
    # restored one (.change from Reuse its settings or a reload) only shows its widgets, and fill
    # draws them from the restored state: never the widgets' old values over restored settings.
    objective.change(show, objective, [note, *groups.values()], show_progress="hidden")
    objective.input(collect, [objective, *comps], state, show_progress="hidden")
    for w in comps:  # .change: edits by hand and by other handlers (fill's own writes change nothing)
        w.change(collect, [objective, *comps], state, show_progress="hidden")
    state.change(fill, [objective, state, *comps], comps, show_progress="hidden")


def build_train_tab(ctx: StudioContext) -> TrainHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            build_objective_section(ctx)
            with gr.Group():
                gr.Markdown(T("### How long"), elem_classes="ts-section")
                with gr.Row():
                    ctx.field("training.num_epochs", gr.Number, minimum=0.01, step=0.5,
                              label=T("Passes over the data (epochs)"))
                    ctx.field("training.max_steps", gr.Number, precision=0, minimum=0,
                              label=T("Stop after N steps (0 = use passes)"), elem_id="max-steps")
                ctx.field("training.learning_rate", gr.Number, minimum=0, step=1e-5,
                          label=T("Learning speed (learning rate)"))
                ctx.field("training.early_stopping_patience", gr.Number, precision=0, minimum=0,
                          label=T("Stop early after N checks without progress (0 = off)"), elem_id="early-stopping")
            from .recommend_panel import build_recommend_panel  # [issue 14] fills the form from engine.recommend

            build_recommend_panel(ctx)
            with gr.Accordion(T("Advanced: schedule and batch"), open=False):
                with gr.Row():
                    localize(ctx.field("training.lr_scheduler", gr.Dropdown, choices=LR_SCHEDULES,
                                       label=T("How the learning rate falls (schedule)")), LR_SCHEDULES)
                    ctx.field("training.warmup_ratio", gr.Slider, 0.0, 0.5, step=0.01,
                              label=T("Warm-up share of the steps"))
                with gr.Row():
                    ctx.field("training.batch_size", gr.Slider, 1, 64, step=1, label=T("Examples at once (batch size)"))
                    ctx.field("training.gradient_accumulation", gr.Slider, 1, 64, step=1,
                              label=T("Batches per update (gradient accumulation)"))
            with gr.Accordion(T("Advanced: optimizer and precision"), open=False):
                with gr.Row():
                    ctx.field("training.optimizer", gr.Dropdown,
                              choices=["adamw_torch", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor"],
                              label=T("Optimizer"))
                    ctx.field("training.weight_decay", gr.Number, minimum=0, step=0.01, label=T("Weight decay"))
                with gr.Row():
                    ctx.field("training.max_grad_norm", gr.Number, minimum=0, step=0.1,
                              label=T("Gradient clipping"))
                    ctx.field("training.seed", gr.Number, precision=0, label=T("Seed"))
                localize(ctx.field("training.precision", gr.Radio, choices=PRECISIONS, label=T("Number precision")),
                         PRECISIONS)
                ctx.field("training.gradient_checkpointing", gr.Checkbox,
                          label=T("Save memory by recomputing (gradient checkpointing)"))
                localize(ctx.field("kernels", gr.Radio, choices=KERNELS, label=T("Tunesmith's fast kernels")), KERNELS)
                localize(ctx.field("training.memory_mode", gr.Radio, choices=MEMORY_MODES,
                                   label=T("Kernels: speed or memory")), MEMORY_MODES)
                with gr.Row():
                    ctx.field("training.padding_free", gr.Checkbox, label=T("No padding between examples"))
                    ctx.field("training.group_by_length", gr.Checkbox, label=T("Group examples of similar length"))
                    ctx.field("training.tokens_per_forward", gr.Number, precision=0, minimum=0,
                              label=T("Most tokens per forward pass (0 = automatic)"))
                # [issue 15] training.extra: YAML text, checked against the optimizer's and schedule's own names
                ctx.field("training.extra", gr.Textbox, lines=2, placeholder="betas: [0.9, 0.95]\neps: 1.0e-6",
                          label=T("Extra arguments (optimizer and schedule options, one per line)"), elem_id="extra-args")
            with gr.Accordion(T("Advanced: logging and checkpoints"), open=False):
                with gr.Row():
                    ctx.field("training.logging_steps", gr.Number, precision=0, minimum=1,
                              label=T("Chart a point every N steps"))
                    ctx.field("training.save_steps", gr.Number, precision=0, minimum=1,
                              label=T("Save progress every N steps"))
                    ctx.field("training.eval_steps", gr.Number, precision=0, minimum=0,
                              label=T("Check held-out loss every N steps (0 = at saves)"))
            ctx.field("output.run_name", gr.Textbox, label=T("Run name"), placeholder=T("picked from model and data"),
                      elem_id="run-name")
            fit_line_markdown(ctx)  # "fits on GPU 0: ~9.8 of 24 GB" (studio/gpu_panel.py)
            summary = gr.Markdown(elem_id="train-summary", elem_classes="ts-summary")
            with gr.Row():
                start = gr.Button(T("Start training"), variant="primary", elem_id="start")
                stop = gr.Button(T("Stop"), variant="stop", elem_id="stop")
                show_yaml = gr.Button(T("Show YAML"), variant="secondary", elem_id="show-yaml")
            yaml_box = gr.Code(language="yaml", label=T("Settings file (save as run.yaml, then: tunesmith train run.yaml)"),
                               visible=False, interactive=False, elem_id="yaml")
        with gr.Column(scale=3, min_width=380, elem_classes="ts-monitor"):
            # ts-quiet: no "processing 0.1s" flicker on the widgets the timer refreshes (assets/studio.css).
            stats = gr.HTML(monitor.EMPTY_STATS_HTML, elem_id="run-stats", elem_classes="ts-quiet")
            progress = gr.HTML("", elem_id="run-progress", elem_classes="ts-quiet")
            chart = gr.Plot(monitor.loss_figure([]), label=T("Training loss"), show_label=False, elem_id="loss-chart",
                            elem_classes="ts-quiet")
            error = gr.Code(label=T("Worker log (last lines)"), language="shell", visible=False, interactive=False,
                            elem_id="run-error", elem_classes="ts-quiet")
            grpo_extras = grpo_panel.build_monitor_extras()  # GRPO runs: length/KL chart, sampled answers
    timer = gr.Timer(POLL_SECONDS, active=False)
    seen = gr.State(None)
    form_store = _top_level(ctx, lambda: gr.BrowserState({}, storage_key="tunesmith-form"))

    # ---- handlers ---------------------------------------------------------------

    asked = gr.State(None)  # the data note Start last asked about: a second Start trains anyway

    @toast_errors
    def start_run(values: dict):
        cfg = ctx.config_from(values)
        from tunesmith.engine.data.pairs import objective_data_note

        note = objective_data_note(cfg)
        if note and values.get(asked) != note:  # preference / KTO data is never silently reduced: ask first
            gr.Warning(tr("{note} Press Start again to train this way, or pick the objective it suggests.",
                          note=note))
            return gr.skip(), gr.skip(), note
        try:
            run_id = jobs.submit(cfg, dedupe=True)
        except jobs.DuplicateSubmit as e:  # a double click: one run, and say so
            gr.Info(str(e))
            return e.run_id, saved_form(ctx, values), None
        place = scheduler.positions().get(run_id)
        if place:
            gr.Info(tr("Queued run {run}: number {place}; it starts when its GPUs are free (Runs tab).",
                       run=run_id, place=place))
        else:
            gr.Info(tr("Started run {run}. Closing this page does not stop it.", run=run_id))
        return run_id, saved_form(ctx, values), None

    @toast_errors
    def stop_run(run_id: str | None) -> None:
        if not run_id:
            raise gr.Error(tr("No run is selected. Open one from the Runs tab."), print_exception=False)
        run = jobs.stop(run_id)
        if run.finished:
            gr.Info(tr("Run {run} has already {status}.", run=run_id, status=tr(run.status)))
        else:
            gr.Info(tr("Stopping after the current step; what it learned so far is saved."))

    @toast_errors
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
            gr.Info(tr("Applied the recommended settings for this model (Train tab). You can still change them."))
        return out

    def show_summary(values: dict) -> str:
        try:
            return summary_markdown(ctx.config_from(values))
        except TunesmithError as e:  # the form is mid-edit; Start will say what is wrong
            return tr("Not ready to train: {problem}", problem=str(e).splitlines()[-1].strip())

    def remember(values: dict) -> tuple[str, dict]:
        return show_summary(values), saved_form(ctx, values)

    def restore(saved: dict | None):
        return restored_form(ctx, saved) or gr.skip()  # Gradio reads an empty dict as one value

    # ---- events -------------------------------------------------------------------
    monitor_outputs = [stats, progress, chart, error, timer, seen]
    # once: clicks while a Start is being handled are dropped by the page (the engine refuses repeats too).
    start.click(start_run, ctx.config_inputs() | {asked}, [ctx.run_id, form_store, asked], trigger_mode="once",
                concurrency_limit=1)
    stop.click(stop_run, ctx.run_id, None).then(monitor_view, ctx.run_id, monitor_outputs, show_progress="hidden")
    show_yaml.click(yaml_text, ctx.config_inputs(), yaml_box)
    ctx.run_id.change(open_run, ctx.run_id, [*monitor_outputs, ctx.saved_run_id], show_progress="hidden")
    timer.tick(monitor_view, [ctx.run_id, seen], monitor_outputs, show_progress="hidden", concurrency_limit=None)
    grpo_panel.wire_monitor_extras(grpo_extras, timer, ctx.run_id)
    model_field = ctx.fields["model.name_or_path"]
    # .input, not .change: only a model the user picks brings its settings (not one
    # loaded from a run's config by Runs -> Copy settings).
    model_field.input(apply_recommended, {model_field, ctx.applied_overrides},
                       [ctx.applied_overrides, *ctx.fields.values()], show_progress="hidden")
    # Every edit (by hand, by a model's recommendations, by Reuse settings) updates the card and the
    # saved form; the form comes back on reload before the card is first drawn.
    gr.on([f.change for f in ctx.fields.values()], remember, ctx.config_inputs(), [summary, form_store],
          show_progress="hidden", trigger_mode="always_last")
    ctx.demo.load(restore, form_store, {*ctx.fields.values(), ctx.applied_overrides}, show_progress="hidden").then(
        show_summary, ctx.config_inputs(), summary, show_progress="hidden")
    ctx.demo.load(open_initial_run, ctx.saved_run_id, [ctx.run_id, ctx.tabs], show_progress="hidden").then(
        lambda run_id: monitor_view(run_id) if not run_id else gr.skip(),  # the empty view, in the page's language
        ctx.run_id, monitor_outputs, show_progress="hidden")

    return TrainHandles(start=start, stop=stop, show_yaml=show_yaml, yaml=yaml_box, stats=stats,
                        progress=progress, chart=chart, error=error, timer=timer, summary=summary)
