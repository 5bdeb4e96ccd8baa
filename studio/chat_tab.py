"""Chat tab: talk to the base model or to any finished run, streamed token by token.

Targets come from engine.infer.chat_targets() (the base model and every run
with an adapter or model to load); replies stream from
engine.infer.stream_chat(), which loads and caches the model in this process.
Temperature 0 means greedy decoding, so the same question gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr

from tunesmith.engine.config import DEMO_MODEL

from .context import StudioContext, user_errors


@dataclass
class ChatHandles:
    target: gr.Dropdown
    refresh_inputs: list
    refresh_outputs: list
    chatbot: gr.Chatbot
    message: gr.Textbox
    send: gr.Button
    clear: gr.Button
    temperature: gr.Slider
    max_new_tokens: gr.Slider


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

    choices = [(label, target) for label, target in infer.chat_targets()]
    form_model = (form_model or "").strip()
    if form_model and form_model not in {t for _, t in choices}:
        choices.insert(1, (f"Base: {form_model}", form_model))
    return choices


def refresh_targets(current: str | None, form_model: str | None, shown_run: str | None,
                    known: list[str] | None) -> tuple[dict, list[str]]:
    """(target dropdown update, targets now known).

    Keeps the user's pick while the list is unchanged. When it changed (a run
    finished), or nothing valid is picked, picks the run shown in the Train
    monitor if it can chat, else the newest run, else the base model.
    """
    choices = target_choices(form_model)
    values = [t for _, t in choices]
    if current not in values or set(values) != set(known or []):
        runs = [t for t in values if t not in (DEMO_MODEL, (form_model or "").strip())]
        if shown_run in runs:
            current = shown_run
        elif current not in values or not known:
            current = runs[0] if runs else (values[0] if values else None)
    return gr.update(choices=choices, value=current), values


def add_user_message(text: str, history: list[dict] | None):
    text = (text or "").strip()
    if not text:
        raise gr.Error("Type a message first.")
    return "", [*plain_messages(history), {"role": "user", "content": text}]


@user_errors
def stream_reply(target: str | None, history: list[dict] | None, max_new_tokens: int,
                 temperature: float) -> Iterator[list[dict]]:
    if not target:
        raise gr.Error("Pick a model or run to chat with.")
    from tunesmith.engine import infer

    messages = plain_messages(history)
    reply = ""
    yield [*messages, {"role": "assistant", "content": "…"}]
    for delta in infer.stream_chat(target, messages, max_new_tokens=int(max_new_tokens),
                                   temperature=float(temperature)):
        reply += delta
        yield [*messages, {"role": "assistant", "content": reply}]
    if not reply:
        yield [*messages, {"role": "assistant", "content": "(the model replied with nothing)"}]


def build_chat_tab(ctx: StudioContext) -> ChatHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            target = gr.Dropdown(choices=[], label="Chat with",
                                 info="The base model, or a finished run (base model + its adapter).",
                                 elem_id="chat-target")
            refresh = gr.Button("Refresh list", size="sm")
            temperature = gr.Slider(0.0, 2.0, value=0.0, step=0.05, label="Temperature",
                                    info="0 = always the most likely token (same question, same answer).")
            max_new_tokens = gr.Slider(16, 2048, value=256, step=16, label="Max new tokens",
                                       info="The longest reply, in tokens.")
            clear = gr.Button("Clear chat", variant="secondary")
        with gr.Column(scale=3):
            chatbot = gr.Chatbot(label="Chat", height=460, elem_id="chatbot", buttons=["copy"],
                                 placeholder="Ask something. Replies stream in as the model writes them.",
                                 feedback_options=None)
            with gr.Row():
                message = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=5,
                                     elem_id="chat-input", submit_btn=False)
                send = gr.Button("Send", variant="primary", scale=1, min_width=90, elem_id="chat-send")
    known = gr.State([])  # targets the dropdown last offered

    @user_errors
    def confined_reply(target: str | None, history: list[dict] | None, max_new_tokens: int, temperature: float):
        ctx.confine.check_chat_target(target or "")  # a run, or a model folder the studio may read
        yield from stream_reply(target, history, max_new_tokens, temperature)

    # ---- events ---------------------------------------------------------------
    for trigger in (message.submit, send.click):
        trigger(add_user_message, [message, chatbot], [message, chatbot], show_progress="hidden").success(
            confined_reply, [target, chatbot, max_new_tokens, temperature], chatbot, show_progress="hidden")
    clear.click(lambda: [], None, chatbot, show_progress="hidden")
    refresh_inputs = [target, ctx.fields["model.name_or_path"], ctx.run_id, known]
    refresh.click(refresh_targets, refresh_inputs, [target, known])
    ctx.demo.load(refresh_targets, refresh_inputs, [target, known], show_progress="hidden")
    return ChatHandles(target=target, refresh_inputs=refresh_inputs, refresh_outputs=[target, known], chatbot=chatbot, message=message, send=send, clear=clear,
                       temperature=temperature, max_new_tokens=max_new_tokens)
