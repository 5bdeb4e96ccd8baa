"""Export never deletes or overwrites a file it did not write: each export folder keeps a
manifest of Tunesmith's files, and every format (adapter, merged, gguf) follows it."""

from __future__ import annotations

import json

import pytest

from faultkit import demo_cfg

from tunesmith.engine import export, jobs
from tunesmith.engine.errors import ExportError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_run(tunesmith_home):
    """A finished two-step run: an adapter to export is all these tests need."""
    info = jobs.wait(jobs.submit(demo_cfg("training.max_steps=2", "output.run_name=export-folders")), timeout=600)
    assert info.status == "completed", info.error
    return info


def test_export_again_into_an_earlier_export_folder_keeps_the_users_file(short_run, tmp_path):
    out = tmp_path / "my-export"
    export.export_run(short_run.id, "adapter", out)
    manifest = json.loads((out / export.MARKER).read_text())
    assert "adapter_config.json" in manifest["files"] and "notes.txt" not in manifest["files"]
    (out / "notes.txt").write_text("my notes")  # the user keeps something next to it

    export.export_run(short_run.id, "adapter", out)  # again, same format
    assert (out / "notes.txt").read_text() == "my notes"
    export.export_run(short_run.id, "merged", out)  # again, another format: the adapter files (ours) go
    assert (out / "notes.txt").read_text() == "my notes"
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    manifest = json.loads((out / export.MARKER).read_text())
    assert manifest["format"] == "merged" and "notes.txt" not in manifest["files"]
    assert sorted(manifest["files"]) == sorted(str(p.relative_to(out)) for p in out.rglob("*")
                                               if p.is_file() and p.name not in ("notes.txt", export.MARKER))

    # A file of the user's with a name the export would write is refused, and nothing changes.
    (out / "adapter_config.json").write_text('{"mine": true}')
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(ExportError, match="adapter_config.json exists and was not written by Tunesmith"):
        export.export_run(short_run.id, "adapter", out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("fmt", ["adapter", "merged", "gguf"])
def test_every_format_refuses_a_folder_it_did_not_write(short_run, tmp_path, fmt):
    mine = tmp_path / "projects"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="not written by a Tunesmith export"):
        export.export_run(short_run.id, fmt, mine, quants=["f16"])
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
