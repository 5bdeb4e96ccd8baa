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

from .context import StudioContext
from .gpu_panel import build_gpu_picker


def chat_template_choices() -> list[tuple[str, str]]:
    return [("The model's own template", "")] + [(n, n) for n in template_names()]


@dataclass
class ModelHandles:
    model: gr.Dropdown
    method: gr.Radio
    quant_group: gr.Group
    lora_group: gr.Group
    hint: gr.Markdown


def method_visibility(method: str) -> tuple[dict, dict]:
    """(quantization group, LoRA group) updates: 4-bit settings only matter for
    QLoRA, adapter settings not for full fine-tuning."""
    return gr.update(visible=method == "qlora"), gr.update(visible=method != "full")


def model_hint(name: str) -> str:
    name = (name or "").strip()
    if name == DEMO_MODEL:
        return ("**Demo model** — a tiny model embedded in Tunesmith. It trains in a minute on a CPU "
                "and shows every step of the studio, but it cannot hold a real conversation. "
                "Pick a real model for real work.")
    if not name:
        return "Pick a model above, or type a Hugging Face hub id or a local folder."
    return (f"**{name}** — downloaded from the Hugging Face hub the first time (or read from the folder, "
            "if it is a local path). Training a real model wants a GPU.")


def build_model_tab(ctx: StudioContext) -> ModelHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            model = ctx.field(
                "model.name_or_path", gr.Dropdown,
                choices=[(label if mid == DEMO_MODEL else mid, mid) for mid, label in catalog.SUGGESTED_MODELS],
                allow_custom_value=True, label="Model",
                elem_id="model-name",
            )
            hint = gr.Markdown(model_hint(ctx.initial.model.name_or_path), elem_classes="ts-hint")
            method = ctx.field(
                "method", gr.Radio,
                choices=[("QLoRA (4-bit, least memory)", "qlora"), ("LoRA (16-bit)", "lora"),
                         ("Full fine-tune (all weights)", "full")],
                label="Method", elem_id="method",
            )
            build_gpu_picker(ctx)  # resources.gpus and the fit line (studio/gpu_panel.py)
        with gr.Column(scale=2):
            with gr.Accordion("Advanced model options", open=False):
                ctx.field("model.trust_remote_code", gr.Checkbox, label="Trust remote code")
                ctx.field("model.chat_template", gr.Dropdown, choices=chat_template_choices(),
                          allow_custom_value=True, label="Chat template")
                ctx.field("model.revision", gr.Textbox, label="Revision", placeholder="main")

    q_visible, l_visible = (u["visible"] for u in method_visibility(ctx.initial.method))
    with gr.Group(visible=q_visible) as quant_group:
        gr.Markdown("### Quantization (QLoRA)", elem_classes="ts-section")
        with gr.Row():
            ctx.field("quantization.bits", gr.Radio, choices=[4, 8, 16], label="Base weight bits")
            ctx.field("quantization.quant_type", gr.Radio, choices=["nf4", "fp4"], label="4-bit type")
            ctx.field("quantization.double_quant", gr.Checkbox, label="Double quantization")
            ctx.field("quantization.compute_dtype", gr.Dropdown,
                      choices=["auto", "bfloat16", "float16", "float32"], label="Compute dtype")
    with gr.Group(visible=l_visible) as lora_group:
        gr.Markdown("### LoRA adapter", elem_classes="ts-section")
        with gr.Row():
            ctx.field("lora.r", gr.Slider, 1, 256, step=1, label="Rank (r)")
            ctx.field("lora.alpha", gr.Slider, 1, 512, step=1, label="Alpha")
            ctx.field("lora.dropout", gr.Slider, 0.0, 0.5, step=0.01, label="Dropout")
        ctx.field("lora.target_modules", gr.Textbox, label="Target modules", placeholder="all-linear")

    handles = ModelHandles(model=model, method=method, quant_group=quant_group, lora_group=lora_group, hint=hint)

    # ---- events ---------------------------------------------------------------
    method.change(method_visibility, method, [quant_group, lora_group], show_progress="hidden")
    model.change(model_hint, model, hint, show_progress="hidden")
    return handles
