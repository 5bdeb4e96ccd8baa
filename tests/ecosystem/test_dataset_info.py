"""LLaMA-Factory dataset_info.json: kto_tag kept, media refused by name, num_samples honoured."""

from __future__ import annotations

import json

import pytest

from tunesmith.engine.errors import DataError


@pytest.fixture
def lf_info(tmp_path):
    rows = [{"instruction": f"Say {i}", "input": "", "output": f"{i}"} for i in range(10)]
    (tmp_path / "alpaca.json").write_text(json.dumps(rows))
    kto = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            "label": i % 2 == 0} for i in range(6)]
    (tmp_path / "kto.json").write_text(json.dumps(kto))
    mm = [{"messages": [{"role": "user", "content": "<image>What is this?"}, {"role": "assistant", "content": "A cat"}],
           "images": ["cat.jpg"]}]
    (tmp_path / "mllm.json").write_text(json.dumps(mm))
    info = {
        "small_alpaca": {"file_name": "alpaca.json", "num_samples": 4},
        "big_alpaca": {"file_name": "alpaca.json", "num_samples": 25},
        "kto_demo": {"file_name": "kto.json", "formatting": "sharegpt",
                     "columns": {"messages": "messages", "kto_tag": "label"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
        "mllm_demo": {"file_name": "mllm.json", "formatting": "sharegpt",
                      "columns": {"messages": "messages", "images": "images"},
                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    return tmp_path / "dataset_info.json"


def test_import_keeps_kto_tag_and_refuses_media(fresh_home, lf_info, capsys):
    from tunesmith.cli.main import main
    from tunesmith.engine.data import get_dataset, import_dataset_info

    imported, skipped = import_dataset_info(lf_info)
    assert {e.name for e in imported} == {"small_alpaca", "big_alpaca", "kto_demo"}
    assert set(skipped) == {"mllm_demo"}
    assert "image/video/audio datasets are not supported yet" in skipped["mllm_demo"] and "images" in skipped["mllm_demo"]
    kto = get_dataset("kto_demo")
    assert kto.kto_tag == "label" and any("KTO labels" in n for n in kto.notes())
    stored = json.loads((fresh_home / "dataset_info.json").read_text())
    assert stored["kto_demo"]["columns"]["kto_tag"] == "label" and stored["small_alpaca"]["num_samples"] == 4
    # the CLI says the same, one line per entry
    assert main(["data", "import-info", str(lf_info), "--replace"]) == 0
    out = capsys.readouterr().out
    assert "skipped 'mllm_demo': image/video/audio datasets are not supported yet" in out
    assert "note: KTO labels in column 'label' kept" in out


def test_training_honours_num_samples_and_kto_labels(fresh_home, lf_info):
    from tunesmith.engine import models
    from tunesmith.engine.config import RunConfig
    from tunesmith.engine.data import import_dataset_info, prepare_datasets

    import_dataset_info(lf_info)
    cfg = RunConfig().with_overrides(["data.datasets=[small_alpaca]", "data.cutoff_len=64"])
    tok = models.load_tokenizer(cfg.model)
    train, _ = prepare_datasets(cfg, tok, use_cache=False)
    assert len(train) == 4
    train, _ = prepare_datasets(cfg.with_overrides(["data.datasets=[big_alpaca]"]), tok, use_cache=False)
    assert len(train) == 25  # past the file's 10 rows, repeated as LLaMA-Factory does
    # supervised training on KTO data learns the desirable replies only (the undesirable ones are left out)
    train, _ = prepare_datasets(cfg.with_overrides(["data.datasets=[kto_demo]"]), tok, use_cache=False)
    assert len(train) == 3
    # an entry with a media column written by hand is refused at training too
    info = json.loads((fresh_home / "dataset_info.json").read_text())
    info["hand_mllm"] = {"file_name": str(lf_info.parent / "alpaca.json"), "columns": {"prompt": "instruction",
                         "response": "output", "videos": "clip"}}
    (fresh_home / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="hand_mllm.*image/video/audio datasets are not supported yet"):
        prepare_datasets(cfg.with_overrides(["data.datasets=[hand_mllm]"]), tok, use_cache=False)
