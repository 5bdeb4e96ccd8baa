"""prepare_datasets and list_datasets: the contract the trainer relies on."""

from __future__ import annotations

import json

import pytest

from tunesmith.engine.config import RunConfig
from tunesmith.engine.data import list_datasets, prepare_datasets
from tunesmith.engine.data.templates import resolve_template
from tunesmith.engine.data.tokenize import encode_cached
from tunesmith.engine.errors import DataError

BUNDLED = {"identity", "instruct_en_zh", "sharegpt_multiturn", "openai_messages", "preference_pairs", "raw_text"}


def cfg(**data) -> RunConfig:
    return RunConfig.from_dict({"data": data})


def trained_text(tok, ids, mask) -> list[str]:
    """Decoded runs of trained tokens."""
    runs, cur = [], []
    for t, m in zip(ids, mask):
        if m:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur)), cur.clear()
    if cur:
        runs.append(tok.decode(cur))
    return runs


def write_json(path, rows):
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_list_datasets_has_bundled_entries():
    entries = {e.name: e for e in list_datasets()}
    assert BUNDLED <= set(entries)
    e = entries["sharegpt_multiturn"]
    assert e.format == "sharegpt" and e.path.endswith("sharegpt_multiturn.json") and e.description and "en" in e.language
    assert entries["raw_text"].format == "text" and entries["preference_pairs"].format == "preference"


def test_user_registration_is_listed(tmp_path, _home):
    f = write_json(tmp_path / "mine.json", [{"instruction": "hi", "output": "hello"}])
    _home.mkdir(parents=True, exist_ok=True)
    (_home / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": f, "columns": {
        "prompt": "instruction", "response": "output"}}}))
    names = [e.name for e in list_datasets()]
    assert "mine" in names and "identity" in names


def test_identity_masks_cover_replies_and_end_of_turn(tokenizer):
    train, val = prepare_datasets(cfg(datasets=["identity"]), tokenizer)
    assert val is None
    assert set(train.column_names) == {"input_ids", "assistant_masks"}
    row = train[0]
    assert len(row["input_ids"]) == len(row["assistant_masks"])
    runs = trained_text(tokenizer, row["input_ids"], row["assistant_masks"])
    assert runs == ["I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?<|im_end|>"]
    # the prompt is masked
    assert row["assistant_masks"][0] == 0


def test_multiturn_every_reply_trained(tokenizer):
    train, _ = prepare_datasets(cfg(datasets=["sharegpt_multiturn"]), tokenizer)
    row = train[0]
    runs = trained_text(tokenizer, row["input_ids"], row["assistant_masks"])
    assert len(runs) == 3 and all(r.endswith("<|im_end|>") for r in runs)
    assert runs[0].startswith("Of course.")


def test_train_on_everything(tokenizer):
    train, _ = prepare_datasets(cfg(datasets=["identity"], train_on_responses_only=False), tokenizer)
    assert all(all(m == 1 for m in r) for r in train["assistant_masks"])


def test_text_dataset_trains_all_tokens_and_ends_with_eos(tokenizer):
    train, _ = prepare_datasets(cfg(datasets=["raw_text"], cutoff_len=4096), tokenizer)
    assert len(train) == 16
    for ids, mask in zip(train["input_ids"], train["assistant_masks"]):
        assert ids[-1] == tokenizer.eos_token_id and all(mask)


def test_cutoff_and_max_samples(tokenizer):
    train, _ = prepare_datasets(cfg(datasets=["sharegpt_multiturn"], cutoff_len=40, max_samples=5), tokenizer)
    assert 1 <= len(train) <= 5  # rows whose first reply starts past the cutoff are left out
    assert max(len(r) for r in train["input_ids"]) <= 40
    assert all(any(m) for m in train["assistant_masks"])
    train, _ = prepare_datasets(cfg(datasets=["sharegpt_multiturn"], cutoff_len=4096, max_samples=5), tokenizer)
    assert len(train) == 5


def test_mixed_datasets_are_concatenated(tokenizer):
    train, _ = prepare_datasets(cfg(datasets=["identity", "openai_messages", "preference_pairs"], max_samples=3), tokenizer)
    assert len(train) == 9


def test_val_size_split_is_seeded(tokenizer):
    c = cfg(datasets=["instruct_en_zh"], val_size=0.1, drop_invalid=True)
    a_train, a_val = prepare_datasets(c, tokenizer)
    b_train, b_val = prepare_datasets(c, tokenizer)
    assert len(a_val) == round((len(a_train) + len(a_val)) * 0.1)
    assert a_val["input_ids"] == b_val["input_ids"]
    c2 = c.with_overrides(["training.seed=7"])
    _, c_val = prepare_datasets(c2, tokenizer)
    assert c_val["input_ids"] != a_val["input_ids"]


def test_val_file(tokenizer, tmp_path):
    vf = write_json(tmp_path / "val.json", [{"instruction": "hi", "output": "hello"}] * 1)
    train, val = prepare_datasets(cfg(datasets=["identity"], val_file=vf), tokenizer)
    assert len(val) == 1 and len(train) == 83


def test_unknown_name_lists_available(tokenizer):
    with pytest.raises(DataError) as e:
        prepare_datasets(cfg(datasets=["no_such_set"]), tokenizer)
    assert "no_such_set" in str(e.value) and "identity" in str(e.value)


def test_missing_file(tokenizer, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        prepare_datasets(cfg(datasets=[str(tmp_path / "nope.json")]), tokenizer)


def test_empty_dataset(tokenizer, tmp_path):
    f = tmp_path / "empty.json"
    f.write_text("[]")
    with pytest.raises(DataError, match="no rows"):
        prepare_datasets(cfg(datasets=[str(f)]), tokenizer)


def test_rows_with_problems_stop_unless_dropped(tokenizer, tmp_path):
    f = write_json(tmp_path / "bad.json", [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}])
    with pytest.raises(DataError) as e:
        prepare_datasets(cfg(datasets=[f]), tokenizer)
    msg = str(e.value)
    assert "bad.json row 2" in msg and "empty_response" in msg and "drop_invalid" in msg
    train, _ = prepare_datasets(cfg(datasets=[f], drop_invalid=True), tokenizer)
    assert len(train) == 1


def test_named_template_when_tokenizer_has_none(bare_tokenizer):
    with pytest.raises(DataError, match="chat_template"):
        prepare_datasets(cfg(datasets=["identity"]), bare_tokenizer)
    c = RunConfig.from_dict({"data": {"datasets": ["identity"]}, "model": {"chat_template": "llama3"}})
    train, _ = prepare_datasets(c, bare_tokenizer)
    runs = trained_text(bare_tokenizer, train[0]["input_ids"], train[0]["assistant_masks"])
    assert runs[0].endswith("<|eot_id|>")


def test_packing_restarts_positions(tokenizer):
    train, _ = prepare_datasets(cfg(datasets=["identity"], packing=True, cutoff_len=256), tokenizer)
    assert len(train) < 83
    for row in train:
        assert len(row["input_ids"]) <= 256
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) == len(row["position_ids"])
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert len(starts) == len(row["seq_lengths"])


def test_tokenization_cache_hit(tokenizer):
    examples = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    t = resolve_template(tokenizer)
    a, hit_a = encode_cached(tokenizer, t, examples)
    b, hit_b = encode_cached(tokenizer, t, examples)
    assert (hit_a, hit_b) == (False, True) and a["input_ids"] == b["input_ids"]
    _, hit_c = encode_cached(tokenizer, t, examples, train_on_responses_only=False)
    assert hit_c is False


def test_masks_match_generation_markers(tokenizer):
    """Where a template has {% generation %}, our prefix-diff masks agree with transformers' own."""
    gen_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    from tunesmith.engine.data.templates import ChatTemplate
    from tunesmith.engine.data.tokenize import encode_examples

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "I am Smith."}, {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "你好，世界。"}]
    ours = encode_examples(tokenizer, ChatTemplate("t", gen_template), [{"messages": msgs}])[0]
    ref = tokenizer.apply_chat_template(msgs, chat_template=gen_template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    assert ours.input_ids == list(ref["input_ids"])
    assert ours.assistant_masks == list(ref["assistant_masks"])


def test_demo_model_masks_match_its_generation_markers():
    """The demo model's template has {% generation %}; our masks must agree with it on every bundled chat set."""
    from tunesmith.engine import paths

    if not (paths.demo_model_dir() / "tokenizer.json").exists():
        pytest.skip("demo model not built")
    from transformers import AutoTokenizer

    from tunesmith.engine.data import load_examples
    from tunesmith.engine.data.tokenize import encode_examples

    tok = AutoTokenizer.from_pretrained(str(paths.demo_model_dir()))
    t = resolve_template(tok)
    for name in ("identity", "sharegpt_multiturn", "openai_messages"):
        examples = load_examples(name).usable()[:8]
        ours = encode_examples(tok, t, examples)
        for ex, enc in zip(examples, ours):
            ref = tok.apply_chat_template(ex["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
            assert enc.input_ids == list(ref["input_ids"])
            assert enc.assistant_masks == list(ref["assistant_masks"]), name
