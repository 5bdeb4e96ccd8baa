"""The Tunesmith studio: one Gradio Blocks app with six tabs over the engine.

    from tunesmith.studio.app import launch
    launch()                                   # http://127.0.0.1:7860
    launch(host="0.0.0.0", auth=("me", "pw"))  # reachable from other machines

`tunesmith studio` (cli/) calls launch(). Each tab lives in its own module and
exposes build_<tab>_tab(ctx); they share a StudioContext (context.py). The
studio holds no run state of its own: runs live in the engine's database and
run directories, so reloading the page or restarting the studio loses nothing.

What it does not do: authenticate anything beyond Gradio's login form. Binding
to a non-loopback address therefore requires a user and password.
"""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from tunesmith.engine import catalog, paths
from tunesmith.engine.config import DEMO_MODEL, RunConfig
from tunesmith.engine.errors import ConfigError

from .chat_tab import build_chat_tab, refresh_targets
from .context import StudioContext, config_from_form
from .data_tab import build_data_tab
from .evaluate_tab import build_evaluate_tab
from .evaluate_tab import refresh as refresh_eval
from .export_tab import build_export_tab, refresh_runs
from .i18n import I18N, T, language_switch, wire_language_switch
from .model_tab import build_model_tab
from .runs_tab import build_runs_tab
from .train_tab import build_train_tab

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
AUTH_ENV = "TUNESMITH_AUTH"
TITLE = "Tunesmith — fine-tune open LLMs in your browser"


def _asset(name: str) -> Path:
    """assets/<name> in a checkout, tunesmith/assets/<name> when installed."""
    return paths.assets_dir() / name


def _header_html() -> str:
    logo = _asset("logo.svg")
    svg = logo.read_text(encoding="utf-8") if logo.exists() else ""
    return (
        f'<div class="ts-header"><div class="ts-logo">{svg}</div>'
        f'<h1 class="ts-title">Tunesmith <span class="ts-tagline">— {T("fine-tune open LLMs in your browser")}</span></h1>'
        '</div>'
    )


def theme() -> gr.themes.Base:
    # System fonts: the studio must look right offline (no Google Fonts fetch).
    sans = ["Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate", font=sans,
                          font_mono=mono, radius_size="md")


def initial_config() -> tuple[RunConfig, dict]:
    """The form's starting config: defaults plus the demo model's recommended settings."""
    overrides = catalog.recommended_overrides(DEMO_MODEL)
    return config_from_form({}, overrides), overrides


def build_app(remote: bool = False) -> gr.Blocks:
    """The studio. `remote` (served beyond loopback): the Data tab's check reads
    files only from uploads, the bundled data and TUNESMITH_HOME."""
    return build_studio(remote)[0]


def build_studio(remote: bool = False) -> tuple[gr.Blocks, StudioContext]:
    """The app and its context (tests inspect the registered fields)."""
    initial, overrides = initial_config()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        ctx = StudioContext.create(demo, initial, overrides)
        if remote:
            ctx.allowed_roots = [paths.uploads_dir(), paths.data_dir(), paths.home()]
        with gr.Row(equal_height=True, elem_classes="ts-top"):
            gr.HTML(_header_html())
            lang = language_switch()
        with gr.Tabs(selected="model", elem_id="tabs") as tabs:
            ctx.tabs = tabs
            with gr.Tab(T("1 · Model"), id="model", elem_id="tab-model"):
                build_model_tab(ctx)
            with gr.Tab(T("2 · Data"), id="data", elem_id="tab-data"):
                build_data_tab(ctx)
            with gr.Tab(T("3 · Train"), id="train", elem_id="tab-train"):
                build_train_tab(ctx)
            with gr.Tab(T("4 · Chat"), id="chat", elem_id="tab-chat") as chat_tab:
                chat = build_chat_tab(ctx)
            with gr.Tab(T("5 · Export"), id="export", elem_id="tab-export") as export_tab:
                export = build_export_tab(ctx)
            with gr.Tab(T("Evaluate"), id="evaluate", elem_id="tab-evaluate") as evaluate_tab:
                evaluate = build_evaluate_tab(ctx)
            with gr.Tab(T("Runs"), id="runs", elem_id="tab-runs"):
                build_runs_tab(ctx)
        gr.Markdown(T("Runs keep going when you close this page. Everything here can also be done with the "
                      "`tunesmith` command."), elem_classes="ts-footer")

        # A run that finished while the page was open should be pickable without a reload.
        chat_tab.select(refresh_targets, chat.refresh_inputs, chat.refresh_outputs, show_progress="hidden")
        export_tab.select(refresh_runs, export.refresh_inputs, export.refresh_outputs, show_progress="hidden")
        evaluate_tab.select(refresh_eval, evaluate.refresh_inputs, evaluate.refresh_outputs, show_progress="hidden")
        wire_language_switch(demo, lang)
    return demo, ctx


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"{AUTH_ENV} / --auth must look like user:password (got {value!r}).")
    return user, password


def check_bind(host: str, auth: tuple[str, str] | None) -> None:
    """Refuse to serve beyond this machine without a login."""
    if host not in LOOPBACK and auth is None:
        raise ConfigError(
            f"Refusing to serve the studio on {host} without a login: anyone who can reach this machine "
            f"could run code and read your files. Pass --auth user:password or set {AUTH_ENV}=user:password "
            "(or bind to 127.0.0.1)."
        )


def launch(host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           open_browser: bool = False, **launch_kwargs) -> None:
    """Serve the studio (blocks until interrupted).

    `auth` falls back to $TUNESMITH_AUTH (user:password). Raises ConfigError when
    binding to a non-loopback address without one.
    """
    if auth is None and os.environ.get(AUTH_ENV):
        auth = parse_auth(os.environ[AUTH_ENV])
    check_bind(host, auth)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(remote=host not in LOOPBACK)
    demo.queue(default_concurrency_limit=4)
    css = _asset("studio.css")
    logo = _asset("logo.svg")
    demo.launch(
        server_name=host, server_port=port, auth=auth, inbrowser=open_browser,
        theme=theme(), css_paths=[css] if css.exists() else None,
        favicon_path=str(logo) if logo.exists() else None,
        auth_message="Tunesmith: log in with the user and password the studio was started with.",
        ssr_mode=False, i18n=I18N,
        footer_links=[],  # Gradio's API / "Runs" history / settings links lead away from the studio
        **launch_kwargs,
    )
