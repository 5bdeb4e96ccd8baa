"""The GPU picker and the fit line ("fits on GPU 0: ~9.8 of 24 GB") shown on the Model and Train tabs.

    build_gpu_picker(ctx)                 # in the Model tab: resources.gpus, .strategy + a fit line
    fit_line_markdown(ctx)                # in the Train tab: the same line
    wire_fit_lines(ctx)                   # after every tab is built (the line reads their fields)

The line is engine.fit's estimate of peak GPU memory for the form's current
settings on the GPU(s) the run would get, against their free memory now; when
it does not fit it names the setting to change. GPUs come from engine.gpus
(nvidia-smi), so the studio never holds a CUDA context of its own.
"""

from __future__ import annotations

import gradio as gr

from tunesmith.engine import fit, gpus
from tunesmith.engine.errors import TunesmithError

from .context import StudioContext
from .i18n import T, localize, tr

# Fields whose change moves the estimate (the handler reads the whole form).
FIT_FIELDS = (
    "model.name_or_path", "method", "quantization.bits", "quantization.double_quant", "lora.r",
    "lora.target_modules", "training.batch_size", "data.cutoff_len", "training.memory_mode",
    "training.gradient_checkpointing", "training.optimizer", "kernels", "resources.gpus", "resources.strategy",
    "resources.processes",
)

STRATEGIES = [("Automatic (FSDP only when one GPU is too small)", "auto"), ("DDP: a whole copy per GPU", "ddp"),
              ("FSDP: sharded across the GPUs (LoRA/QLoRA)", "fsdp")]


def gpu_choices(machine: list[gpus.GpuInfo]) -> list[tuple[str, str]]:
    """Dropdown choices: auto, each GPU by name and free memory, and all of them."""
    if not machine:
        return [(tr("auto (no CUDA GPU found: trains on the CPU)"), "auto")]
    out = [(tr("auto: the free GPU with the most free memory"), "auto")]
    out += [(g.label(), f"[{g.index}]") for g in machine]
    if len(machine) > 1:
        every = ", ".join(str(g.index) for g in machine)
        out.append((tr("all {n} GPUs, one process each", n=len(machine)), f"[{every}]"))
    return out


def fit_text(ctx: StudioContext, values: dict) -> str:
    try:
        cfg = ctx.config_from(values)
    except TunesmithError:
        return ""  # the form has a mistake; Start names it
    try:
        # The engine's fixed lines have Chinese entries; lines with numbers stay as the engine wrote them.
        return tr(fit.fit_line(cfg, gpus.list_gpus()))
    except Exception:  # noqa: BLE001 - a hint must never put an error in the browser
        return ""


# The fit lines of each studio (keyed by its Blocks), wired once every tab exists.
_LINES: dict[int, list[gr.Markdown]] = {}


def build_gpu_picker(ctx: StudioContext) -> gr.Markdown:
    machine = gpus.list_gpus()
    with gr.Row():
        ctx.field("resources.gpus", gr.Dropdown, choices=gpu_choices(machine), allow_custom_value=True,
                  label=T("GPUs"), elem_id="resources-gpus", scale=3)
        # Only meaningful without GPUs (on GPUs it is one process per GPU); 0 = not set.
        ctx.field("resources.processes", gr.Number, precision=0, minimum=0, label=T("Processes (0 = one per GPU)"),
                  elem_id="resources-processes", scale=1, visible=not machine)
        # DDP or FSDP when a run has several processes (engine/training/fsdp.py)
        localize(ctx.field("resources.strategy", gr.Dropdown, choices=STRATEGIES, label=T("Several GPUs"),
                           elem_id="resources-strategy", scale=2), STRATEGIES)
    return fit_line_markdown(ctx, "fit-line-model")


def fit_line_markdown(ctx: StudioContext, elem_id: str = "fit-line-train") -> gr.Markdown:
    md = gr.Markdown("", elem_id=elem_id, elem_classes="ts-hint")
    _LINES.setdefault(id(ctx.demo), []).append(md)
    return md


def wire_fit_lines(ctx: StudioContext) -> None:
    lines = _LINES.pop(id(ctx.demo), [])
    if not lines:
        return
    triggers = [ctx.fields[p].change for p in FIT_FIELDS if p in ctx.fields] + [ctx.demo.load]

    def update(values: dict):
        text = fit_text(ctx, values)
        return [text] * len(lines)

    gr.on(triggers, update, inputs=ctx.config_inputs(), outputs=lines, show_progress="hidden")
    picker = ctx.fields.get("resources.gpus")
    if picker is not None:  # free memory as of this page load, not as of studio start
        ctx.demo.load(lambda: gr.update(choices=gpu_choices(gpus.list_gpus())), None, picker, show_progress="hidden")
