"""The check report (schema, text, token counts, estimate), previews, plots, and `tunesmith data` commands."""

from __future__ import annotations

import json

import pytest

from tunesmith.engine.data.inspect import (
    SCHEMA,
    inspect_dataset,
    length_histogram_figure,
    preview_rows,
    render_masked_html,
)
from tunesmith.engine.errors import DataError

TOP_KEYS = {"schema", "source", "name", "files", "encodings", "size_bytes", "format", "format_overridden", "mapping",
            "evidence", "row_formats", "rows", "problem_counts", "problems", "problems_truncated", "text_stats",
            "token_stats", "preference_stats", "estimate", "warnings", "ok"}
TOKEN_KEYS = {"model", "template", "cutoff_len", "lengths", "histogram", "rows_over_cutoff", "tokens_lost_to_cutoff",
              "rows_without_trained_tokens", "total_tokens", "trained_tokens", "cache_hit"}


def messy(tmp_path):
    f = tmp_path / "messy.jsonl"
    rows = [{"instruction": "Say hi", "output": "Hi!"}, {"instruction": "Count", "output": "1 2 3 4 5 6 7 8 9 0 " * 20},
            "{oops", {"instruction": "x", "output": ""}, {"instruction": "Say hi", "output": "Hi!"}]
    f.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return str(f)


def test_schema_is_stable(tmp_path):
    r = inspect_dataset(messy(tmp_path)).to_json()
    assert set(r) == TOP_KEYS and r["schema"] == SCHEMA
    assert r["rows"] == {"total": 5, "ok": 2, "with_errors": 2, "with_warnings": 1, "dropped": 0, "used": 3}
    assert r["problem_counts"] == {"invalid_json": 1, "empty_response": 1, "duplicate_row": 1}
    assert {tuple(sorted(p)) for p in r["problems"]} == {("file", "kind", "line_number", "message", "row", "severity")}
    assert [p["row"] for p in r["problems"]] == [3, 4, 5] and all(p["line_number"] for p in r["problems"])
    assert r["ok"] is False and r["token_stats"] is None
    json.dumps(r)  # plain JSON types only


def test_drop_invalid_only_on_request(tmp_path):
    r = inspect_dataset(messy(tmp_path), drop_invalid=True)
    assert r["ok"] and r["rows"]["dropped"] == 2 and r["rows"]["used"] == 3


def test_token_stats_match_a_plain_count(tmp_path, tokenizer):
    from tunesmith.engine.data import load_examples
    from tunesmith.engine.data.templates import resolve_template
    from tunesmith.engine.data.tokenize import encode_examples

    f = messy(tmp_path)
    r = inspect_dataset(f, tokenizer=tokenizer, cutoff_len=40, drop_invalid=True)
    ts = r["token_stats"]
    assert set(ts) == TOKEN_KEYS
    enc = encode_examples(tokenizer, resolve_template(tokenizer), load_examples(f).usable(drop_invalid=True))
    lengths = [len(e.input_ids) for e in enc]
    assert ts["lengths"]["max"] == max(lengths)
    assert ts["rows_over_cutoff"] == sum(n > 40 for n in lengths)
    assert ts["tokens_lost_to_cutoff"] == sum(max(0, n - 40) for n in lengths)
    assert ts["total_tokens"] == sum(min(n, 40) for n in lengths)
    assert ts["trained_tokens"] == sum(sum(e.assistant_masks[:40]) for e in enc)
    assert sum(ts["histogram"]["counts"]) == 3
    assert inspect_dataset(f, tokenizer=tokenizer, cutoff_len=40, drop_invalid=True)["token_stats"]["cache_hit"]


def test_estimate_with_a_model_folder(tmp_path, tokenizer):
    from transformers import LlamaConfig

    model = tmp_path / "tiny-model"
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4).save_pretrained(model)
    tokenizer.save_pretrained(model)
    r = inspect_dataset("identity", model=str(model))
    est = r["estimate"]
    assert est["parameters"] > 10_000 and est["tokens_per_epoch"] == r["token_stats"]["total_tokens"]
    assert est["seconds_per_epoch"] >= 0 and est["device"] in ("cpu", "cuda") and "params" in est["assumptions"]
    assert "estimate" in r.to_text()


def test_text_summary_names_problems(tmp_path):
    text = inspect_dataset(messy(tmp_path)).to_text()
    assert "messy.jsonl line 3: invalid_json" in text and "NOT OK" in text
    listed = [ln.split(": ")[1] for ln in text.splitlines() if "messy.jsonl line" in ln]
    assert listed == ["invalid_json", "empty_response", "duplicate_row"]  # errors listed first


def test_preview_and_html(tokenizer):
    rows = preview_rows("sharegpt_multiturn", tokenizer=tokenizer, n=2, cutoff_len=80)
    assert len(rows) == 2
    r = rows[0]
    assert r.truncated_tokens == r.n_tokens - 80 > 0 and r.cut_spans
    assert "".join(t for t, _ in r.spans + r.cut_spans).startswith("<|im_start|>user")
    html = render_masked_html(r)
    assert "ts-trained" in html and "ts-prompt" in html and "ts-cut" in html and "&lt;|im_start|&gt;" in html
    assert render_masked_html([("<b>x</b>", True)]).count("&lt;b&gt;") == 1
    full = preview_rows("identity", tokenizer=tokenizer, rows=[0])[0]
    assert [t for t, on in full.spans if on] == [
        "I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?<|im_end|>"]
    assert full.n_trained > 0 and full.truncated_tokens == 0 and not full.cut_spans


def test_preview_of_a_bad_row_says_why(tmp_path, tokenizer):
    with pytest.raises(DataError, match="row 4 cannot be rendered"):
        preview_rows(messy(tmp_path), tokenizer=tokenizer, rows=[3])


def test_histogram_figure(tokenizer):
    import plotly.graph_objects as go

    fig = length_histogram_figure(inspect_dataset("identity"))
    assert isinstance(fig, go.Figure) and "no model" in fig.layout.title.text
    fig = length_histogram_figure(inspect_dataset("identity", tokenizer=tokenizer, cutoff_len=64))
    assert sum(fig.data[0].y) == 83 and "cutoff" in json.dumps(fig.to_plotly_json()["layout"])


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    import datasets

    seen = {}

    def offline(repo, subset=None, split=None, **kw):
        seen.update(repo=repo, subset=subset, split=split)
        raise ConnectionError("Couldn't reach 'someone/some_dataset' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)  # no network calls in tests
    with pytest.raises(DataError, match="could not load the Hugging Face dataset.*file path instead"):
        inspect_dataset("someone/some_dataset:sub@train")
    assert seen == {"repo": "someone/some_dataset", "subset": "sub", "split": "train"}


# --- CLI ------------------------------------------------------------------------


def cli(*argv):
    import argparse

    from tunesmith.cli import data

    parser = argparse.ArgumentParser(prog="tunesmith")
    sub = parser.add_subparsers(dest="command")
    data.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_cli_inspect_json_and_exit_codes(tmp_path, capsys):
    f = messy(tmp_path)
    assert cli("data", "inspect", f, "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == SCHEMA and out["rows"]["total"] == 5
    assert cli("data", "inspect", f, "--drop-invalid") == 0
    assert "dropped" in capsys.readouterr().out
    assert cli("data", "inspect", "identity") == 0
    with pytest.raises(DataError, match="no such file"):
        cli("data", "inspect", str(tmp_path / "missing.jsonl"))


def test_cli_format_and_mapping(tmp_path, capsys):
    f = tmp_path / "qa.csv"
    f.write_text("q,a\n2+2?,4\n")
    assert cli("data", "inspect", str(f), "--format", "alpaca", "--map", "prompt=q,response=a", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "alpaca" and out["mapping"] == {"prompt": "q", "response": "a"}


def test_cli_list_and_register(tmp_path, capsys):
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
    assert cli("data", "register", str(f), "--name", "mine") == 0
    capsys.readouterr()
    assert cli("data", "list", "--json") == 0
    names = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert names["mine"]["source"] == "user" and names["identity"]["source"] == "bundled"
    assert cli("data", "inspect", "mine", "--json") == 0
