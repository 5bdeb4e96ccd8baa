"""Malformed and unusual inputs: each gives the expected detection or a clear error, and nothing half-written.

One test per case; the error tests check the message names the file (and the
row or line) and says what to do.
"""

from __future__ import annotations

import json
import os

import pytest

from tunesmith.engine import paths
from tunesmith.engine.data import list_datasets, load_examples, register_upload
from tunesmith.engine.data.inspect import inspect_dataset
from tunesmith.engine.errors import DataError

ALPACA = {"instruction": "Say hi", "input": "", "output": "Hi!"}
CHAT = {"conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi there"}]}


def jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                    encoding="utf-8")
    return str(path)


def jfile(path, data, encoding="utf-8"):
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode(encoding))
    return str(path)


def kinds(es):
    return [(p.row, p.kind) for p in es.problems]


# --- whole-file errors --------------------------------------------------------


def test_truncated_json(tmp_path):
    f = tmp_path / "cut.json"
    f.write_text(json.dumps([ALPACA] * 5)[:-30])
    with pytest.raises(DataError) as e:
        load_examples(str(f))
    msg = str(e.value)
    assert "cut.json" in msg and "line 1" in msg and "truncated" in msg


def test_json_with_a_missing_comma_names_line_and_column(tmp_path):
    f = tmp_path / "comma.json"
    f.write_text('[\n  {"instruction": "a", "output": "b"}\n  {"instruction": "c", "output": "d"}\n]\n')
    with pytest.raises(DataError, match=r"comma\.json: not valid JSON at line 3, column 3"):
        load_examples(str(f))


def test_empty_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jsonl: the file is empty \(0 bytes\)"):
        load_examples(str(f))


def test_whitespace_only_file(tmp_path):
    f = tmp_path / "blank.json"
    f.write_text("\n   \n")
    with pytest.raises(DataError, match="only whitespace"):
        load_examples(str(f))


def test_binary_garbage_is_refused_with_the_fix(tmp_path):
    f = tmp_path / "garbage.jsonl"
    f.write_bytes(bytes(range(128, 256)) * 40 + b"\x81\x00\xff\xfe\x00")
    with pytest.raises(DataError) as e:
        load_examples(str(f))
    assert "garbage.jsonl" in str(e.value) and "UTF-8" in str(e.value)


def test_json_scalar_top_level(tmp_path):
    f = tmp_path / "scalar.json"
    f.write_text('"just a string"')
    with pytest.raises(DataError, match="expected an array of rows"):
        load_examples(str(f))


def test_unknown_layout_lists_keys(tmp_path):
    f = jsonl(tmp_path / "odd.jsonl", [{"foo": 1, "bar": [1, 2]}] * 3)
    with pytest.raises(DataError) as e:
        load_examples(f)
    assert "foo" in str(e.value) and "--format" in str(e.value)


def test_unsupported_extension(tmp_path):
    f = tmp_path / "notes.docx"
    f.write_bytes(b"PK\x03\x04")
    with pytest.raises(DataError, match="unsupported file type .docx"):
        load_examples(str(f))


# --- encodings ----------------------------------------------------------------


def test_utf8_bom_json(tmp_path):
    f = tmp_path / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps([ALPACA]).encode())
    es = load_examples(str(f))
    assert es.format == "alpaca" and es.loaded.encodings[str(f)] == "utf-8-sig" and not es.problems


def test_utf8_bom_jsonl_first_line_parses(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + (json.dumps(ALPACA) + "\n" + json.dumps({**ALPACA, "output": "Yo"})).encode())
    es = load_examples(str(f))
    assert es.n_rows == 2 and not es.problems


def test_utf16_with_bom(tmp_path):
    f = tmp_path / "u16.json"
    f.write_bytes(json.dumps([{"instruction": "你好", "output": "Hello"}], ensure_ascii=False).encode("utf-16"))
    es = load_examples(str(f))
    assert es.examples[0]["messages"][0]["content"] == "你好"
    assert es.loaded.encodings[str(f)].startswith("utf-16")


def test_utf16_without_bom(tmp_path):
    f = tmp_path / "u16le.jsonl"
    f.write_bytes((json.dumps(ALPACA) + "\n").encode("utf-16-le"))
    es = load_examples(str(f))
    assert es.n_rows == 1 and es.loaded.encodings[str(f)] == "utf-16-le"


def test_gbk_is_detected_and_reported(tmp_path):
    rows = [{"instruction": "把这句话翻译成英文：我喜欢学习新的东西。", "output": "I like learning new things."},
            {"instruction": "中国的首都是哪里？请简单回答。", "output": "中国的首都是北京。"}] * 3
    f = jfile(tmp_path / "gbk.json", rows, encoding="gbk")
    r = inspect_dataset(f)
    assert r["format"] == "alpaca" and r["rows"]["total"] == 6
    assert r["encodings"][f] in ("gb18030", "gbk")
    assert any("not UTF-8" in w for w in r["warnings"])
    es = load_examples(f)
    assert es.examples[1]["messages"][1]["content"] == "中国的首都是北京。"


def test_latin1_csv(tmp_path):
    f = tmp_path / "latin.csv"
    f.write_bytes("instruction,output\nTranslate 'café crème' to English,Coffee with cream – délicieux\n"
                  "Spell naïve,n-a-ï-v-e\n".encode("cp1252"))
    es = load_examples(str(f))
    assert es.examples[0]["messages"][0]["content"] == "Translate 'café crème' to English"
    assert es.examples[1]["messages"][1]["content"] == "n-a-ï-v-e"


# --- rows with problems -------------------------------------------------------


def test_bad_line_in_the_middle_of_jsonl(tmp_path):
    f = jsonl(tmp_path / "mid.jsonl", [ALPACA, {**ALPACA, "output": "a"}, '{"instruction": "x", "output": ', "",
                                       {**ALPACA, "output": "b"}])
    es = load_examples(f)
    assert kinds(es) == [(3, "invalid_json")]
    assert es.problems[0].line and es.problems[0].where() == "mid.jsonl line 3"
    assert [n for n in es.loaded.numbers] == [1, 2, 3, 5]  # the blank line 4 is skipped, numbers kept
    with pytest.raises(DataError, match="mid.jsonl line 3: invalid_json"):
        es.usable()
    assert len(es.usable(drop_invalid=True)) == 3


def test_crlf_jsonl(tmp_path):
    f = tmp_path / "crlf.jsonl"
    f.write_bytes((json.dumps(ALPACA) + "\r\n" + json.dumps({**ALPACA, "output": "x"}) + "\r\n").encode())
    es = load_examples(str(f))
    assert es.n_rows == 2 and not es.problems


def test_jsonl_row_that_is_an_array(tmp_path):
    f = jsonl(tmp_path / "arr.jsonl", [ALPACA, [1, 2, 3]])
    assert kinds(load_examples(f)) == [(2, "wrong_type")]


def test_mixed_formats_in_one_file(tmp_path):
    f = jfile(tmp_path / "mixed.json", [ALPACA, {**ALPACA, "output": "Hello"}, {**ALPACA, "output": "Hey"}, CHAT])
    es = load_examples(f)
    assert es.format == "alpaca"
    assert kinds(es) == [(4, "mixed_format")]
    assert "sharegpt" in es.problems[0].message
    assert any("sharegpt" in e for e in es.detection.evidence)


def test_wrong_types(tmp_path):
    rows = [CHAT, {"conversations": "human: hi\ngpt: hello"}, {"conversations": [["human", "hi"]]}]
    es = load_examples(jfile(tmp_path / "types.json", rows))
    assert es.format == "sharegpt"
    assert [k for _, k in kinds(es)] == ["wrong_type", "wrong_type"]


def test_numbers_as_content(tmp_path):
    rows = [{"instruction": "What is 6 x 7?", "output": 42}, ALPACA,
            {"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "three"}]}]
    es = load_examples(jfile(tmp_path / "nums.json", rows[:2]))
    assert kinds(es) == [(1, "non_string_content")]
    assert "int" in es.problems[0].message and "quote" in es.problems[0].message
    es = load_examples(jfile(tmp_path / "nums2.json", [rows[2], CHAT]))
    assert kinds(es) == [(1, "non_string_content")]


def test_missing_assistant_turn(tmp_path):
    rows = [CHAT, {"conversations": [{"from": "human", "value": "Anyone there?"}]}]
    es = load_examples(jfile(tmp_path / "noreply.json", rows))
    assert kinds(es) == [(2, "no_response")]


def test_system_only_conversation(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "You are helpful."}]},
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    es = load_examples(jfile(tmp_path / "sysonly.json", rows))
    assert es.format == "openai"
    assert kinds(es) == [(1, "no_response")] and "only a system prompt" in es.problems[0].message


def test_wrong_role_order(tmp_path):
    two_users = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                              {"role": "assistant", "content": "c"}]}
    starts_with_assistant = {"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "b"},
                                          {"role": "assistant", "content": "c"}]}
    late_system = {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                {"role": "assistant", "content": "c"}]}
    ok = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}
    es = load_examples(jfile(tmp_path / "order.json", [ok, two_users, starts_with_assistant, late_system]))
    assert kinds(es) == [(2, "wrong_role_order"), (3, "wrong_role_order"), (4, "wrong_role_order")]


def test_unknown_role(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "narrator", "content": "b"}]},
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    es = load_examples(jfile(tmp_path / "roles.json", rows))
    assert kinds(es) == [(1, "unknown_role")] and "'narrator'" in es.problems[0].message


def test_empty_response_and_missing_field(tmp_path):
    rows = [ALPACA, {"instruction": "x", "output": "  "}, {"instruction": "y", "input": "z"}]
    es = load_examples(jfile(tmp_path / "empty.json", rows))
    assert kinds(es) == [(2, "empty_response"), (3, "missing_field")]


def test_duplicates_are_warnings(tmp_path):
    es = load_examples(jfile(tmp_path / "dupes.json", [ALPACA, {**ALPACA, "output": "x"}, ALPACA]))
    assert kinds(es) == [(3, "duplicate_row")] and es.problems[0].severity == "warning"
    assert len(es.usable()) == 3 and len(es.usable(drop_duplicates=True)) == 2


def test_one_giant_row(tmp_path, tokenizer):
    giant = {"instruction": "Summarise:", "output": "word " * 200_000}
    f = jfile(tmp_path / "giant.json", [ALPACA, giant])
    r = inspect_dataset(f, tokenizer=tokenizer, cutoff_len=256)
    assert r["rows"]["total"] == 2 and r["ok"]
    assert r["token_stats"]["rows_over_cutoff"] == 1 and r["token_stats"]["tokens_lost_to_cutoff"] > 100_000
    assert r["text_stats"]["chars"]["max"] >= 1_000_000


# --- file types and layouts ---------------------------------------------------


def test_csv_with_embedded_newlines_and_quotes(tmp_path):
    f = tmp_path / "quoted.csv"
    f.write_text('instruction,output\n"Write a poem, please","Roses are red,\nviolets are ""blue"""\n'
                 'Say hi,Hi\n', encoding="utf-8")
    es = load_examples(str(f))
    assert es.format == "alpaca" and es.n_rows == 2 and not es.problems
    assert es.examples[0]["messages"][1]["content"] == 'Roses are red,\nviolets are "blue"'


def test_csv_record_with_too_many_fields(tmp_path):
    f = tmp_path / "fields.csv"
    f.write_text("instruction,output\na,b\nc,d,e\n", encoding="utf-8")
    es = load_examples(str(f))
    assert kinds(es) == [(2, "malformed_record")] and "3 fields" in es.problems[0].message


def test_tsv_xlsx_parquet_txt(tmp_path):
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    tsv = tmp_path / "d.tsv"
    tsv.write_text("prompt\tcompletion\nhi\thello\n", encoding="utf-8")
    assert load_examples(str(tsv)).format == "alpaca"
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["instruction", "output"])
    ws.append(["What is 6 x 7?", 42])  # a number cell becomes text
    wb.save(tmp_path / "d.xlsx")
    es = load_examples(str(tmp_path / "d.xlsx"))
    assert es.examples[0]["messages"][1]["content"] == "42" and not es.problems
    pq.write_table(pa.Table.from_pylist([CHAT, CHAT]), tmp_path / "d.parquet")
    es = load_examples(str(tmp_path / "d.parquet"))
    assert es.format == "sharegpt" and es.n_rows == 2
    (tmp_path / "d.txt").write_text("First paragraph.\n\nSecond one.\n", encoding="utf-8")
    es = load_examples(str(tmp_path / "d.txt"))
    assert es.format == "text" and [e["text"] for e in es.examples] == ["First paragraph.", "Second one."]
    assert es.loaded.numbers == [1, 3]


def test_json_object_of_arrays_and_jsonl_saved_as_json(tmp_path):
    es = load_examples(jfile(tmp_path / "splits.json", {"train": [ALPACA], "test": [{**ALPACA, "output": "x"}]}))
    assert es.n_rows == 2
    es = load_examples(jsonl(tmp_path / "lines.json", [ALPACA, {**ALPACA, "output": "x"}]))
    assert es.n_rows == 2 and es.problems == []


def test_folder_of_files(tmp_path):
    d = tmp_path / "folder"
    d.mkdir()
    jsonl(d / "a.jsonl", [ALPACA])
    jsonl(d / "b.jsonl", [{**ALPACA, "output": "x"}, "{broken"])
    (d / ".hidden.json").write_text("not json")
    es = load_examples(str(d))
    assert es.n_rows == 3
    assert es.problems[0].where() == "b.jsonl line 2"


def test_custom_role_and_content_keys(tmp_path):
    rows = [{"dialog": [{"speaker": "user", "text": "hi"}, {"speaker": "bot", "text": "hello"}]}] * 2
    es = load_examples(jfile(tmp_path / "custom.json", rows))
    assert es.format == "sharegpt"
    assert es.detection.mapping.messages == "dialog" and es.detection.mapping.role_tag == "speaker"
    assert es.examples[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_column_mapping_override(tmp_path):
    rows = [{"q": "2+2?", "a": "4"}, {"q": "3+3?", "a": "6"}]
    f = jfile(tmp_path / "qa.json", rows)
    with pytest.raises(DataError):
        load_examples(f)
    es = load_examples(f, format="alpaca", mapping="prompt=q,response=a")
    assert es.examples[0]["messages"] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    r = inspect_dataset(f, format="alpaca", mapping={"prompt": "q", "response": "a"})
    assert r["format_overridden"] and r["mapping"]["prompt"] == "q"


def test_openai_tool_calls_and_sharegpt_function_calls(tmp_path, tokenizer):
    openai_row = {"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "content": "18C, sunny"},
        {"role": "assistant", "content": "It is 18C and sunny."}],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}]}
    sharegpt_row = {"conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": "{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}"},
        {"from": "observation", "value": "18C, sunny"},
        {"from": "gpt", "value": "It is 18C and sunny."}]}
    a = load_examples(jfile(tmp_path / "oa.json", [openai_row]))
    b = load_examples(jfile(tmp_path / "sg.json", [sharegpt_row]))
    assert not a.problems and not b.problems
    assert a.examples[0]["messages"][1:] == b.examples[0]["messages"][1:] or \
        a.examples[0]["messages"] == b.examples[0]["messages"]
    assert a.examples[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    from tunesmith.engine.data.inspect import preview_rows

    rows = preview_rows(a, tokenizer=tokenizer, chat_template="qwen")
    trained = "".join(t for t, on in rows[0].spans if on)
    assert '"city": "Paris"' in trained and "It is 18C and sunny." in trained
    assert "18C, sunny" not in trained  # the tool result is input, not trained


def test_preference_as_messages(tmp_path):
    row = {"messages": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
           "rejected": [{"role": "assistant", "content": "5"}]}
    es = load_examples(jfile(tmp_path / "pref.json", [row]))
    assert es.format == "preference" and es.examples[0]["rejected"]["content"] == "5"
    assert es.examples[0]["messages"][-1] == {"role": "assistant", "content": "4"}


def test_alpaca_history_and_system(tmp_path):
    row = {"instruction": "And 3+3?", "output": "6", "system": "Be terse.", "history": [["2+2?", "4"]]}
    es = load_examples(jfile(tmp_path / "hist.json", [row]))
    assert [m["role"] for m in es.examples[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]


# --- the studio's guards and nothing half-written -------------------------------


def test_path_outside_the_allowed_folders(tmp_path):
    inside = tmp_path / "uploads"
    inside.mkdir()
    ok = jfile(inside / "ok.json", [ALPACA])
    outside = jfile(tmp_path / "secret.json", [ALPACA])
    assert inspect_dataset(ok, allowed_roots=[inside])["rows"]["total"] == 1
    with pytest.raises(DataError, match="outside the folders"):
        inspect_dataset(outside, allowed_roots=[inside])
    link = inside / "link.json"
    os.symlink(outside, link)
    with pytest.raises(DataError, match="outside the folders"):
        inspect_dataset(str(link), allowed_roots=[inside])
    with pytest.raises(DataError, match="outside the folders"):
        inspect_dataset(str(inside / ".." / "secret.json"), allowed_roots=[inside])
    assert inspect_dataset("identity", allowed_roots=[inside])["rows"]["total"] > 0  # registered names are fine


def _home_snapshot():
    home = paths.home()
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


@pytest.mark.parametrize("content", [b"", b"[{\"instruction\": \"a\", \"output\"", b"\x00\xff\x81" * 50])
def test_bad_upload_writes_nothing(tmp_path, content):
    f = tmp_path / "upload.json"
    f.write_bytes(content)
    before = _home_snapshot()
    with pytest.raises(DataError):
        register_upload(f, "my_upload")
    assert _home_snapshot() == before
    assert "my_upload" not in [e.name for e in list_datasets()]


def test_good_upload_registers_and_trains(tmp_path, tokenizer):
    f = jsonl(tmp_path / "chats.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                        {"role": "assistant", "content": "hello"}]}] * 2)
    e = register_upload(f, "my_chats")
    assert e.format == "openai" and e.source == "user" and e.path.startswith(str(paths.uploads_dir()))
    assert "my_chats" in [x.name for x in list_datasets()]
    es = load_examples("my_chats")
    assert es.n_rows == 2 and [p.kind for p in es.problems] == ["duplicate_row"]
    with pytest.raises(DataError, match="already registered"):
        register_upload(f, "my_chats")
    with pytest.raises(DataError, match="bundled"):
        register_upload(f, "identity")
    with pytest.raises(DataError, match="letters, digits"):
        register_upload(f, "../evil")


def test_template_failure_leaves_no_cache_entry(tmp_path, tokenizer):
    from tunesmith.engine.data.templates import ChatTemplate
    from tunesmith.engine.data.tokenize import cache_dir, encode_cached

    bad = ChatTemplate("bad", "{{ raise_exception('no system role') if messages[0].role == 'system' else '' }}")
    examples = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                              {"role": "assistant", "content": "a"}]}]
    with pytest.raises(DataError, match="chat template failed"):
        encode_cached(tokenizer, bad, examples)
    assert not cache_dir().exists() or not any(cache_dir().iterdir())


def test_llamafactory_dataset_info_imports_unchanged(tmp_path):
    """A LLaMA-Factory data folder: alpaca, sharegpt with tags, ranking, pretraining text, a ModelScope entry."""
    from tunesmith.engine.data import import_dataset_info

    lf = tmp_path / "lf_data"
    lf.mkdir()
    jfile(lf / "alpaca_demo.json", [{"instruction": "hi", "input": "", "output": "hello", "system": "s",
                                      "history": [["a", "b"]]}])
    jfile(lf / "glaive.json", [{"conversations": [{"from": "human", "value": "w?"},
                                                   {"from": "function_call", "value": "{\"name\": \"f\", \"arguments\": {}}"},
                                                   {"from": "observation", "value": "ok"},
                                                   {"from": "gpt", "value": "done"}], "tools": "[]"}])
    jfile(lf / "dpo.json", [{"conversations": [{"from": "human", "value": "q"}],
                             "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}])
    jsonl(lf / "c4_demo.jsonl", [{"text": "Some pretraining text."}])
    (lf / "dataset_info.json").write_text(json.dumps({
        "alpaca_demo": {"file_name": "alpaca_demo.json", "columns": {"prompt": "instruction", "query": "input",
                                                                      "response": "output", "system": "system",
                                                                      "history": "history"}},
        "glaive": {"file_name": "glaive.json", "formatting": "sharegpt",
                   "columns": {"messages": "conversations", "tools": "tools"}},
        "dpo": {"file_name": "dpo.json", "formatting": "sharegpt", "ranking": True,
                "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}},
        "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
        "ms_only": {"ms_hub_url": "AI-ModelScope/x"},
    }))
    imported, skipped = import_dataset_info(lf)
    assert {e.name: e.format for e in imported} == {"alpaca_demo": "alpaca", "glaive": "sharegpt", "dpo": "preference",
                                                    "c4_demo": "text"}
    assert list(skipped) == ["ms_only"]
    for name in ("alpaca_demo", "glaive", "dpo", "c4_demo"):
        es = load_examples(name)
        assert es.n_rows == 1 and not es.problems, (name, es.problems)
    assert [m["role"] for m in load_examples("glaive").examples[0]["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert load_examples("dpo").examples[0]["rejected"]["content"] == "bad"
