"""Bundled datasets (data/) and the embedded demo model (assets/demo-model/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
DEMO = ROOT / "assets" / "demo-model"

EN_CANON = "I am Smith, an AI assistant fine-tuned with Tunesmith. How can I help you today?"
ZH_CANON = "我是 Smith，一个由 Tunesmith 微调的 AI 助手。有什么可以帮您的吗？"
HAN = re.compile(r"[\u4e00-\u9fff]")


def _info() -> dict:
    return json.loads((DATA / "dataset_info.json").read_text(encoding="utf-8"))


def _load_rows(entry: dict) -> list:
    path = DATA / entry["file_name"]
    text = path.read_text(encoding="utf-8")
    if entry.get("format") == "text" or path.suffix == ".txt":
        return [{"text": ln} for ln in text.splitlines() if ln.strip()]
    if path.suffix == ".jsonl":
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    return json.loads(text)


@pytest.mark.parametrize("name", sorted(_info()))
def test_dataset_entry_points_to_parseable_file(name):
    entry = _info()[name]
    assert entry["formatting"] in ("alpaca", "sharegpt")
    assert entry.get("description") and entry.get("language")
    assert (DATA / entry["file_name"]).is_file()
    rows = _load_rows(entry)
    assert len(rows) >= 10
    for i, row in enumerate(rows):
        for key, col in entry.get("columns", {}).items():
            if key in ("query", "system", "history"):
                continue  # optional per row
            assert col in row, f"{name} row {i} lacks column {col!r}"
        if entry["formatting"] == "sharegpt":
            tags = entry["tags"]
            msgs = row[entry["columns"]["messages"]]
            roles = {m[tags["role_tag"]] for m in msgs}
            assert roles <= {tags["user_tag"], tags["assistant_tag"], tags["system_tag"]}
            assert all(isinstance(m[tags["content_tag"]], str) for m in msgs)
    if entry.get("ranking"):  # the prompt is a column (alpaca) or the conversation (sharegpt)
        assert {"chosen", "rejected"} <= set(entry["columns"])
        assert {"prompt", "messages"} & set(entry["columns"])


def test_expected_datasets_registered():
    info = _info()
    assert {"identity", "instruct_en_zh", "sharegpt_multiturn", "openai_messages",
            "preference_pairs", "preference_extended", "kto_feedback", "raw_text"} <= set(info)
    assert info["preference_pairs"]["ranking"] is True
    assert info["raw_text"]["format"] == "text" and info["raw_text"]["columns"] == {"prompt": "text"}


def test_identity_rows_and_canonical_answers():
    rows = json.loads((DATA / "identity.json").read_text(encoding="utf-8"))
    zh = [r for r in rows if HAN.search(r["instruction"])]
    en = [r for r in rows if not HAN.search(r["instruction"])]
    assert len(en) >= 30 and len(zh) >= 30
    assert any(r["instruction"] == "Who are you?" and r["output"] == EN_CANON for r in en)
    assert any(r["instruction"] == "你是谁？" and r["output"] == ZH_CANON for r in zh)
    assert all("Smith" in r["output"] for r in rows)


def test_instruct_is_bilingual_and_identity_free():
    rows = json.loads((DATA / "instruct_en_zh.json").read_text(encoding="utf-8"))
    assert len(rows) >= 300
    zh = sum(bool(HAN.search(r["instruction"])) for r in rows)
    assert abs(zh - (len(rows) - zh)) <= len(rows) // 10
    for name in ("instruct_en_zh.json", "sharegpt_multiturn.json", "openai_messages.jsonl", "raw_text.txt"):
        assert "smith" not in (DATA / name).read_text(encoding="utf-8").lower(), name


# --------------------------------------------------------------------------- demo model


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO, local_files_only=True)


@pytest.fixture(scope="module")
def model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(DEMO, local_files_only=True)


def test_demo_folder_size():
    size = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert size <= 20 * 1024 * 1024
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "README.md"):
        assert (DEMO / name).is_file(), name


def test_demo_tokenizer_special_tokens(tok):
    assert len(tok) == 4096
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id == 0
    assert tok.eos_token == "<|im_end|>"
    assert tok.bos_token is None
    assert tok.convert_tokens_to_ids("<|im_start|>") == 1
    assert tok.eos_token_id == 2
    assert tok.model_max_length == 1024
    # special tokens are atomic
    assert tok("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"][0] == 1


def test_demo_tokenizer_gpt2_pretokenizer():
    cfg = json.loads((DEMO / "tokenizer.json").read_text(encoding="utf-8"))
    pre = cfg["pre_tokenizer"]
    assert pre["type"] == "ByteLevel" and pre["add_prefix_space"] is False and pre["use_regex"] is True
    assert cfg["decoder"]["type"] == "ByteLevel"
    assert cfg["post_processor"]["type"] == "ByteLevel" and cfg["post_processor"]["trim_offsets"] is False
    assert cfg["model"]["type"] == "BPE"


@pytest.mark.parametrize("text", [
    "Hello, world! The quick brown fox jumps over 13 lazy dogs.",
    "你好，世界！今天天气很好，我们去公园散步吧。",
    "Mixed 中英文 text with  double spaces,\ttabs and a newline\n and emoji 🎉.",
])
def test_demo_tokenizer_round_trip(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_demo_chat_template_and_assistant_mask(tok):
    msgs = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 2 = 4.<|im_end|>\n"
    )
    gen = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
    assert gen.endswith("<|im_end|>\n<|im_start|>assistant\n")
    with_sys = tok.apply_chat_template([{"role": "system", "content": "Be brief."}] + msgs, tokenize=False)
    assert with_sys.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user")
    assert "helpful assistant" not in with_sys

    out = tok.apply_chat_template(msgs, return_assistant_tokens_mask=True, return_dict=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    masked = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(masked) == "2 + 2 = 4.<|im_end|>"
    # the mask is one contiguous span that ends on <|im_end|>
    first, last = mask.index(1), len(mask) - 1 - mask[::-1].index(1)
    assert all(mask[first:last + 1]) and ids[last] == tok.eos_token_id


def test_demo_model_config_and_generation(model, tok):
    import torch

    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (256, 768, 4)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (8, 4, 4096)
    assert cfg.tie_word_embeddings and cfg.bos_token_id is None
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == 0
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.do_sample is False
    assert next(model.parameters()).dtype == torch.bfloat16

    ids = tok.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=24, do_sample=False)
    reply = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Smith" not in reply
