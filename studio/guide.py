"""The first-time guide strip (1 Model -> 2 Data -> 3 Train -> 4 Chat -> 5 Export) and the empty-state notes.

    guide = build_guide(ctx)                       # at the top of the page
    note = empty_note("chat")                      # at the top of a tab whose list can be empty
    wire_guide(ctx, guide, lang, triggers)         # once every tab is built

The strip says which steps are done and what to do next, in the page's
language. What counts as done comes from the form (a model, a dataset) and
from the engine (a run that can chat, an export on disk); "chatted" is the one
thing only the browser knows, kept in a gr.BrowserState so a reload keeps it.
The notes ("No runs yet: train one first") show on Runs, Chat, Export and
Evaluate while their lists are empty.

What it does not know: whether a run is any good (Evaluate says that).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from tunesmith.engine import jobs, paths

from .context import StudioContext
from .i18n import T, tr

LIVE = ("queued", "running", "stopping")
STEPS = (("model", "1 · Model"), ("data", "2 · Data"), ("train", "3 · Train"), ("chat", "4 · Chat"),
         ("export", "5 · Export"))
NEXT = {
    "model": "Next: pick a model on the 1 · Model tab (the demo model works offline).",
    "data": "Next: pick or upload a dataset on the 2 · Data tab.",
    "train": "Next: press Start training on the 3 · Train tab.",
    "chat": "Next: ask your trained run something on the 4 · Chat tab.",
    "export": "Next: export it on the 5 · Export tab and download the files.",
}
TRAINING = "Training is under way: watch it on the 3 · Train tab. Chat opens when it has learned something."
ALL_DONE = "All done: your model is exported and ready to download. Evaluate scores it against held-out questions."
EMPTY = {
    "runs": "No runs yet: train one first on the 3 · Train tab.",
    "chat": "No runs yet: train one first on the 3 · Train tab. Until then you can chat with the base model.",
    "export": "Nothing to export yet: train a run first on the 3 · Train tab.",
    "evaluate": "Nothing to evaluate yet: train a run first on the 3 · Train tab.",
}


@dataclass(frozen=True)
class GuideState:
    """What the person has done so far."""

    model: str
    datasets: tuple[str, ...]
    any_run: bool
    training: bool  # a run is queued or running
    trained: bool  # a run has an adapter or a model to chat with
    chatted: bool
    exported: bool

    def done(self) -> dict[str, bool]:
        return {"model": bool(self.model), "data": bool(self.datasets), "train": self.trained,
                "chat": self.chatted and self.trained, "export": self.exported}

    def next_step(self) -> str | None:
        return next((step for step, ok in self.done().items() if not ok), None)


def current_state(model: str | None, datasets: list[str] | None, chatted: bool | None) -> GuideState:
    """The state for the form's model and datasets, the engine's runs and exports, and the browser's flag."""
    runs = jobs.list_runs()
    exports = paths.exports_dir()
    return GuideState(
        model=(model or "").strip(), datasets=tuple(datasets or ()), any_run=bool(runs),
        training=any(r.status in LIVE for r in runs), trained=any(r.has_adapter or r.has_full_model for r in runs),
        chatted=bool(chatted), exported=exports.is_dir() and any(exports.glob("*/*")),
    )


def guide_html(state: GuideState, lang: str | None = None) -> str:
    done, nxt = state.done(), state.next_step()
    items = []
    for step, label in STEPS:
        cls = "done" if done[step] else "next" if step == nxt else "todo"
        mark = "✓" if done[step] else "→" if step == nxt else "·"
        items.append(f'<li class="ts-guide-{cls}" data-step="{step}"><span>{mark}</span> '
                     f"{html.escape(tr(label, lang))}</li>")
    if nxt is None:
        sentence = tr(ALL_DONE, lang)
    elif nxt == "train" and state.training:
        sentence = tr(TRAINING, lang)
    else:
        sentence = tr(NEXT[nxt], lang)
    style = ("<style>#guide ol{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;list-style:none;margin:0;padding:0}"
             "#guide li{opacity:.55}#guide li.ts-guide-done{opacity:1;color:#059669}"
             "#guide li.ts-guide-next{opacity:1;font-weight:600;color:#4f46e5}"
             "#guide p{margin:.3rem 0 0}</style>")
    return f'{style}<div class="ts-guide"><ol>{"".join(items)}</ol><p id="guide-next">{html.escape(sentence)}</p></div>'


def empty_flags(state: GuideState) -> dict[str, bool]:
    """{tab: whether its empty note shows}."""
    return {"runs": not state.any_run, "chat": not state.trained, "export": not state.trained,
            "evaluate": not state.trained}


# ---------------------------------------------------------------------------
# Widgets and wiring
# ---------------------------------------------------------------------------


@dataclass
class GuideHandles:
    strip: gr.HTML
    chatted: gr.BrowserState
    notes: dict[str, gr.Markdown]


_NOTES: dict[int, dict[str, gr.Markdown]] = {}  # per Blocks: the empty notes made so far


def build_guide(ctx: StudioContext) -> GuideHandles:
    strip = gr.HTML("", elem_id="guide", elem_classes="ts-quiet")
    chatted = gr.BrowserState(False, storage_key="tunesmith-chatted")
    return GuideHandles(strip=strip, chatted=chatted, notes=_NOTES.setdefault(id(ctx.demo), {}))


def empty_note(ctx: StudioContext, tab: str) -> gr.Markdown:
    """The note shown at the top of `tab` while its list is empty (wire_guide shows and hides it)."""
    note = gr.Markdown(T(EMPTY[tab]), visible=False, elem_id=f"empty-{tab}", elem_classes="ts-hint")
    _NOTES.setdefault(id(ctx.demo), {})[tab] = note
    return note


def wire_guide(ctx: StudioContext, guide: GuideHandles, lang: gr.Radio, triggers: list[Any],
               chat_sends: list[Any], chat_target: gr.Dropdown) -> None:
    """Update the strip and the notes on page load, language switch, and every event in `triggers`;
    `chat_sends` (a message sent in Chat) mark the chat step done when the target is not a base model."""
    notes = guide.notes
    model, datasets = ctx.fields["model.name_or_path"], ctx.fields["data.datasets"]

    def update(model_name: str | None, sets: list[str] | None, chatted: bool | None, lang_code: str | None):
        state = current_state(model_name, sets, chatted)
        flags = empty_flags(state)
        return [guide_html(state, lang_code), *(gr.update(visible=flags[tab]) for tab in notes)]

    inputs = [model, datasets, guide.chatted, lang]
    outputs = [guide.strip, *notes.values()]
    gr.on([ctx.demo.load, lang.change, model.change, datasets.change, *triggers], update, inputs, outputs,
          show_progress="hidden", trigger_mode="always_last")

    def mark(target: str | None, chatted: bool | None) -> bool:
        if chatted:
            return True
        return bool(target) and (jobs.resolve_run(target) is not None or target.lower().endswith(".gguf"))

    gr.on(chat_sends, mark, [chat_target, guide.chatted], guide.chatted, show_progress="hidden").then(
        update, inputs, outputs, show_progress="hidden")
