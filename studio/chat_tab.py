"""Chat tab: talk to the base model or to any finished run, streamed token by token.

Targets come from engine.infer.chat_targets() (the base model and every run
with an adapter or model to load), the newest run first, then the GGUF files
that exports wrote (engine.infer.exported_ggufs(): chat through llama.cpp, to
hear the file you will ship); replies stream from engine.infer.stream_chat(),
which loads and caches the model in this process.
Temperature 0 means greedy decoding, so the same question gets the same answer.

"Compare side by side" sends each message to two targets (by default the base
model and the newest run) and streams both replies at once, in two columns:
the quickest way to see what fine-tuning changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr

from tunesmith.engine.config import DEMO_MODEL
from tunesmith.engine.errors import TunesmithError

from .context import StudioContext
from .i18n import T, tr
from .notices import toast_errors


_IMPORT_LOCK = threading.Lock()


@dataclass
class ChatHandles:
    target: gr.Dropdown
    compare: gr.Checkbox
    target_b: gr.Dropdown
    chatbot_b: gr.Chatbot
    refresh_inputs: list
    refresh_outputs: list
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    clear: gr.Button
    temperature: gr.Slider
    max_new_tokens: gr.Slider
    score_model: gr.Dropdown | None = None
    score: gr.Button | None = None
    score_result: gr.Markdown | None = None


def message_text(content: Any) -> str:
    """Plain text of a Chatbot message's content (a string, or Gradio 6's list of
    {"type": "text", "text": ...} parts; files and components are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text") or "" if content.get("type", "text") == "text" else ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(c) for c in content)
    return ""


def plain_messages(history: list[dict] | None) -> list[dict[str, str]]:
    """Chatbot history -> [{"role", "content": str}] as the engine takes it."""
    out = []
    for m in history or []:
        role = m.get("role")
        if role in ("user", "assistant", "system"):
            out.append({"role": role, "content": message_text(m.get("content"))})
    return out


def target_choices(form_model: str | None = None) -> list[tuple[str, str]]:
    """The engine's targets (base demo model, then runs newest first), plus the
    model picked on the Model tab as a base to compare against."""
    from tunesmith.engine import infer  # imports torch: loaded on first use, not at studio start

    from tunesmith.engine import jobs

    # Newest finished first: the run just trained is the one a person wants to try.
    order = {r.id: r.finished_at or r.created_at for r in jobs.list_runs()}
    choices = [(label.replace("Base: ", tr("Base: "), 1).replace("Run ", tr("Run "), 1), target)
               for label, target in infer.chat_targets()]
    choices[1:] = sorted(choices[1:], key=lambda c: order.get(c[1], 0.0), reverse=True)
    choices += infer.exported_ggufs()
    form_model = (form_model or "").strip()
    if form_model and form_model not in {t for _, t in choices}:
        choices.insert(1, (tr("Base: ") + form_model, form_model))
    return choices


def pick_target(values: list[str], current: str | None, shown_run: str | None, known: list[str] | None,
                bases: tuple[str, ...]) -> str | None:
    """Keeps the user's pick while the list is unchanged. When it changed (a run finished), or
    nothing valid is picked, picks the run shown in the Train monitor if it can chat, else the
    newest run, else the base model."""
    if current in values and set(values) == set(known or []):
        return current
    runs = [t for t in values if t not in bases]
    if shown_run in runs:
        return shown_run
    return runs[0] if runs else (values[0] if values else None)


def refresh_targets(current: str | None, form_model: str | None, shown_run: str | None,
                    known: list[str] | None, current_b: str | None = None) -> tuple[dict, list[str], dict]:
    """(target dropdown update, targets now known, compare-target update).

    The main target follows `pick_target`; the compare column starts at the base
    model of the picked run (the base model itself when no run exists yet).
    """
    choices = target_choices(form_model)
    values = [t for _, t in choices]
    bases = (DEMO_MODEL, (form_model or "").strip())
    current = pick_target(values, current, shown_run, known, bases)
    if current_b not in values or set(values) != set(known or []):
        current_b = _base_of(current) if current else None
        current_b = current_b if current_b in values else (values[0] if values else None)
    return gr.update(choices=choices, value=current), values, gr.update(choices=choices, value=current_b)


def _base_of(target: str) -> str:
    """The base model a run was trained from (the target itself when it is a model)."""
    from tunesmith.engine import jobs

    run = jobs.resolve_run(target)
    if run is None:
        return target
    try:
        return jobs.load_config(run).model.name_or_path
    except TunesmithError:  # its config.yaml is gone or unreadable: no base to offer, the Chat tab still works
        return target


def add_user_message(text: str, history: list[dict] | None):
    text = (text or "").strip()
    if not text:
        raise gr.Error(tr("Type a message first."), print_exception=False)
    return "", [*plain_messages(history), {"role": "user", "content": text}]


@toast_errors
def add_to_both(text: str, history: list[dict] | None, history_b: list[dict] | None, compare: bool):
    """The message into the main chat and, when comparing, into the second column too."""
    box, main = add_user_message(text, history)
    if not compare:
        return box, main, gr.skip()
    return box, main, [*plain_messages(history_b), main[-1]]


@toast_errors
def stream_reply(target: str | None, history: list[dict] | None, max_new_tokens: int,
                 temperature: float) -> Iterator[list[dict]]:
    messages = plain_messages(history)
    if not messages or messages[-1]["role"] != "user":  # no new message (it was refused with a toast)
        return
    if not target:
        raise gr.Error(tr("Pick a model or run to chat with."), print_exception=False)
    with _IMPORT_LOCK:
        # Compare mode starts two replies at once; transformers' lazy attribute imports are not
        # thread-safe (one thread saw "cannot import name TextIteratorStreamer"), so do them one at a time.
        from transformers import TextIteratorStreamer  # noqa: F401

        from tunesmith.engine import infer

    reply = ""
    yield [*messages, {"role": "assistant", "content": "…"}]
    for delta in infer.stream_chat(target, messages, max_new_tokens=int(max_new_tokens),
                                   temperature=float(temperature)):
        reply += delta
        yield [*messages, {"role": "assistant", "content": reply}]
    if not reply:
        yield [*messages, {"role": "assistant", "content": tr("(the model replied with nothing)")}]


def stream_compare(target: str | None, history: list[dict] | None, compare: bool, max_new_tokens: int,
                   temperature: float):
    """The second column's reply (nothing when not comparing)."""
    if not compare:
        return
    yield from stream_reply(target, history, max_new_tokens, temperature)


# ---------------------------------------------------------------------------
# Scoring replies with a trained reward model (objective reward)
# ---------------------------------------------------------------------------


def reward_model_choices() -> dict:
    from tunesmith.engine.objectives.reward import reward_runs

    runs = reward_runs()
    return gr.update(choices=runs, value=runs[0][1] if runs else None)


def score_text(run_id: str | None, history: list[dict] | None, history_b: list[dict] | None, compare: bool) -> str:
    """Markdown with the reward model's score of the last reply of each chat column shown."""
    from tunesmith.engine.objectives.reward import score_reply

    if not run_id:
        raise gr.Error(tr("Pick a reward model first: a run trained with Score replies (reward model)."),
                       print_exception=False)
    columns = [(tr("Reply"), history)] + ([(tr("Compared reply"), history_b)] if compare else [])
    lines = []
    for label, hist in columns:
        messages = plain_messages(hist)
        if messages and messages[-1]["role"] == "assistant":
            lines.append(f"**{label}**: {score_reply(run_id, messages):+.3f}")
    if not lines:
        raise gr.Error(tr("There is no reply to score yet: chat first."), print_exception=False)
    return "\n\n".join(lines + [tr("Higher is better. Scores rank replies to the same question; a score alone means "
                                     "little.")])


def build_chat_tab(ctx: StudioContext) -> ChatHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            target = gr.Dropdown(choices=[], label=T("Chat with"),
                                 info=T("The base model, a finished run (base model + what it learned), or an exported GGUF "
                                        "file (run by llama.cpp, as you will ship it)."),
                                 elem_id="chat-target")
            compare = gr.Checkbox(False, label=T("Compare side by side"), elem_id="chat-compare",
                                  info=T("Send each message to two models and see both replies."))
            target_b = gr.Dropdown(choices=[], label=T("Compare with"), visible=False, elem_id="chat-target-b",
                                   info=T("Starts at the base model, to see what training changed."))
            refresh = gr.Button(T("Refresh list"), size="sm")
            with gr.Accordion(T("Advanced"), open=False):
                temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label=T("Creativity (temperature)"),
                                        info=T("0 = always the most likely word: the same question gets the same "
                                               "answer. Higher = more varied."))
                max_new_tokens = gr.Slider(16, 2048, value=256, step=16, label=T("Longest reply (tokens)"),
                                           info=T("A token is a word or a piece of one."))
            clear = gr.Button(T("Clear chat"), variant="secondary")
            with gr.Accordion(T("Score replies with a reward model"), open=False, elem_id="score-box"):
                score_model = gr.Dropdown(choices=[], label=T("Reward model"), elem_id="score-model",
                                          info=T("A run trained with Score replies (reward model)."))
                score_btn = gr.Button(T("Score the last reply"), size="sm", elem_id="score-btn")
                score_result = gr.Markdown(elem_id="score-result")
        with gr.Column(scale=3):
            with gr.Row():
                chatbot = gr.Chatbot(label=T("Chat"), height=460, elem_id="chatbot", buttons=["copy"],
                                     placeholder=T("Ask something. Replies stream in as the model writes them."),
                                     feedback_options=None)
                chatbot_b = gr.Chatbot(label=T("Compare with"), height=460, elem_id="chatbot-b", buttons=["copy"],
                                       visible=False, feedback_options=None)
            with gr.Row():
                message = gr.Textbox(placeholder=T("Type a message and press Enter"), show_label=False, scale=5,
                                     elem_id="chat-input", submit_btn=False)
                send = gr.Button(T("Send"), variant="primary", scale=1, min_width=90, elem_id="chat-send")
    known = gr.State([])  # targets the dropdown last offered

    @toast_errors
    def confined_reply(target: str | None, history: list[dict] | None, max_new_tokens: int, temperature: float):
        ctx.confine.check_chat_target(target or "")  # a run, or a model folder the studio may read
        yield from stream_reply(target, history, max_new_tokens, temperature)

    @toast_errors
    def confined_compare(target: str | None, history: list[dict] | None, compare: bool, max_new_tokens: int,
                         temperature: float):
        if compare:
            ctx.confine.check_chat_target(target or "")
        yield from stream_compare(target, history, compare, max_new_tokens, temperature)

    # ---- events ---------------------------------------------------------------
    for trigger in (message.submit, send.click):
        sent = trigger(add_to_both, [message, chatbot, chatbot_b, compare], [message, chatbot, chatbot_b],
                       show_progress="hidden")
        # Two events: both columns stream at the same time.
        sent.success(confined_reply, [target, chatbot, max_new_tokens, temperature], chatbot, show_progress="hidden")
        sent.success(confined_compare, [target_b, chatbot_b, compare, max_new_tokens, temperature], chatbot_b,
                     show_progress="hidden")
    clear.click(lambda: ([], []), None, [chatbot, chatbot_b], show_progress="hidden")
    compare.change(lambda on: (gr.update(visible=on), gr.update(visible=on)), compare, [target_b, chatbot_b],
                   show_progress="hidden")
    refresh_inputs = [target, ctx.fields["model.name_or_path"], ctx.run_id, known, target_b]
    refresh_outputs = [target, known, target_b]
    refresh.click(refresh_targets, refresh_inputs, refresh_outputs)
    ctx.demo.load(refresh_targets, refresh_inputs, refresh_outputs, show_progress="hidden")

    @toast_errors
    def confined_score(run_id: str | None, history: list[dict] | None, history_b: list[dict] | None, compare: bool):
        ctx.confine.check_chat_target(run_id or "")
        return score_text(run_id, history, history_b, compare)

    score_btn.click(confined_score, [score_model, chatbot, chatbot_b, compare], score_result)
    for trigger in (refresh.click, ctx.demo.load):
        trigger(reward_model_choices, None, score_model, show_progress="hidden")
    return ChatHandles(target=target, compare=compare, target_b=target_b, chatbot_b=chatbot_b,
                       refresh_inputs=refresh_inputs, refresh_outputs=refresh_outputs, chatbot=chatbot,
                       message=message, send=send, clear=clear, temperature=temperature,
                       max_new_tokens=max_new_tokens, score_model=score_model, score=score_btn,
                       score_result=score_result)
