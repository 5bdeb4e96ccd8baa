"""Train tab: "Use recommended settings" fills the form from engine.recommend and shows why for each value.

    build_recommend_panel(ctx)     # in the Train tab, where the button should sit
    wire_recommend_panel(ctx)      # once every tab is built (it writes fields of several sections)

The engine decides (engine/recommend.py: the published guides, by method,
objective and dataset size); this panel counts the dataset rows, applies the
values to the form's widgets and lists each one with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from tunesmith.engine.errors import TunesmithError

from .context import StudioContext, form_value
from .i18n import FIELD_LABELS, T, tr
from .notices import toast_errors


@dataclass
class RecommendPanel:
    button: gr.Button
    notes: gr.Markdown


_PANELS: dict[int, RecommendPanel] = {}


def build_recommend_panel(ctx: StudioContext) -> RecommendPanel:
    with gr.Row(equal_height=False):
        button = gr.Button(T("Use recommended settings"), size="sm", scale=0, min_width=220, elem_id="recommend")
        gr.Markdown(T("Sets the learning speed, passes, rank and batch from published guides for your data's "
                      "size, and says why."), elem_classes="ts-hint")
    notes = gr.Markdown(elem_id="recommend-notes", elem_classes="ts-hint")
    panel = _PANELS[id(ctx.demo)] = RecommendPanel(button=button, notes=notes)
    return panel


def _label(path: str) -> str:
    name = FIELD_LABELS.get(path)
    return tr(name) if name else path


def suggestion_lines(suggestions: list) -> str:
    """One line per setting: its label, the value, and why."""
    return "\n".join(f"- **{_label(s.path)}** → `{s.value:g}`: {tr(s.reason, **s.values)}"
                     if isinstance(s.value, float) else
                     f"- **{_label(s.path)}** → `{s.value}`: {tr(s.reason, **s.values)}" for s in suggestions)


def wire_recommend_panel(ctx: StudioContext) -> None:
    panel = _PANELS.pop(id(ctx.demo), None)
    if panel is None:
        return
    from tunesmith.engine import recommend

    from .train_tab import row_count

    @toast_errors
    def apply(values: dict):
        try:
            cfg = ctx.config_from(values)
        except TunesmithError as e:  # e.g. no dataset yet: say what to fix first
            raise gr.Error(tr("Fix the form first: {problem}", problem=str(e).splitlines()[-1].strip()),
                           print_exception=False) from None
        rows = recommend.training_rows([row_count(ref) for ref in cfg.data.datasets], cfg.data.max_samples)
        suggestions = recommend.recommend(cfg, rows)
        out: dict = {ctx.fields[s.path]: form_value(s.path, s.value) for s in suggestions if s.path in ctx.fields}
        head = (tr("Recommended for {rows} training rows:", rows=f"{rows:,}") if rows is not None
                else tr("Recommended (the number of rows is not known yet):"))
        out[panel.notes] = head + "\n\n" + suggestion_lines(suggestions)
        gr.Info(tr("Filled in {n} recommended settings. You can still change them.", n=len(out) - 1))
        return out

    panel.button.click(apply, ctx.config_inputs(), {*ctx.fields.values(), panel.notes})
