"""Every string the studio shows has a Chinese translation; messages read as plain sentences."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tunesmith.engine import recommend
from tunesmith.studio import app, data_tab, evaluate_tab, export_tab, guide, runs_tab, train_tab
from tunesmith.studio.i18n import ZH, pick_lang, plain, tr, used_keys

STUDIO = Path(data_tab.__file__).parent


@pytest.fixture(scope="module")
def studio():
    return app.build_studio()


def _literal_keys() -> set[str]:
    """The first argument of every T("...") / tr("...") call in the studio's source."""
    keys = set()
    for path in STUDIO.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("T", "tr")
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                keys.add(node.args[0].value)
    return keys


def _table_keys() -> set[str]:
    """Strings passed to tr() from tables rather than as literals."""
    keys = {label for layout in data_tab.MAP_LAYOUT.values() for label, _ in layout.values()}
    keys |= set(data_tab.FORMAT_HELP.values()) | {"given", "detected", "as registered"}
    keys |= set(runs_tab.COLUMNS) | set(evaluate_tab.SCORE_COLUMNS) | set(export_tab.RESULT_COLUMNS)
    keys |= {c for _, c in evaluate_tab.PREFERENCE_COLUMNS} | set(evaluate_tab.PREFERENCE_HINTS.values())
    keys |= set(train_tab.METHOD_NAMES.values())
    keys |= {"queued", "running", "stopping", "completed", "stopped", "failed"}
    keys |= set(recommend.REASONS) | set(guide.NEXT.values()) | set(guide.EMPTY.values()) | {guide.TRAINING,
                                                                                                guide.ALL_DONE}
    keys |= {label for _, label in guide.STEPS}
    return keys


def test_every_message_key_has_chinese(studio):
    # `studio` (conftest) built the whole app, so used_keys() holds every widget's label, info and choices.
    keys = _literal_keys() | _table_keys() | used_keys()
    missing = sorted(k for k in keys if k not in ZH)
    assert not missing, missing
    assert len(keys) > 250


@pytest.mark.parametrize("key", sorted(_literal_keys()))
def test_every_message_renders_in_both_languages(key):
    values = {name: "x" for name in ("run", "n", "name", "free", "fmt", "cols", "why", "file", "types", "what",
                                     "k", "total", "ok", "errors", "warnings", "how", "median", "longest",
                                     "cutoff", "cut", "trained", "note", "model", "datasets", "method", "length",
                                     "status", "problem", "step", "place", "url", "port", "rows")}
    numbers = {"lr": 0.001, "pct": 98.5, "kl": 0.01}
    fmt_values = {**values, **numbers}
    used = {f for f in fmt_values if "{" + f in key}
    en = tr(key, "en", **{f: fmt_values[f] for f in used})
    zh = tr(key, "zh-CN", **{f: fmt_values[f] for f in used})
    assert en and zh
    if any(c.isalpha() and c.isascii() for c in key.replace("GGUF", "").replace("LoRA", "")) and key not in (
            "FP4", "BLEU", "ROUGE-L"):
        assert zh != en or key in ("Run ",), key


def test_the_language_comes_from_the_switch_then_the_browser():
    assert pick_lang(None, "zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert pick_lang(None, "en-US,en;q=0.9") == "en"
    assert pick_lang("a=b; tunesmith-lang=en", "zh-CN") == "en"  # the saved choice wins
    assert pick_lang("tunesmith-lang=zh-CN", None) == "zh-CN"
    assert pick_lang(None, "fr-FR") == "en"


def test_config_errors_read_as_plain_sentences(studio):
    from tunesmith.engine.errors import ConfigError
    from tunesmith.studio.context import config_from_form

    with pytest.raises(ConfigError) as e:
        config_from_form({"data.datasets": []})
    msg = plain(str(e.value))
    assert msg == "Datasets: pick at least one dataset."
    assert plain("Run x has no adapter yet.") == "Run x has no adapter yet."  # other messages pass through


@pytest.mark.parametrize("key", recommend.REASONS)
def test_recommendation_reasons_render_in_both_languages(key):
    values = {"rows": "1,200", "r": 16, "alpha": 32, "batch": 2, "accum": 8, "total": 16}
    en, zh = tr(key, "en", **values), tr(key, "zh-CN", **values)
    assert "{" not in en and "{" not in zh and en != zh
