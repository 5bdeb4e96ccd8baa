"""The Tunesmith studio: one Gradio Blocks app with six tabs over the engine.

    from tunesmith.studio.app import launch
    launch()                                   # http://127.0.0.1:7860
    launch(host="0.0.0.0", auth=("me", "pw"))  # reachable from other machines

`tunesmith studio` (cli/) calls launch(). Each tab lives in its own module and
exposes build_<tab>_tab(ctx); they share a StudioContext (context.py). The
studio holds no run state of its own: runs live in the engine's database and
run directories, so reloading the page or restarting the studio loses nothing.

Who may use it, and what it may touch: binding to a non-loopback address
requires a login (Gradio's form, checked by a password or its hash, login.py);
every request passes RequestGuard (guard.py: Host allow-list, Origin check,
nothing but the login page before login, login back-off, body caps); and paths
from the browser are confined to uploads, bundled data and the folders the
person allowed (confine.py). The CLI keeps full access to the file system.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd
from starlette.middleware import Middleware

from tunesmith.engine import catalog, paths
from tunesmith.engine.config import DEMO_MODEL, RunConfig
from tunesmith.engine.errors import ConfigError

from .chat_tab import build_chat_tab, refresh_targets
from .confine import Confinement
from .context import StudioContext, config_from_form
from .data_tab import build_data_tab
from .evaluate_tab import build_evaluate_tab
from .evaluate_tab import refresh as refresh_eval
from .export_tab import RESULT_COLUMNS, build_export_tab, refresh_runs
from .guard import AccessPolicy, RequestGuard
from .i18n import I18N, T, language_switch, tr, wire_language_switch
from .login import LOGIN_FILE_ENV, login_from_file
from .gpu_panel import wire_fit_lines
from .guide import build_guide, empty_note, wire_guide
from .model_tab import build_model_tab
from .recommend_panel import wire_recommend_panel
from .runs_tab import build_runs_tab
from .train_tab import build_train_tab

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
AUTH_ENV = "TUNESMITH_AUTH"
MAX_UPLOAD_ENV = "TUNESMITH_MAX_UPLOAD_MB"
# 512 MB holds nearly any fine-tuning set a person drops in a browser (Alpaca's 52k rows are 22 MB,
# a 100k-conversation chat set a few hundred MB) while one request cannot fill the disk with gigabytes;
# bigger files are better read in place: start the studio with --allow-dir FOLDER.
DEFAULT_MAX_UPLOAD_MB = 512
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


def build_app(confine: Confinement | None = None) -> gr.Blocks:
    """The studio; paths from the browser are limited by `confine` (default: no allowed folders
    beyond uploads and the bundled data)."""
    return build_studio(confine)[0]


def build_studio(confine: Confinement | None = None) -> tuple[gr.Blocks, StudioContext]:
    """The app and its context (tests inspect the registered fields)."""
    initial, overrides = initial_config()
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        ctx = StudioContext.create(demo, initial, overrides, confine or Confinement())
        with gr.Row(equal_height=True, elem_classes="ts-top"):
            gr.HTML(_header_html())
            lang = language_switch()
        guide = build_guide(ctx)  # 1 Model -> 2 Data -> 3 Train -> 4 Chat -> 5 Export: what is done, what is next
        with gr.Tabs(selected="model", elem_id="tabs") as tabs:
            ctx.tabs = tabs
            with gr.Tab(T("1 · Model"), id="model", elem_id="tab-model") as model_tab:
                build_model_tab(ctx)
            with gr.Tab(T("2 · Data"), id="data", elem_id="tab-data") as data_tab:
                build_data_tab(ctx)
            with gr.Tab(T("3 · Train"), id="train", elem_id="tab-train") as train_tab:
                train = build_train_tab(ctx)
            with gr.Tab(T("4 · Chat"), id="chat", elem_id="tab-chat") as chat_tab:
                empty_note(ctx, "chat")
                chat = build_chat_tab(ctx)
            with gr.Tab(T("5 · Export"), id="export", elem_id="tab-export") as export_tab:
                empty_note(ctx, "export")
                export = build_export_tab(ctx)
            with gr.Tab(T("Evaluate"), id="evaluate", elem_id="tab-evaluate") as evaluate_tab:
                empty_note(ctx, "evaluate")
                evaluate = build_evaluate_tab(ctx)
            with gr.Tab(T("Runs"), id="runs", elem_id="tab-runs") as runs_tab:
                empty_note(ctx, "runs")
                runs = build_runs_tab(ctx)
        gr.Markdown(T("Runs keep going when you close this page. Everything here can also be done with the "
                      "`tunesmith` command."), elem_classes="ts-footer")

        wire_fit_lines(ctx)  # the fit lines read fields of several tabs
        # A run that finished while the page was open should be pickable without a reload.
        chat_tab.select(refresh_targets, chat.refresh_inputs, chat.refresh_outputs, show_progress="hidden")
        export_tab.select(refresh_runs, export.refresh_inputs, export.refresh_outputs, show_progress="hidden")
        evaluate_tab.select(refresh_eval, evaluate.refresh_inputs, evaluate.refresh_outputs, show_progress="hidden")
        wire_recommend_panel(ctx)  # the button fills fields of the Model and Train tabs
        tab_selects = [t.select for t in (model_tab, data_tab, train_tab, chat_tab, export_tab, evaluate_tab, runs_tab)]
        wire_guide(ctx, guide, lang, [*tab_selects, ctx.run_id.change, train.stats.change, export.results.change,
                                      runs.table.change],
                   [chat.send.click, chat.message.submit], chat.target)
        wire_language_switch(demo, lang)
        # The Export table's headers are drawn before the page's language is known: redraw them in it.
        gr.on([demo.load, lang.change], lambda code: pd.DataFrame(columns=[tr(c, code) for c in RESULT_COLUMNS]),
              lang, export.results, show_progress="hidden")
    return demo, ctx


def parse_auth(value: str) -> tuple[str, str]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        # The value is not echoed: it may be a password typed without its user.
        raise ConfigError(f"{AUTH_ENV} / --auth must look like user:password.")
    return user, password


Auth = tuple[str, str] | Callable[[str, str], bool]


def resolve_auth(auth: Auth | None) -> Auth | None:
    """The login: `auth`, else $TUNESMITH_AUTH (user:password), else the hashed login kept in
    $TUNESMITH_LOGIN_FILE (a password is generated and printed once when the file is new)."""
    if auth is None and os.environ.get(AUTH_ENV):
        auth = parse_auth(os.environ[AUTH_ENV])
    if auth is None and os.environ.get(LOGIN_FILE_ENV):
        path = Path(os.environ[LOGIN_FILE_ENV]).expanduser()
        user, check, new_password = login_from_file(path)
        if new_password:
            print(f"\n  Studio login  user: {user}   password: {new_password}\n"
                  f"  Shown this once; only its hash is kept ({path}). Delete that file for a new password,\n"
                  f"  or set {AUTH_ENV}=user:password.\n", flush=True)
        else:
            print(f"Studio login: user {user} with the password printed when {path} was created "
                  "(delete the file for a new one).", flush=True)
        auth = check
    return auth


def check_bind(host: str, auth: Auth | None) -> None:
    """Refuse to serve beyond this machine without a login."""
    if host not in LOOPBACK and auth is None:
        raise ConfigError(
            f"Refusing to serve the studio on {host} without a login: anyone who can reach this machine "
            f"could run code and read your files. Pass --auth user:password or set {AUTH_ENV}=user:password "
            "(or bind to 127.0.0.1)."
        )


def max_upload_mb(value: float | None = None) -> float:
    """--max-upload-mb, else $TUNESMITH_MAX_UPLOAD_MB, else the default."""
    raw = value if value is not None else os.environ.get(MAX_UPLOAD_ENV, DEFAULT_MAX_UPLOAD_MB)
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb > 0 or mb == float("inf"):
        raise ConfigError(f"--max-upload-mb / {MAX_UPLOAD_ENV}: give a size in MB above 0 (got {raw!r}).")
    return mb


def launch(host: str = "127.0.0.1", port: int = 7860, auth: Auth | None = None,
           open_browser: bool = False, allow_dirs: list[str] | None = None, allow_hosts: list[str] | None = None,
           max_upload: float | None = None, **launch_kwargs) -> None:
    """Serve the studio (blocks until interrupted).

    `auth` falls back to $TUNESMITH_AUTH, then to $TUNESMITH_LOGIN_FILE (see
    resolve_auth). `allow_dirs` (plus $TUNESMITH_ALLOW_DIRS) are the folders
    beyond uploads and the bundled data that the browser may name;
    `allow_hosts` (plus $TUNESMITH_ALLOW_HOSTS) the host names it answers to
    beyond loopback and `host`; `max_upload` the upload limit in MB. Raises
    ConfigError when binding to a non-loopback address without a login, and for
    a bad folder or size.
    """
    auth = resolve_auth(auth)
    check_bind(host, auth)
    confine = Confinement.from_env(allow_dirs)
    upload_mb = max_upload_mb(max_upload)
    policy = AccessPolicy.build(host, allow_hosts, auth=auth is not None, max_upload_mb=upload_mb)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(confine)
    demo.queue(default_concurrency_limit=4)
    # The studio takes the scheduler's role while it runs (engine.scheduler: a lease, so a
    # second studio or a CLI scheduler simply stands by), and hands it on when it exits.
    import atexit

    from tunesmith.engine import scheduler

    scheduler.start_background()
    atexit.register(scheduler.hand_off)
    css = _asset("studio.css")
    logo = _asset("logo.svg")
    if confine.allow_dirs:
        print("The studio may also read and write: " + ", ".join(map(str, confine.allow_dirs)), flush=True)
    demo.launch(
        server_name=host, server_port=port, auth=auth, inbrowser=open_browser,
        theme=theme(), css_paths=[css] if css.exists() else None,
        favicon_path=str(logo) if logo.exists() else None,
        auth_message="Tunesmith: log in with the user and password the studio was started with.",
        max_file_size=int(upload_mb * 2**20),
        app_kwargs={"middleware": [Middleware(RequestGuard, policy=policy)]},
        ssr_mode=False, i18n=I18N,
        footer_links=[],  # Gradio's API / "Runs" history / settings links lead away from the studio
        **launch_kwargs,
    )
