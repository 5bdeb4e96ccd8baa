"""Export tab: llama.cpp support, installed from the page on first use.

F16/BF16/Q8_0 GGUF files are written by Tunesmith and need nothing more; the K-quants and the
llama.cpp check need llama-cpp-python, which pip builds from source (engine.gguf.llamacpp_setup).
This panel says which case the machine is in and offers one button that installs it with a
progress bar and a time estimate. The engine does the work; this file only shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from tunesmith.engine.gguf import llamacpp_setup

from .context import user_errors
from .i18n import T, tr

INSTALL_LABEL = "Install llama.cpp support"


@dataclass
class LlamaCppPanel:
    status: gr.Markdown
    install: gr.Button


def _status_text(st: llamacpp_setup.LlamaCppStatus) -> str:
    lines = [st.summary()]
    lines += [tr("Note: {note}.", note=n) for n in st.notes]
    return "\n\n".join(lines)


def current_status() -> tuple[dict, dict]:
    """(status text, button) for the machine as it is now."""
    st = llamacpp_setup.status()
    return (gr.update(value=_status_text(st), visible=not st.installed),
            gr.update(visible=not st.installed, interactive=not st.missing))


def build_llamacpp_panel() -> LlamaCppPanel:
    """The status line and the install button; call inside the Export tab's layout."""
    status = gr.Markdown(visible=False, elem_classes="ts-hint", elem_id="llamacpp-status")
    install = gr.Button(T(INSTALL_LABEL), size="sm", visible=False, elem_id="llamacpp-install")

    @user_errors
    def do_install(progress=gr.Progress()):
        llamacpp_setup.install(lambda f, m: progress(f, desc=m))
        gr.Info(tr("llama.cpp support installed: K-quants and the llama.cpp check are ready."))
        return current_status()

    install.click(do_install, None, [status, install], concurrency_limit=1)
    return LlamaCppPanel(status=status, install=install)
