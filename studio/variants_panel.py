"""Model tab, "More ways to train" accordion: LoRA variants, freeze tuning, long context, attention,
NEFTune, dataset mixing and experiment trackers (RunConfig fields added for issue 15).

    build_variant_fields(ctx)   # inside the Model tab; every widget is registered with ctx.field

Each widget's info line is its field's help text (engine/config.py); values go
through the same form <-> config mapping as every other field.
"""

from __future__ import annotations

import gradio as gr

from .context import StudioContext
from .i18n import T, localize

LORA_INITS = [("Default (starts as the base model)", "default"), ("Gaussian", "gaussian"),
              ("PiSSA (from the weights' main directions)", "pissa"),
              ("LoftQ (QLoRA: corrects the 4-bit rounding)", "loftq")]
LORA_PRECISION = [("fp32 (keeps small updates)", "fp32"), ("bf16 (half the memory, as TRL's QLoRA)", "bf16")]
ROPE = [("None (as trained)", "none"), ("Linear", "linear"), ("Dynamic (NTK)", "dynamic"), ("YaRN", "yarn")]
ATTENTION = [("Automatic", "auto"), ("Eager (plain PyTorch)", "eager"), ("SDPA", "sdpa"),
             ("FlashAttention 2", "flash_attention_2")]


def build_variant_fields(ctx: StudioContext) -> gr.Accordion:
    with gr.Accordion(T("More ways to train (LoRA variants, freeze, long context, trackers)"), open=False) as group:
        with gr.Row():
            ctx.field("lora.use_dora", gr.Checkbox, label=T("DoRA (learn weight magnitudes)"))
            ctx.field("lora.use_rslora", gr.Checkbox, label=T("rsLoRA (stable scaling at high rank)"))
            localize(ctx.field("lora.init", gr.Dropdown, choices=LORA_INITS, label=T("How the add-on starts")), LORA_INITS)
            localize(ctx.field("lora.precision", gr.Dropdown, choices=LORA_PRECISION,
                               label=T("Add-on weights kept in")), LORA_PRECISION)
        with gr.Row():
            ctx.field("freeze.trainable_layers", gr.Number, precision=0, minimum=1,
                      label=T("Freeze: layers to train (from the top)"))
            ctx.field("freeze.trainable_modules", gr.Textbox, label=T("Freeze: parts of those layers to train"))
            ctx.field("freeze.extra_modules", gr.Textbox, label=T("Freeze: also train"))
        with gr.Row():
            localize(ctx.field("model.rope_scaling", gr.Dropdown, choices=ROPE, label=T("Longer context (RoPE scaling)")),
                     ROPE)
            ctx.field("model.rope_factor", gr.Number, minimum=1.0, label=T("Context stretch factor"))
            localize(ctx.field("model.attn_implementation", gr.Dropdown, choices=ATTENTION, label=T("Attention code")),
                     ATTENTION)
        with gr.Row():
            ctx.field("training.neftune_alpha", gr.Number, minimum=0, label=T("NEFTune noise (empty = off)"))
            ctx.field("data.mix", gr.Textbox, label=T("Dataset mixing weights"), placeholder="0.7, 0.3")
            ctx.field("training.report_to", gr.Textbox, label=T("Experiment trackers"), placeholder="tensorboard")
    return group
