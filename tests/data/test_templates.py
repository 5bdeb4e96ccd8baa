"""Named chat templates: every one renders, and the loss mask covers exactly the replies."""

from __future__ import annotations

import pytest

from tunesmith.engine.data.templates import TEMPLATES, render, resolve_template
from tunesmith.engine.data.tokenize import encode_examples, mask_spans
from tunesmith.engine.errors import DataError

CONVO = {"messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am Smith."},
    {"role": "user", "content": "你好"},
    {"role": "assistant", "content": "你好，世界。"},
]}


def trained(tok, template, example=CONVO):
    enc = encode_examples(tok, template, [example], keep_text=True)[0]
    return [t for t, on in mask_spans(enc) if on], enc


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_named_template_masks_only_replies(bare_tokenizer, name):
    t = resolve_template(bare_tokenizer, name)
    runs, enc = trained(bare_tokenizer, t)
    assert len(runs) == 2, runs
    assert "I am Smith." in runs[0] and "你好，世界。" in runs[1]
    for r in runs:  # no prompt text leaks into the trained spans
        assert "Who are you?" not in r and "Be brief." not in r
    assert not runs[1].endswith(("\n", " "))  # the end-of-turn marker, not the whitespace after it
    text = "".join(p for p, _ in mask_spans(enc))
    assert "Who are you?" in text and ("Be brief." in text)  # the system prompt is kept (folded in where needed)


def test_generation_prompt_is_what_training_masks(bare_tokenizer):
    """The prefix the model is given at inference ends exactly where training starts learning."""
    for name in ("chatml", "llama3", "mistral", "gemma", "phi"):
        t = resolve_template(bare_tokenizer, name)
        prompt = render(bare_tokenizer, t, [CONVO["messages"][:2]], add_generation_prompt=True)[0]
        full = render(bare_tokenizer, t, [CONVO["messages"][:3]])[0]
        assert full.startswith(prompt), name
        assert full[len(prompt):].lstrip().startswith("I am Smith."), name


def test_qwen3_thinking_on_and_off(bare_tokenizer):
    convo = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                          {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}
    on, _ = trained(bare_tokenizer, resolve_template(bare_tokenizer, "qwen3"), convo)
    off, _ = trained(bare_tokenizer, resolve_template(bare_tokenizer, "qwen3_nothink"), convo)
    assert on == ["b<|im_end|>", "<think>\n\n</think>\n\nd<|im_end|>"]  # learns to open its (empty) thoughts
    assert off == ["b<|im_end|>", "d<|im_end|>"]  # the empty think block is part of the prompt
    # enable_thinking= reaches any template that reads it
    off2, _ = trained(bare_tokenizer, resolve_template(bare_tokenizer, "qwen3", enable_thinking=False), convo)
    assert off2 == off


def test_qwen3_reasoning_is_trained(bare_tokenizer):
    ex = {"messages": [{"role": "user", "content": "2+2?"},
                       {"role": "assistant", "content": "4", "reasoning_content": "two and two"}]}
    runs, _ = trained(bare_tokenizer, resolve_template(bare_tokenizer, "qwen3"), ex)
    assert runs == ["<think>\ntwo and two\n</think>\n\n4<|im_end|>"]


def test_unknown_template_and_missing_template(bare_tokenizer):
    with pytest.raises(DataError, match="unknown template 'nope'.*chatml"):
        resolve_template(bare_tokenizer, "nope")
    with pytest.raises(DataError, match="no chat template"):
        resolve_template(bare_tokenizer)
    assert resolve_template(bare_tokenizer, "Qwen3-NoThink").name == "qwen3_nothink"


def test_tokenizer_template_used_by_default(tokenizer):
    t = resolve_template(tokenizer)
    assert t.name == "tokenizer" and t.jinja is None
    runs, _ = trained(tokenizer, t)
    assert runs == ["I am Smith.<|im_end|>", "你好，世界。<|im_end|>"]


def test_slow_path_without_offsets_gives_same_masks(tokenizer):
    """Tokenizers without offset mapping fall back to tokenizing the spans one by one."""
    from tunesmith.engine.data.tokenize import _encode_by_segments, chat_spans

    t = resolve_template(tokenizer)
    text, spans = chat_spans(tokenizer, t, CONVO)
    ids, mask = _encode_by_segments(tokenizer, text, spans)
    fast = encode_examples(tokenizer, t, [CONVO])[0]
    assert ids == fast.input_ids and mask == fast.assistant_masks
