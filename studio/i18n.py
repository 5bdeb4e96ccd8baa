"""The studio's languages: English and Simplified Chinese, picked from the browser, switchable.

    from .i18n import T, tr
    gr.Button(T("Start training"))                  # static text: the browser translates it (gr.I18n)
    gr.Info(tr("Started run {run}.", run=run_id))   # text made in a handler: translated here

A string is written once, in English, where it is used; the English text is its
key, and locales/zh_cn.py maps it to Chinese (no third copy, no id to keep in
step). `T()` records every key it is given, so a test can build the app and
check that each one has a translation.

Which language a page uses: the choice saved by the header's language switch
(localStorage and a cookie, so handlers know it too), else the browser's
language. Static text switches in place through Gradio's own locale store;
handlers read the cookie (or Accept-Language) of the request they serve.

What it does not translate: engine messages (errors from the engine, the
config's YAML, log lines) and data (dataset rows, model replies).
"""

from __future__ import annotations

import re
from typing import Any

import gradio as gr

from .locales.zh_cn import ZH

LANGS: dict[str, str] = {"en": "English", "zh-CN": "简体中文"}
COOKIE = "tunesmith-lang"
_USED: set[str] = set()

# gr.I18n looks keys up in the browser; English keys map to themselves.
I18N = gr.I18n(en={k: k for k in ZH}, **{"zh-CN": ZH})


def T(text: str):
    """Static text for a component's label, info, placeholder or value, translated in the browser."""
    _USED.add(text)
    return I18N(text)


FIELD_LABELS: dict[str, str] = {}  # dotted config path -> its widget's English label (StudioContext.field)


def plain(message: str) -> str:
    """An engine message as a person reads it: a config error's "form: invalid config: data.datasets:
    Value error, pick at least one dataset." becomes "Datasets: pick at least one dataset."."""
    m = re.match(r"^[^\n:]+: invalid config:\s*(.*)$", message, re.S)
    if not m:
        return message
    # One item a line, or all on one line (one_line() joins them): split before each "section.field: ".
    body = " ".join(m.group(1).split())
    items = re.split(r"\s+(?=[a-z_]+(?:\.[a-z_]+)+: )", body)
    out = []
    for item in items:
        path, sep, rest = item.partition(": ")
        if not sep:
            out.append(item)
            continue
        rest = re.sub(r"^(Value error|Assertion failed), ", "", rest)
        rest = rest[:1].lower() + rest[1:]
        name = FIELD_LABELS.get(path)
        out.append(f"{tr(name) if name else path}: {rest}")
    return " ".join(out)


def used_keys() -> set[str]:
    """Every key passed to T() or tr() so far in this process."""
    return set(_USED)


def pick_lang(cookie_header: str | None, accept_language: str | None) -> str:
    """"zh-CN" or "en": the saved choice in the cookie, else the first language the browser accepts that we have."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value in LANGS:
            return value
    for item in (accept_language or "").split(","):
        tag = item.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"


def current_lang() -> str:
    """The language of the page whose event is being handled ("en" outside a request)."""
    from gradio.context import LocalContext

    request = LocalContext.request.get(None)
    if request is None:
        return "en"
    try:
        headers = request.headers
        return pick_lang(headers.get("cookie"), headers.get("accept-language"))
    except Exception:  # a request without headers (e.g. an API call from a script)
        return "en"


def tr(text: str, lang: str | None = None, **values) -> str:
    """`text` in the page's language (or `lang`), with {placeholders} filled from `values`."""
    _USED.add(text)
    out = ZH.get(text, text) if (lang or current_lang()) == "zh-CN" else text
    return out.format(**values) if values else out


# Runs once per page load (gr.Blocks(js=...)): applies a saved language choice and
# defines the switch. Gradio keeps its locale in a module of its own bundle; the
# switch imports that same module (by the URL the page already loaded) to change it.
LOAD_JS = """
() => {
  const COOKIE = "%(cookie)s";
  const save = (lang) => {
    localStorage.setItem(COOKIE, lang);
    document.cookie = `${COOKIE}=${lang}; path=/; max-age=31536000; SameSite=Lax`;
  };
  window.tunesmithSetLang = async (lang) => {
    save(lang);
    const core = performance.getEntriesByType("resource").map((e) => e.name)
      .find((n) => /\\/assets\\/core-[^/]*\\.js$/.test(n));
    if (core) { (await import(core)).changeLocale(lang); }
    document.documentElement.lang = lang;
  };
  const saved = localStorage.getItem(COOKIE);
  const browser = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
  const lang = saved || browser;
  if (saved) { window.tunesmithSetLang(saved); } else { save(lang); document.documentElement.lang = lang; }
  return lang;
}
""" % {"cookie": COOKIE}

SWITCH_JS = "(lang) => { window.tunesmithSetLang && window.tunesmithSetLang(lang); return lang; }"


# Choice labels (radio buttons, dropdown entries) are not among the props Gradio translates
# in the browser: widgets register them here and get them in the page's language on load
# and on every switch. Keyed by the Blocks being built, so several apps in one process
# (tests) keep theirs apart.
_CHOICE_WIDGETS: dict[int, list[tuple[Any, list[tuple[str, Any]]]]] = {}


def choices(pairs: list[tuple[str, Any]], widget=None):
    """[(English label, value)] for a widget's `choices`; pass the widget once it exists
    (`localize(widget, pairs)`) so its labels follow the page's language."""
    for label, value in pairs:
        if label != str(value):  # a label that is its value (a model id, "bf16") is not translated
            _USED.add(label)
    return list(pairs)


def localize(widget, pairs: list[tuple[str, Any]]):
    """Make `widget`'s choice labels follow the page's language; returns the widget."""
    choices(pairs)
    root = gr.context.Context.root_block
    _CHOICE_WIDGETS.setdefault(id(root), []).append((widget, list(pairs)))
    return widget


def _choice_updates(demo: gr.Blocks, lang: str) -> list:
    return [gr.update(choices=[(ZH.get(label, label) if lang == "zh-CN" else label, value) for label, value in pairs])
            for _, pairs in _CHOICE_WIDGETS.get(id(demo), [])]


def language_switch() -> gr.Radio:
    """The header's language switch; wire it with `wire_language_switch` once every tab is built."""
    return gr.Radio([(name, code) for code, name in LANGS.items()], value="en", show_label=False, container=False,
                    elem_id="lang-switch", elem_classes="ts-lang", min_width=200)


def wire_language_switch(demo: gr.Blocks, switch: gr.Radio) -> None:
    """On load and on every switch: the browser changes its locale (the js), then the server sends the
    choice labels in that language."""
    widgets = [w for w, _ in _CHOICE_WIDGETS.get(id(demo), [])]

    def apply(lang: str):
        lang = lang if lang in LANGS else "en"
        return [lang, *_choice_updates(demo, lang)]

    demo.load(apply, switch, [switch, *widgets], js=LOAD_JS, show_progress="hidden")
    switch.input(apply, switch, [switch, *widgets], js=SWITCH_JS, show_progress="hidden")
