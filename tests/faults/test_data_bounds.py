"""Preparing data stays bounded in memory: long rows are cut before tokenizing (keeping exactly
the tokens training would keep), and an absurd row is refused by file and line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tunesmith.engine.config import RunConfig
from tunesmith.engine.data.bounds import MAX_ROW_CHARS, bound_examples, char_bound
from tunesmith.engine.data.tokenize import encode_examples
from tunesmith.engine.errors import DataError


@pytest.fixture(scope="module")
def tok():
    from tunesmith.engine.models import load_tokenizer

    return load_tokenizer(RunConfig().model)


def _chat(n_chars: int) -> dict:
    words = ("lorem ipsum dolor sit amet, 数据 1234 " * (n_chars // 30 + 1))[:n_chars]
    return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": words},
                         {"role": "assistant", "content": "Done. " + words},
                         {"role": "user", "content": "again"}, {"role": "assistant", "content": "ok"}]}


def test_cutting_before_tokenizing_keeps_the_trained_tokens(tok):
    from tunesmith.engine.data.templates import resolve_template

    template = resolve_template(tok, None, None)
    cutoff = 64
    rows = [_chat(3 * char_bound(cutoff, tok)), {"text": "x y z " * char_bound(cutoff, tok)}, _chat(200)]
    bounded = bound_examples(rows, cutoff, tok)
    assert bounded[2] is rows[2]  # short rows untouched
    assert len(json.dumps(bounded[0])) < len(json.dumps(rows[0])) / 2
    full = encode_examples(tok, template, rows)
    cut = encode_examples(tok, template, bounded)
    for a, b in zip(full, cut):
        assert a.input_ids[:cutoff] == b.input_ids[:cutoff]
        assert a.assistant_masks[:cutoff] == b.assistant_masks[:cutoff]


_PREPARE = """
import json, resource, sys
from tunesmith.engine.config import RunConfig
from tunesmith.engine.data.prepare import prepare_datasets
from tunesmith.engine.models import load_tokenizer
cfg = RunConfig().with_overrides([f"data.datasets=[{sys.argv[1]}]", "data.cutoff_len=256"])
tok = load_tokenizer(cfg.model)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
train, _ = prepare_datasets(cfg, tok, use_cache=False)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(json.dumps({"rows": len(train), "longest": max(len(x) for x in train["input_ids"]), "grew_mib": grew / 1024}))
"""


@pytest.mark.slow
def test_a_long_row_is_prepared_in_bounded_memory(tmp_path, fresh_home):
    f = tmp_path / "long.jsonl"
    rows = [{"instruction": "Say done.", "input": "", "output": "done"}] * 3
    rows.append({"instruction": "Answer first, then read this: " + "lorem ipsum " * 1_000_000,  # 12 MB
                 "input": "", "output": "ok"})
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    p = subprocess.run([sys.executable, "-c", _PREPARE, str(f)], capture_output=True, text=True, timeout=600,
                       cwd=str(tmp_path))
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["longest"] <= 256
    # Tokenizing all 12 MB would hold ~3 M tokens with offsets (gigabytes); the cut row costs little.
    assert out["grew_mib"] < 400, out


def test_an_absurd_row_is_refused_by_name(tmp_path, fresh_home):
    from tunesmith.engine import jobs

    f = tmp_path / "absurd.jsonl"
    with open(f, "w") as fh:
        fh.write(json.dumps({"instruction": "hi", "output": "hello"}) + "\n")
        fh.write('{"instruction": "' + "a" * (MAX_ROW_CHARS + 1) + '", "output": "x"}\n')
    cfg = RunConfig().with_overrides([f"data.datasets=[{f}]"])
    with pytest.raises(DataError, match=r"absurd.jsonl line 2: row_too_large"):
        jobs.submit(cfg)
    assert not (fresh_home / "runs").exists() or not list((fresh_home / "runs").iterdir())
