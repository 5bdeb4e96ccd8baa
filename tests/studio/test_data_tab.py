"""The Data tab's look inside a file: grid, column mapping, registration, bad uploads.

    pytest tests/studio/test_data_tab.py                 # the callbacks, no browser (a few seconds)
    pytest tests/studio/test_data_tab.py -m browser      # upload, map, register and check in Chromium

The callbacks are plain functions over the engine, tested here without a
server; one browser test drives the same path in real Chromium.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from timing import wait_until  # tests/ is on sys.path
from tunesmith.engine import paths
from tunesmith.engine.data import inspect as data_inspect
from tunesmith.engine.data import list_datasets, load_examples
from tunesmith.studio import data_tab

CHATS = [
    {"id": i, "persona": "You are a calm support agent for Parcelly.",
     "dialog": [{"speaker": "customer", "text": f"Where is my parcel #{i}?"},
                {"speaker": "agent", "text": f"Parcel #{i} arrives tomorrow before noon."}]}
    for i in range(1, 6)
]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def form_of(file: Path) -> tuple[str, dict[str, dict], dict]:
    """(format, dropdowns, state) the tab shows for a dropped file."""
    peek, state = data_tab.look_at_upload(str(file))
    fmt = peek.mapping.format
    mapping = data_tab.suggest_mapping(peek.rows, fmt, str(file))
    return fmt, data_tab.mapping_form(fmt, mapping, peek.rows), state


def shown(form: dict[str, dict]) -> dict[str, str | None]:
    return {f: d["value"] for f, d in form.items() if d["visible"]}


# ---------------------------------------------------------------------------
# The grid


def test_grid_shows_the_file_as_it_is(tmp_path):
    f = tmp_path / "chats.jsonl"
    f.write_text(json.dumps(CHATS[0]) + "\n{not json\n" + json.dumps({**CHATS[1], "note": "x" * 500}) + "\n",
                 encoding="utf-8")
    peek, _ = data_tab.look_at_upload(str(f))
    frame = data_tab.preview_frame(peek)
    assert list(frame.columns) == ["line", "id", "persona", "dialog", "note"]
    assert list(frame["line"]) == [1, 2, 3]  # the JSONL lines Check data's problems name
    assert json.loads(frame["dialog"][0]) == CHATS[0]["dialog"]  # nested values as JSON
    assert frame["id"][1].startswith("⚠ could not be read") and frame["dialog"][1] == ""
    assert len(frame["note"][2]) == data_tab.CELL_CHARS and frame["note"][2].endswith("…")
    assert frame["note"][0] == ""
    widths = data_tab.grid_widths(frame)
    assert len(widths) == len(frame.columns) and widths[0] == "64px"


def test_grid_of_a_picked_dataset_and_what_it_refuses(tmp_path):
    text, frame = data_tab.look_at_selection(["identity"])
    assert "registered as **alpaca**" in text and "instruction" in text
    assert {"instruction", "output"} <= set(frame.columns) and len(frame) == data_tab.GRID_ROWS
    text, frame = data_tab.look_at_selection(["someone/some-dataset"])  # hub ids need a network: no quick look
    assert frame is None and "Hugging Face dataset" in text
    secret = jsonl(tmp_path / "secret.jsonl", CHATS)
    text, frame = data_tab.look_at_selection([str(secret)], allowed_roots=[tmp_path / "uploads"])
    assert frame is None and "outside the folders" in text
    assert data_tab.look_at_selection([]) == ("", None)


# ---------------------------------------------------------------------------
# Mapping dropdowns, pre-filled from the detection


def test_alpaca_prefill(tmp_path):
    rows = [{"instruction": "Add 2 and 3.", "input": "", "output": "5", "system": "Be brief."}] * 2
    fmt, form, _ = form_of(jsonl(tmp_path / "math.jsonl", rows))
    assert fmt == "alpaca"
    assert shown(form) == {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                           "history": data_tab.NONE, "kto_tag": data_tab.NONE}
    assert form["prompt"]["label"] == "Instruction column"
    assert form["prompt"]["choices"] == ["instruction", "input", "output", "system"]  # the file's keys
    assert form["history"]["choices"][0] == data_tab.NONE  # optional columns can be left out


def test_sharegpt_prefill_with_custom_keys_and_role_names(tmp_path):
    fmt, form, _ = form_of(jsonl(tmp_path / "support.jsonl", CHATS))
    assert fmt == "sharegpt"
    assert shown(form) == {"messages": "dialog", "system": data_tab.NONE, "kto_tag": data_tab.NONE,
                           "role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}
    assert form["role_tag"]["choices"] == ["speaker", "text"]  # keys inside the messages
    assert form["assistant_tag"]["choices"] == ["customer", "agent"]  # role names the file uses
    assert form["system"]["choices"] == [data_tab.NONE, "id", "persona", "dialog"]


def test_openai_prefill(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello!"}]}] * 2
    fmt, form, _ = form_of(jsonl(tmp_path / "chat.jsonl", rows))
    assert fmt == "openai"
    assert shown(form) == {"messages": "messages", "system": data_tab.NONE, "kto_tag": data_tab.NONE,
                           "role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}


def test_switching_format_refills_the_dropdowns(tmp_path):
    qa = tmp_path / "qa.tsv"  # .tsv is an accepted upload
    qa.write_text("question\tanswer\nWhat is 2+2?\t4\nCapital of France?\tParis\n", encoding="utf-8")
    assert ".tsv" in data_tab.UPLOAD_TYPES and ".xlsx" in data_tab.UPLOAD_TYPES
    fmt, form, state = form_of(qa)
    assert fmt == "alpaca" and shown(form)["prompt"] == "question"  # detected from question/answer
    updates = data_tab.change_format("text", state)
    fields = dict(zip(data_tab.MAP_FIELDS, updates[1:]))
    assert [f for f, u in fields.items() if u["visible"]] == ["prompt"] and fields["prompt"]["label"] == "Text column"
    # A chat file read as alpaca: the required columns it lacks stay empty for the person to pick.
    _, _, chat_state = form_of(jsonl(tmp_path / "support.jsonl", CHATS))
    fields = dict(zip(data_tab.MAP_FIELDS, data_tab.change_format("alpaca", chat_state)[1:]))
    assert fields["prompt"]["value"] is None and fields["response"]["value"] is None
    hint = data_tab.format_hint("auto", chat_state)  # "auto" registers the detection, role names fitted
    assert "detected **sharegpt**" in hint and "`dialog`" in hint and "user = `customer`" in hint


def test_another_conversation_column_refills_keys_and_role_names(tmp_path):
    rows = [{**r, "alt": [{"who": "human", "said": "Hi"}, {"who": "bot", "said": "Hello"}]} for r in CHATS]
    _, _, state = form_of(jsonl(tmp_path / "two.jsonl", rows))
    role, content, user, assistant = data_tab.change_chat_keys("sharegpt", "alt", "speaker", state)
    assert (role["value"], content["value"], user["value"], assistant["value"]) == ("who", "said", "human", "bot")


def test_required_dropdowns_are_named_when_empty():
    with pytest.raises(gr.Error, match="instruction column"):
        data_tab.mapping_spec("alpaca", {"prompt": None, "response": "output"})
    with pytest.raises(gr.Error, match="prompt column or the conversation column"):
        data_tab.mapping_spec("preference", {"prompt": data_tab.NONE, "messages": data_tab.NONE,
                                             "chosen": "good", "rejected": "bad"})
    spec = data_tab.mapping_spec("sharegpt", {"messages": "dialog", "system": data_tab.NONE, "role_tag": "speaker",
                                              "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent",
                                              "prompt": "ignored: not a sharegpt field"})
    assert spec == {"messages": "dialog", "system": None, "kto_tag": None, "role_tag": "speaker",
                    "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}


# ---------------------------------------------------------------------------
# Registration


def test_register_with_a_custom_mapping_then_load_it(tmp_path, fresh_home):
    f = jsonl(tmp_path / "support chats.jsonl", CHATS)
    fmt, form, state = form_of(f)
    values = {k: d["value"] for k, d in form.items()}
    values["system"] = "persona"  # the person maps the system prompt column detection cannot guess
    entry, selection = data_tab.register_upload(str(f), "support", fmt, values, state, ["identity"])
    assert selection == ["identity", "support"] and entry.format == "sharegpt"

    info = json.loads((fresh_home / "dataset_info.json").read_text())["support"]  # LLaMA-Factory style
    assert info["formatting"] == "sharegpt"
    assert info["columns"] == {"messages": "dialog", "system": "persona"}
    assert info["tags"]["role_tag"] == "speaker" and info["tags"]["content_tag"] == "text"
    assert (info["tags"]["user_tag"], info["tags"]["assistant_tag"]) == ("customer", "agent")
    assert Path(info["file_name"]).parent == paths.uploads_dir() / "support"

    es = load_examples("support")  # what Check data and training read
    assert es.n_rows == 5 and es.problems == []
    # Naming the format it is registered with (data.format: sharegpt) keeps its columns.
    assert load_examples("support", format="sharegpt").problems == []
    assert es.examples[0]["messages"] == [
        {"role": "system", "content": "You are a calm support agent for Parcelly."},
        {"role": "user", "content": "Where is my parcel #1?"},
        {"role": "assistant", "content": "Parcel #1 arrives tomorrow before noon."},
    ]
    text, _ = data_tab.look_at_selection(["support"])
    assert "registered as **sharegpt**" in text and "persona" in text
    assert "support" in data_tab.dataset_choices()


def test_register_auto_uses_the_detection(tmp_path, fresh_home):
    rows = [{"instruction": f"Say {i}.", "output": str(i)} for i in range(3)]
    f = jsonl(tmp_path / "say.jsonl", rows)
    entry, _ = data_tab.register_upload(str(f), "", "auto", {}, None, None)
    assert entry.name == "say" and entry.format == "alpaca"  # the name defaults to the file's
    assert load_examples("say").n_rows == 3


def _nothing_registered(home: Path) -> bool:
    uploads = home / "uploads"
    return not (home / "dataset_info.json").exists() and not (uploads.exists() and any(uploads.iterdir()))


@pytest.mark.parametrize("content, problem", [
    (b"", "empty (0 bytes)"),
    (b'[{"instruction": "a", "output": ', "not valid JSON at line 1"),
])
def test_bad_upload_names_the_file_and_registers_nothing(tmp_path, fresh_home, content, problem):
    f = tmp_path / "broken.json"
    f.write_bytes(content)
    with pytest.raises(gr.Error) as e:
        data_tab.show_upload(str(f))
    assert "broken.json" in e.value.message and problem in e.value.message
    assert str(tmp_path) not in e.value.message  # the temporary folder is left out
    with pytest.raises(gr.Error) as e:
        data_tab.register_upload(str(f), "broken", "auto", {}, None, None)
    assert "broken.json" in e.value.message and "Traceback" not in e.value.message
    assert _nothing_registered(fresh_home)


def test_a_mapping_that_fits_no_row_is_refused(tmp_path, fresh_home):
    f = jsonl(tmp_path / "support.jsonl", CHATS)
    _, form, state = form_of(f)
    values = {k: d["value"] for k, d in form.items()}
    values["assistant_tag"] = "gpt"  # no message has that role name
    with pytest.raises(gr.Error) as e:
        data_tab.register_upload(str(f), "support", "sharegpt", values, state, None)
    assert "support.jsonl" in e.value.message and "none of its 5 rows is usable" in e.value.message
    assert "'agent'" in e.value.message  # the first row's problem: the role name it does not know
    with pytest.raises(gr.Error, match="columns that match"):
        data_tab.register_upload(str(f), "support", "alpaca", {"prompt": "id", "response": "persona"}, state, None)
    with pytest.raises(gr.Error, match="Drop a file"):
        data_tab.register_upload(None, "x", "auto", {}, None, None)
    assert _nothing_registered(fresh_home)
    assert "support" not in [d.name for d in list_datasets()]


# ---------------------------------------------------------------------------
# In Chromium


def _toasts(page) -> str:
    return " ".join(page.locator(".toast-body").all_inner_texts())


def _wait_for(predicate, timeout: float, what: str):
    return wait_until(predicate, timeout, what, poll=0.3)


def _pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id} .options li", has_text=option).first.click()


@pytest.mark.browser
def test_upload_map_register_and_check_in_chromium(page, tmp_path):
    f = jsonl(tmp_path / "support_chats.jsonl", CHATS)
    page.get_by_role("tab", name="2 · Data").click()
    page.locator("#upload input[type=file]").set_input_files(str(f))

    grid = page.locator("#data-grid")
    _wait_for(lambda: "Where is my parcel #1?" in grid.inner_text(), 20, "the grid of the dropped file")
    assert "persona" in grid.inner_text() and "dialog" in grid.inner_text()
    assert "looks like sharegpt" in page.locator("#data-look-info").inner_text()
    assert page.locator("#map-messages input").input_value() == "dialog"
    assert page.locator("#map-role-tag input").input_value() == "speaker"
    assert page.locator("#map-assistant-tag input").input_value() == "agent"

    _pick(page, "map-system", "persona")  # what detection cannot know: the system prompt column
    page.locator("#upload-name input, #upload-name textarea").first.fill("support_chats")
    page.screenshot(path=str(tmp_path / "data-tab-mapping.png"), full_page=True)
    page.click("#register-dataset")
    _wait_for(lambda: "Added dataset" in _toasts(page), 20, "the registration")
    datasets = page.locator("#datasets")
    _wait_for(lambda: "support_chats" in datasets.inner_text(), 10, "the new dataset to be selected")
    _wait_for(lambda: "registered as sharegpt" in page.locator("#data-look-info").inner_text(), 10,
              "the registered dataset's grid")
    assert not page.locator("#data-mapping").is_visible()

    page.click("#check-data")
    report = page.locator("#data-report")
    _wait_for(lambda: "support_chats" in report.inner_text(), 60, "the check report")
    ours = report.inner_text().split("support_chats", 1)[1]
    assert "5 rows" in ours and "0 with errors" in ours and "0 with warnings" in ours
    assert "Parcelly" in page.locator("#data-preview").inner_text()  # the mapped system prompt is trained with
    assert "Traceback" not in _toasts(page)
