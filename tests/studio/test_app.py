"""The studio app: binding rules, the form covers RunConfig, and handlers over a real registry."""

from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pytest
from pydantic import BaseModel

from tunesmith.engine import catalog, registry
from tunesmith.engine.config import DEMO_MODEL, RunConfig, field_help
from tunesmith.engine.errors import ConfigError, DataError
from tunesmith.engine.export import ExportResult
from tunesmith.engine.jobs import RunInfo
from tunesmith.studio import app, chat_tab, export_tab, runs_tab, train_tab


@pytest.fixture(autouse=True)
def no_scheduler_thread(monkeypatch):
    """app.launch starts the studio's scheduler thread; these tests only look at what launch is given,
    and a thread left ticking in the pytest process would start later tests' queued runs."""
    from tunesmith.engine import scheduler

    monkeypatch.setattr(scheduler, "start_background", lambda: None)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path))
    monkeypatch.delenv("TUNESMITH_AUTH", raising=False)
    return tmp_path


# ---- binding ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_non_loopback_without_auth_is_refused(host, home, monkeypatch):
    served = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: served.append(kw))
    with pytest.raises(ConfigError) as e:
        app.launch(host=host)
    assert "--auth user:password" in str(e.value) and "TUNESMITH_AUTH" in str(e.value)
    assert not served


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_needs_no_auth(host):
    app.check_bind(host, None)


def test_auth_from_argument_or_environment(home, monkeypatch):
    served = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: served.append(kw))
    app.launch(host="0.0.0.0", port=7999, auth=("ann", "pw"))
    monkeypatch.setenv("TUNESMITH_AUTH", "bob:s3:cret")
    app.launch(host="0.0.0.0", port=7999)
    assert [kw["auth"] for kw in served] == [("ann", "pw"), ("bob", "s3:cret")]
    assert served[0]["server_name"] == "0.0.0.0" and served[0]["server_port"] == 7999
    monkeypatch.setenv("TUNESMITH_AUTH", "nobody")
    with pytest.raises(ConfigError, match="user:password"):
        app.launch(host="0.0.0.0")


def test_studio_limits_what_the_data_tab_reads(home):
    # On loopback too: any page or local user can call the API (tests/security probes it).
    roots = app.build_studio()[1].allowed_roots
    assert home / "uploads" in roots and home not in roots


# ---- the form ----------------------------------------------------------------------------


def _leaf_paths(model=RunConfig, prefix="") -> set[str]:
    out = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _leaf_paths(ann, f"{prefix}{name}.")
        else:
            out.add(prefix + name)
    return out


@pytest.fixture(scope="module")
def studio():
    return app.build_studio()


def test_every_config_field_has_a_widget_with_its_help(studio):
    _, ctx = studio
    assert set(ctx.fields) == _leaf_paths()
    for path, comp in ctx.fields.items():
        assert getattr(comp.info, "key", comp.info) == field_help(path), path  # an i18n key: the English help


def test_form_starts_at_demo_model_with_its_recommended_settings(studio):
    _, ctx = studio
    values = {comp: comp.value for comp in ctx.fields.values()}
    values[ctx.applied_overrides] = ctx.applied_overrides.value
    cfg = ctx.config_from(values)
    expected = RunConfig().with_overrides(catalog.demo_overrides_list())
    assert cfg.model.name_or_path == DEMO_MODEL
    assert cfg == expected


def test_demo_model_is_first_and_labelled(studio):
    _, ctx = studio
    label, value = ctx.fields["model.name_or_path"].choices[0]
    assert value == DEMO_MODEL and "Demo model" in label and "not for real work" in label


# ---- handlers over a real registry -----------------------------------------------------


def _fake_run(home: Path, status: str = "completed", n: int = 5, error: str | None = None) -> RunInfo:
    run_id = f"20250101-000000-{status[:4]}"
    run_dir = home / "runs" / run_id
    run_dir.mkdir(parents=True)
    lines = [{"type": "status", "status": "running", "message": "", "time": 0}]
    lines += [{"type": "train", "step": s, "max_steps": n, "loss": 2.0 / s, "elapsed_s": s, "eta_s": n - s,
               "tokens_per_s": 100.0, "peak_mem_gb": 0.5, "time": s} for s in range(1, n + 1)]
    lines.append({"type": "status", "status": status, "message": error or "", "time": n + 1})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    info = RunInfo(id=run_id, name=f"demo-{status}", status="running", model=DEMO_MODEL, datasets=["identity"],
                   method="lora", run_dir=run_dir, created_at=time.time(), max_steps=n)
    registry.insert(info)
    return info


def test_monitor_view_renders_a_run_then_skips_when_nothing_changed(home):
    run = _fake_run(home)
    stats, progress, fig, err, timer, key = train_tab.monitor_view(run.id)
    assert "completed" in stats and "demo-completed" in stats
    assert "100%" in progress and "step 5 / 5" in progress
    assert len(fig.data[0].x) == 5
    assert timer.active is False and err["visible"] is False
    again = train_tab.monitor_view(run.id, key)
    assert again[:4] == (gr.skip(),) * 4 and again[5] == key


def test_monitor_shows_the_error_of_a_failed_run(home):
    run = _fake_run(home, "failed", n=2, error="Traceback ...\nRuntimeError: out of memory")
    *_, err, _, _ = train_tab.monitor_view(run.id)
    assert err["visible"] and "out of memory" in err["value"]
    assert runs_tab.run_error(run.id)["visible"]


def test_monitor_of_unknown_or_no_run(home):
    assert "no longer exists" in train_tab.monitor_view("nope")[0]
    assert train_tab.monitor_view(None)[4].active is False


def test_initial_run_prefers_the_saved_one(home):
    run = _fake_run(home)
    assert train_tab.initial_run(run.id) == run.id
    assert train_tab.initial_run("deleted-run") is None  # nothing live either


def test_runs_table(home):
    run = _fake_run(home)
    df, picker, key, compare = runs_tab.refresh(None, None)
    assert df.iloc[0]["id"] == run.id and df.iloc[0]["status"] == "completed" and df.iloc[0]["steps"] == "5 / 5"
    assert picker["choices"][0][1] == run.id and compare["choices"] == picker["choices"]
    assert runs_tab.refresh(None, key)[:2] == (gr.skip(), gr.skip())


# ---- chat ----------------------------------------------------------------------------------


def test_plain_messages_from_gradio6_history():
    history = [{"role": "user", "content": [{"type": "text", "text": "Hi"}], "metadata": None},
               {"role": "assistant", "content": "Hello!"},
               {"role": "user", "content": [{"type": "file", "file": {"path": "x.png"}}, {"type": "text", "text": "?"}]}]
    assert chat_tab.plain_messages(history) == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "?"}]


def test_stream_reply_yields_the_growing_reply(monkeypatch):
    from tunesmith.engine import infer

    seen = {}

    def fake_stream(target, messages, max_new_tokens, temperature):
        seen.update(target=target, messages=messages, max_new_tokens=max_new_tokens, temperature=temperature)
        yield from ["I am", " Smith", "."]

    monkeypatch.setattr(infer, "stream_chat", fake_stream)
    history = [{"role": "user", "content": "Who are you?"}]
    replies = [h[-1]["content"] for h in chat_tab.stream_reply("run-1", history, 64.0, 0.0)]
    assert replies == ["…", "I am", "I am Smith", "I am Smith."]
    assert seen == {"target": "run-1", "messages": history, "max_new_tokens": 64, "temperature": 0.0}


def test_engine_errors_become_a_toast(monkeypatch):
    from tunesmith.engine import infer

    def broken(*a, **k):
        raise DataError("model.chat_template: unknown template 'x'; use one of chatml, ...")
        yield  # pragma: no cover

    monkeypatch.setattr(infer, "stream_chat", broken)
    # A toast with the engine's message, and the chat left as it was (no red "Error" over it).
    with pytest.warns(UserWarning, match="unknown template"):
        out = list(chat_tab.stream_reply("t", [{"role": "user", "content": "hi"}], 8, 0))
    assert out[-1] == gr.skip()


def test_chat_target_pick(monkeypatch):
    from tunesmith.engine import infer

    targets = [("Base: demo", DEMO_MODEL), ("Run new", "r2"), ("Run old", "r1")]
    monkeypatch.setattr(infer, "chat_targets", lambda: list(targets))
    upd, known, _ = chat_tab.refresh_targets(None, DEMO_MODEL, None, [])
    assert upd["value"] == "r2" and known == [DEMO_MODEL, "r2", "r1"]
    # The user's pick survives a refresh while the list is unchanged ...
    assert chat_tab.refresh_targets(DEMO_MODEL, DEMO_MODEL, "r2", known)[0]["value"] == DEMO_MODEL
    # ... and a run that just finished in the monitor is picked when it appears.
    targets.insert(1, ("Run newest", "r3"))
    assert chat_tab.refresh_targets(DEMO_MODEL, DEMO_MODEL, "r3", known)[0]["value"] == "r3"
    # The Model tab's model is offered as a base too.
    upd, _, _ = chat_tab.refresh_targets(None, "Qwen/Qwen3-0.6B", None, [])
    assert ("Base: Qwen/Qwen3-0.6B", "Qwen/Qwen3-0.6B") in upd["choices"]


# ---- export --------------------------------------------------------------------------------


def test_export_rows():
    gguf = ExportResult("gguf", Path("/x/gguf"), 3 * 2**20, files=[
        {"path": "/x/gguf/m-q8_0.gguf", "quant": "q8_0", "size_bytes": 3 * 2**20, "top1_agreement": 0.985,
         "mean_kl": 0.0012, "tokenization_ok": True}])
    [row] = export_tab.result_rows(gguf)
    assert row["format"] == "gguf q8_0" and row["size"] == "3.0 MB"
    assert row["check"] == "same next word 98.5% of the time · mean KL 0.0012 · tokenizer matches"
    assert row["file"] == "m-q8_0.gguf"
    [row] = export_tab.result_rows(ExportResult("adapter", Path("/x/adapter"), 2048))
    assert row == {"format": "adapter", "file": "adapter", "size": "2.0 KB", "check": ""}


def test_summary_names_a_dataset_listed_twice_once_with_its_count(home):
    """The demo lists identity twice (trained twice per pass): the card above Start says so once, not as
    'identity + identity', which reads like a mistake."""
    cfg = RunConfig().with_overrides(["data.datasets=[identity, identity, instruct_en_zh]"])
    card = train_tab.summary_markdown(cfg)
    assert card.count("**identity**") == 1 and "x 2, listed 2 times" in card
    assert "**instruct_en_zh**" in card and "x 1" not in card


def test_data_tab_lists_a_dataset_chosen_twice_once(home):
    from tunesmith.studio import data_tab

    text = data_tab.describe_selection(["identity", "identity", "instruct_en_zh"])
    assert text.count("**identity**") == 1 and "chosen 2 times" in text
    assert text.count("\n") == 1  # two lines: identity, instruct_en_zh
