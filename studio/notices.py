"""Mistakes shown as one toast, with nothing else on the page changed.

    @toast_errors
    def do_export(run_id, ...):
        if not run_id:
            raise gr.Error(tr("Pick a run to export."))
        ...

A handler that raises makes Gradio paint a red "Error" badge over every one of
its outputs: a taken dataset name would turn the whole Data form red. Here the
engine's typed errors and the studio's own gr.Error become a warning toast
with the message as a plain sentence (i18n.plain), and the handler's outputs
are all skipped. Handlers chained with .success() after one of these must
therefore not assume the first one changed anything (chat checks for the new
message itself).

Anything else is a bug and still raises: Gradio shows a generic error and the
traceback goes to the terminal, never to the browser.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import gradio as gr

from tunesmith.engine.errors import TunesmithError
from tunesmith.engine.text import one_line

from .i18n import plain


def _message(e: Exception) -> str:
    if isinstance(e, OSError):  # what the machine refused: a full disk, a permission
        from pathlib import Path

        from tunesmith.engine.diskspace import disk_full_reason

        return one_line(disk_full_reason(e, Path(e.filename or ".")) or f"{e.strerror or e}: {e.filename or ''}")
    return one_line(plain(getattr(e, "message", None) or str(e)))


def toast_errors(fn: Callable) -> Callable:
    """Turn TunesmithError / gr.Error / OSError into a warning toast and skip every output (generators too)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except (TunesmithError, gr.Error, OSError) as e:
                gr.Warning(_message(e))
                yield gr.skip()

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except (TunesmithError, gr.Error, OSError) as e:
            gr.Warning(_message(e))
            return gr.skip()

    return wrapper
