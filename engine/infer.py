"""Chat with a base model or a finished run, streaming token by token.

    for piece in stream_chat("20261123-120000-ab12", [{"role": "user", "content": "Who are you?"}]):
        print(piece, end="")

A target is a run id (its base model plus its adapter, or its fully fine-tuned
model), a model name/path, or an exported .gguf file (run by llama.cpp through
llama-cpp-python, as engine.serve does). Loaded models are cached (the last two), so a
conversation does not reload weights for every message. temperature 0 means
greedy decoding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Iterator

import torch

from . import jobs, models
from .catalog import DEMO_LABEL
from .config import DEMO_MODEL, ModelConfig
from .errors import ModelError, RunError
from .lookup import check_model_name

_CACHE: "OrderedDict[tuple[str, float], tuple]" = OrderedDict()  # (target, weights stamp) -> (model, tok)
_CACHE_SIZE = 2
_LOCK = threading.Lock()


def chat_targets() -> list[tuple[str, str]]:
    """(label, target) pairs: the demo base model, then runs that have something to chat with."""
    out = [(f"Base: {DEMO_LABEL}", DEMO_MODEL)]
    for r in jobs.list_runs():
        if r.has_adapter or r.has_full_model:
            out.append((f"Run {r.name} ({r.id}, {r.status})", r.id))
    return out


def exported_ggufs() -> list[tuple[str, str]]:
    """(label, path) of the GGUF files exports left under $TUNESMITH_HOME/exports/RUN/gguf, newest first."""
    from . import paths

    names = {r.id: r.name for r in jobs.list_runs()}
    found = sorted(paths.exports_dir().glob("*/gguf/*.gguf"), key=lambda f: f.stat().st_mtime, reverse=True)
    return [(f"GGUF: {names.get(f.parent.parent.name, f.parent.parent.name)} · {f.name}", str(f)) for f in found]


def _load(target: str):
    if target.lower().endswith(".gguf"):
        from .serve import open_backend

        return open_backend(target), None  # no tokenizer: llama.cpp renders the chat with the file's template
    run = jobs.resolve_run(target)
    if run is None:
        check_model_name(target)  # seconds, before transformers spends a minute retrying the hub
        return models.load_for_inference(target)
    cfg = jobs.load_config(run)
    if run.has_full_model:
        return models.load_for_inference(str(run.run_dir / "model"), cfg.model)
    if not run.has_adapter:
        raise RunError(f"Run {run.id} has no adapter yet ({run.status}); wait for it to save one.")
    from peft import PeftModel

    from .adapters import use_loftq_base

    model, tok = models.load_for_inference(cfg.model.name_or_path, cfg.model)
    use_loftq_base(model, run.run_dir / "adapter")  # a LoftQ adapter goes on its 4-bit base, as trained
    model = PeftModel.from_pretrained(model, str(run.run_dir / "adapter"))
    model.eval()
    return model, tok


def _weights_stamp(target: str) -> float:
    """When a run's adapter (or model) was last written: a resumed run's new weights must
    not be answered by the copy cached before it resumed. 0 for plain models."""
    if target.lower().endswith(".gguf"):
        f = Path(target).expanduser()
        return f.stat().st_mtime if f.exists() else 0.0
    run = jobs.resolve_run(target)
    if run is None:
        return 0.0
    for f in (run.run_dir / "adapter" / "adapter_model.safetensors", run.run_dir / "model" / "config.json"):
        if f.exists():
            return f.stat().st_mtime
    return 0.0


def get_model(target: str):
    key = (target, _weights_stamp(target))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        for old in [k for k in _CACHE if k[0] == target]:
            del _CACHE[old]
        loaded = _load(target)
        _CACHE[key] = loaded
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return loaded


def forget(target: str | None = None) -> None:
    with _LOCK:
        for key in [k for k in _CACHE if target is None or k[0] == target]:
            del _CACHE[key]


_GGUF_LOCKS: dict[str, threading.Lock] = {}
_MODEL_LOCKS: "dict[int, threading.RLock]" = {}


def exclusive(model) -> "threading.RLock":
    """The lock a loaded model's users hold while they need it as it is: a chat generating from it, or an
    evaluation that switches its adapter off for base passes (engine.evaluate_preference), so a reply
    never mixes tokens of the base and the tuned model. Re-entrant: one thread may nest it."""
    with _LOCK:
        return _MODEL_LOCKS.setdefault(id(model), threading.RLock())


def _gguf_lock(target: str) -> threading.Lock:
    with _LOCK:
        return _GGUF_LOCKS.setdefault(target, threading.Lock())


def build_prompt_ids(tok, messages: list[dict]) -> torch.Tensor:
    if not getattr(tok, "chat_template", None):
        raise ModelError("This model's tokenizer has no chat template; set model.chat_template (e.g. chatml).")
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return ids["input_ids"]


def stream_chat(
    target: str, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0
) -> Iterator[str]:
    """Yield the reply as text pieces while it is generated."""
    model, tok = get_model(target)
    if tok is None:  # a GGUF file (engine.serve.GGUFBackend); one generation at a time per loaded file
        with _gguf_lock(target):
            yield from model.chat(messages, max_new_tokens, temperature, top_p)
        return
    input_ids = build_prompt_ids(tok, messages).to(model.device)
    yield from stream_generate(model, tok, input_ids, max_new_tokens, temperature, top_p)


def stream_generate(model, tok, input_ids: torch.Tensor, max_new_tokens: int = 256, temperature: float = 0.0,
                    top_p: float = 1.0) -> Iterator[str]:
    """Yield the text generated after `input_ids` (a 1 x n tensor on the model's device), piece by piece."""
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    gen_kwargs = dict(
        input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
        streamer=streamer, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    errors: list[BaseException] = []

    def _run() -> None:
        try:
            with exclusive(model), torch.inference_mode():
                model.generate(**gen_kwargs)
        except BaseException as e:  # surfaced to the caller below
            errors.append(e)
            streamer.end()

    th = threading.Thread(target=_run, daemon=True)
    th.start()
    for piece in streamer:
        if piece:
            yield piece
    th.join()
    if errors:
        raise ModelError(f"Generation failed: {errors[0]}")


def chat(target: str, messages: list[dict], **kw) -> str:
    return "".join(stream_chat(target, messages, **kw))
