"""Preference and KTO data: detection, mapping, the rows the objectives train on, the check
report, and what sft does with such data."""

from __future__ import annotations

import json
import logging

import pytest

from tunesmith.engine.config import RunConfig
from tunesmith.engine.data import inspect_dataset, load_examples, prepare_datasets
from tunesmith.engine.data.pairs import prepare_pairs, prepare_unpaired
from tunesmith.engine.errors import DataError


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from tunesmith.engine.models import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("tunesmith/demo"))


def _cfg(datasets, objective="sft", **data):
    return RunConfig(model={"name_or_path": "tunesmith/demo"}, objective=objective,
                     data={"datasets": datasets, "cutoff_len": 256, **data})


def test_bundled_kto_set_keeps_every_label(tunesmith_home):
    es = load_examples("kto_feedback")
    assert es.detection.mapping.kto_tag == "label"
    labels = [ex["kto_label"] for ex in es.examples]
    assert labels.count(True) == labels.count(False) == 48


def test_trl_unpaired_layout_and_label_strings_are_kto_rows(tmp_path, tunesmith_home):
    rows = [{"prompt": "Hi", "completion": "Hello! How can I help?", "label": True},
            {"prompt": "Hi", "completion": "Go away.", "label": False}]
    f = tmp_path / "kto.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    es = load_examples(str(f))
    assert es.format == "alpaca" and es.detection.mapping.kto_tag == "label"
    assert [ex["kto_label"] for ex in es.examples] == [True, False]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**rows[0], "label": "maybe"}) + "\n" + json.dumps(rows[1]), encoding="utf-8")
    es = load_examples(str(bad))
    assert es.problems and es.problems[0].kind == "wrong_type" and "true (desirable)" in es.problems[0].message


def test_pairs_train_only_the_final_reply(tok, tunesmith_home):
    train, val = prepare_pairs(_cfg(["preference_extended"], "dpo"), tok)
    assert val is None and len(train) == 128
    es = load_examples("preference_extended")
    multi = next(i for i, ex in enumerate(es.examples) if sum(m["role"] == "assistant" for m in ex["messages"]) == 2)
    row = train[multi]
    for side in ("chosen", "rejected"):
        ids, mask = row[f"{side}_ids"], row[f"{side}_mask"]
        runs = sum(1 for a, b in zip([0] + mask, mask) if b and not a)
        assert runs == 1, "only the last reply is trained, not the earlier assistant turn"
        trained = tok.decode([t for t, m in zip(ids, mask) if m])
        want = es.examples[multi]["messages"][-1]["content"] if side == "chosen" else es.examples[multi]["rejected"]["content"]
        assert want in trained
    assert row["chosen_ids"] != row["rejected_ids"]


def test_prompt_cut_by_cutoff_is_left_out_and_said(tok, tunesmith_home, caplog):
    with caplog.at_level(logging.WARNING):
        with pytest.raises(DataError, match="no usable preference pair"):
            prepare_pairs(_cfg(["preference_pairs"], "dpo", cutoff_len=16), tok)
    assert "reaches cutoff_len=16" in caplog.text


def test_wrong_data_for_the_objective_names_the_dataset(tok, tunesmith_home):
    with pytest.raises(DataError, match="'identity' is alpaca, not preference pairs"):
        prepare_pairs(_cfg(["identity"], "dpo"), tok)
    with pytest.raises(DataError, match="'identity' is alpaca without KTO labels"):
        prepare_unpaired(_cfg(["identity"], "kto"), tok)


def test_kto_rows_from_labels_and_from_pairs(tok, tunesmith_home):
    rows, _ = prepare_unpaired(_cfg(["kto_feedback"], "kto"), tok)
    assert sum(r["label"] for r in rows) == 48 and len(rows) == 96
    assert all(0 < r["prompt_len"] < len(r["input_ids"]) and r["assistant_masks"][r["prompt_len"]] for r in rows)
    rows, _ = prepare_unpaired(_cfg(["preference_pairs"], "kto"), tok)
    assert [r["label"] for r in rows[:4]] == [1, 0, 1, 0]


def test_sft_never_learns_undesirable_rows(tok, tunesmith_home, caplog):
    with caplog.at_level(logging.WARNING):
        train, _ = prepare_datasets(_cfg(["kto_feedback"]), tok, use_cache=False)
    assert len(train) == 48
    assert "48 of 96 rows are marked undesirable and are left out" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train, _ = prepare_datasets(_cfg(["preference_pairs"]), tok, use_cache=False)
    assert len(train) == 32 and "learns the chosen replies only" in caplog.text


def test_check_report_covers_pairs(tok, tmp_path, tunesmith_home):
    rows = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Hi!"},
            {"prompt": "word " * 300, "chosen": "ok", "rejected": "no"}]
    f = tmp_path / "pairs.json"
    f.write_text(json.dumps(rows), encoding="utf-8")
    rep = inspect_dataset(str(f), tokenizer=tok, cutoff_len=64).to_json()
    ps = rep["preference_stats"]
    assert ps["kind"] == "pairs" and ps["pairs"] == 3 and ps["identical_pairs"] == 1
    assert rep["problem_counts"]["identical_pair"] == 1
    assert ps["chars"]["chosen"]["max"] == 3 and ps["tokens"]["prompt_cut_by_cutoff"] == 1
    assert ps["tokens"]["chosen"]["max"] > 64
    text = inspect_dataset(str(f), tokenizer=tok, cutoff_len=64).to_text()
    assert "preference pairs: 3, 1 with identical replies" in text and "prompt cut by the cutoff: 1 rows" in text
    kto = inspect_dataset("kto_feedback").to_json()["preference_stats"]
    assert (kto["kind"], kto["desirable"], kto["undesirable"]) == ("kto", 48, 48)


def test_sft_on_preference_or_kto_data_is_said_before_the_run(tunesmith_home):
    from tunesmith.engine.data.pairs import objective_data_note

    assert "learns the chosen replies only" in objective_data_note(_cfg(["preference_pairs"]))
    assert "leaves the undesirable replies out" in objective_data_note(_cfg(["identity", "kto_feedback"]))
    assert objective_data_note(_cfg(["preference_pairs"], "dpo")) is None
    assert objective_data_note(_cfg(["identity"])) is None


def test_upload_mapping_offers_the_kto_label_column(tmp_path, fresh_home):
    """A dropped chat file with a good/bad label: the mapping offers the label column (detected when it is
    named like one), and the registered dataset keeps every label (what objective kto trains on)."""
    from tunesmith.studio import data_tab

    rows = [{"conversations": [{"from": "human", "value": f"Question {i}?"}, {"from": "gpt", "value": f"Answer {i}."}],
             "thumbs_up": i % 2 == 0} for i in range(6)]
    f = tmp_path / "feedback.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    peek, state = data_tab.look_at_upload(str(f))
    mapping = data_tab.suggest_mapping(peek.rows, peek.mapping.format, str(f))
    form = data_tab.mapping_form(peek.mapping.format, mapping, peek.rows)
    # a column detection cannot know is a label (it knows kto_tag, kto_label, label): offered, not picked
    assert form["kto_tag"]["visible"] and form["kto_tag"]["value"] == data_tab.NONE
    assert "thumbs_up" in form["kto_tag"]["choices"] and form["kto_tag"]["label"] == "Good / bad label column (KTO)"
    values = {k: d["value"] for k, d in form.items()}
    values["kto_tag"] = "thumbs_up"
    entry, _ = data_tab.register_upload(str(f), "feedback", peek.mapping.format, values, state, None)
    labels = [ex["kto_label"] for ex in load_examples("feedback").examples]
    assert labels == [True, False] * 3
    # (none) picked: the file is plain chat, and sft trains every reply
    values["kto_tag"] = data_tab.NONE
    data_tab.register_upload(str(f), "feedback_plain", peek.mapping.format, values, state, None)
    assert all("kto_label" not in ex for ex in load_examples("feedback_plain").examples)

    rows = [{**r, "label": r.pop("thumbs_up")} for r in rows]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    peek, _ = data_tab.look_at_upload(str(f))
    mapping = data_tab.suggest_mapping(peek.rows, peek.mapping.format, str(f))
    assert data_tab.mapping_form(peek.mapping.format, mapping, peek.rows)["kto_tag"]["value"] == "label"
