"""Model tab: which model to fine-tune and how (method, quantization, LoRA shape).

Every widget edits one RunConfig field (registered in the StudioContext under
its dotted path) and shows that field's help line. Picking a model applies its
recommended settings; that wiring lives in the Train tab, which owns most of
the fields they touch.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from tunesmith.engine import catalog
from tunesmith.engine.config import DEMO_MODEL
from tunesmith.engine.data import template_names

from .variants_panel import build_variant_fields
from .context import StudioContext
from .i18n import T, localize, tr
from .gpu_panel import build_gpu_picker


def chat_template_choices() -> list[tuple[str, str]]:
    return [("The model's own template", "")] + [(n, n) for n in template_names()]


METHODS = [("QLoRA: small add-on, 4-bit base (least memory)", "qlora"),
           ("LoRA: small add-on, 16-bit base", "lora"),
           ("Full: change every weight (most memory)", "full"),
           ("Freeze: train only the last layers", "freeze")]
BITS = [("4-bit", 4), ("8-bit", 8), ("16-bit (no compression)", 16)]
QUANT_TYPES = [("NF4 (standard)", "nf4"), ("FP4", "fp4")]
COMPUTE = [("Automatic", "auto"), ("bfloat16", "bfloat16"), ("float16", "float16"), ("float32", "float32")]


@dataclass
class ModelHandles:
    model: gr.Dropdown
    method: gr.Radio
    quant_group: gr.Accordion
    lora_group: gr.Accordion
    hint: gr.Markdown


def method_visibility(method: str) -> tuple[dict, dict]:
    """(quantization group, LoRA group) updates: 4-bit settings only matter for
    QLoRA, adapter settings not for full fine-tuning."""
    return gr.update(visible=method == "qlora"), gr.update(visible=method not in ("full", "freeze"))


DEMO_HINT = ("**Demo model** — a tiny model embedded in Tunesmith. It trains in a minute on a CPU "
             "and shows every step of the studio, but it cannot hold a real conversation. "
             "Pick a real model for real work.")


def model_hint(name: str) -> str:
    name = (name or "").strip()
    if name == DEMO_MODEL:
        return tr(DEMO_HINT)
    if not name:
        return tr("Pick a model above, or type a Hugging Face hub id or a local folder.")
    return tr("**{name}** — downloaded from the Hugging Face hub the first time (or read from the folder, "
              "if it is a local path). Training a real model wants a GPU.", name=name)


def build_model_tab(ctx: StudioContext) -> ModelHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            models = [(label if mid == DEMO_MODEL else mid, mid) for mid, label in catalog.SUGGESTED_MODELS]
            model = localize(ctx.field("model.name_or_path", gr.Dropdown, choices=models, allow_custom_value=True,
                                       label=T("Model"), elem_id="model-name"), models)
            initial = ctx.initial.model.name_or_path
            hint = gr.Markdown(T(DEMO_HINT) if initial == DEMO_MODEL else model_hint(initial), elem_classes="ts-hint")
            method = localize(ctx.field("method", gr.Radio, choices=METHODS, label=T("How to train"),
                                        elem_id="method"), METHODS)
            build_gpu_picker(ctx)  # resources.gpus and the fit line (studio/gpu_panel.py)
        with gr.Column(scale=2):
            with gr.Accordion(T("Advanced model options"), open=False):
                ctx.field("model.trust_remote_code", gr.Checkbox, label=T("Run code that comes with the model"))
                templates = chat_template_choices()
                localize(ctx.field("model.chat_template", gr.Dropdown, choices=templates, allow_custom_value=True,
                                   label=T("Conversation format (chat template)")), templates)
                ctx.field("model.revision", gr.Textbox, label=T("Version (revision)"), placeholder="main")

    q_visible, l_visible = (u["visible"] for u in method_visibility(ctx.initial.method))
    with gr.Accordion(T("Advanced: compressing the base model (quantization)"), open=False,
                      visible=q_visible) as quant_group:
        with gr.Row():
            localize(ctx.field("quantization.bits", gr.Radio, choices=BITS, label=T("Base model precision")), BITS)
            localize(ctx.field("quantization.quant_type", gr.Radio, choices=QUANT_TYPES,
                               label=T("4-bit number type")), QUANT_TYPES)
            ctx.field("quantization.double_quant", gr.Checkbox, label=T("Compress a little more (double quantization)"))
            localize(ctx.field("quantization.compute_dtype", gr.Dropdown, choices=COMPUTE,
                               label=T("Number type for the maths (compute dtype)")), COMPUTE)
    with gr.Accordion(T("Advanced: the add-on's size (LoRA)"), open=False, visible=l_visible) as lora_group:
        with gr.Row():
            ctx.field("lora.r", gr.Slider, 1, 256, step=1, label=T("Add-on capacity (rank r)"))
            ctx.field("lora.alpha", gr.Slider, 1, 512, step=1, label=T("Add-on strength (alpha)"))
            ctx.field("lora.dropout", gr.Slider, 0.0, 0.5, step=0.01, label=T("Dropout"))
        ctx.field("lora.target_modules", gr.Textbox, label=T("Layers that get the add-on (target modules)"),
                  placeholder=T("all linear layers"))

    build_variant_fields(ctx)  # [issue 15] studio/variants_panel.py
    handles = ModelHandles(model=model, method=method, quant_group=quant_group, lora_group=lora_group, hint=hint)

    # ---- events ---------------------------------------------------------------
    method.change(method_visibility, method, [quant_group, lora_group], show_progress="hidden")
    model.change(model_hint, model, hint, show_progress="hidden")
    return handles
