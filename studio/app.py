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
from .export_tab import build_export_tab, refresh_runs
from .gpu_panel import wire_fit_lines
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
        '<h1 class="ts-title">Tunesmith <span class="ts-tagline">— fine-tune open LLMs in your browser</span></h1>'
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
        gr.HTML(_header_html())
        with gr.Tabs(selected="model", elem_id="tabs") as tabs:
            ctx.tabs = tabs
            with gr.Tab("1 · Model", id="model", elem_id="tab-model"):
                build_model_tab(ctx)
            with gr.Tab("2 · Data", id="data", elem_id="tab-data"):
                build_data_tab(ctx)
            with gr.Tab("3 · Train", id="train", elem_id="tab-train"):
                build_train_tab(ctx)
            with gr.Tab("4 · Chat", id="chat", elem_id="tab-chat") as chat_tab:
                chat = build_chat_tab(ctx)
            with gr.Tab("5 · Export", id="export", elem_id="tab-export") as export_tab:
                export = build_export_tab(ctx)
            with gr.Tab("Runs", id="runs", elem_id="tab-runs"):
                build_runs_tab(ctx)
        gr.HTML('<div class="ts-footer">Runs keep going when you close this page. '
                'Everything here can also be done with the <code>tunesmith</code> command.</div>')

        wire_fit_lines(ctx)  # the fit lines read fields of several tabs
        # A run that finished while the page was open should be pickable without a reload.
        chat_tab.select(refresh_targets, chat.refresh_inputs, chat.refresh_outputs, show_progress="hidden")
        export_tab.select(refresh_runs, export.run, export.run, show_progress="hidden")
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
    # The studio takes the scheduler's role while it runs (engine.scheduler: a lease, so a
    # second studio or a CLI scheduler simply stands by), and hands it on when it exits.
    import atexit

    from tunesmith.engine import scheduler

    scheduler.start_background()
    atexit.register(scheduler.hand_off)
    css = _asset("studio.css")
    logo = _asset("logo.svg")
    demo.launch(
        server_name=host, server_port=port, auth=auth, inbrowser=open_browser,
        theme=theme(), css_paths=[css] if css.exists() else None,
        favicon_path=str(logo) if logo.exists() else None,
        auth_message="Tunesmith: log in with the user and password the studio was started with.",
        ssr_mode=False, **launch_kwargs,
    )
