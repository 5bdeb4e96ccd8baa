"""The security suite: a loopback studio next to files it must not touch, and the probe count.

    pytest tests/security              # about 4 minutes on 2 busy cores (three real studios)
    pytest tests/security -v           # also lists every probe
    pytest tests/security -m "not slow and not browser"   # the rules alone (test_policy.py), seconds

The run ends with "security probes: N/N refused, M/M allowed uses work".
"""

from __future__ import annotations

import json
import shutil

import pytest
from secprobe import PROBES, SECRET, UPLOAD_MB, Api, Probes, fake_run, start_studio, stop_studio

from tunesmith.engine import paths

ROWS = [{"instruction": f"Question {i}?", "input": "", "output": f"Answer {i}."} for i in range(5)]


@pytest.fixture(scope="session")
def probes() -> Probes:
    return PROBES


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A loopback studio allowed one folder, next to a folder it must not touch."""
    root = tmp_path_factory.mktemp("paths")
    home, cwd, allowed, outside = (root / n for n in ("home", "cwd", "allowed", "outside"))
    for d in (home, cwd, allowed, outside):
        d.mkdir()
    secret = outside / "secret.jsonl"
    secret.write_text(json.dumps({"instruction": SECRET, "input": "", "output": SECRET}) + "\n")
    secret.chmod(0o600)
    (outside / "secret.txt").write_text(SECRET + "\n")
    (home / "dataset_info.json").write_text(json.dumps({"x": {"file_name": "x.json", "note": SECRET}}))
    (allowed / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (allowed / "link.jsonl").symlink_to(secret)
    (allowed / "outlink").symlink_to(outside, target_is_directory=True)
    shutil.copytree(paths.demo_model_dir(), allowed / "model")
    shutil.copytree(paths.demo_model_dir(), outside / "model")
    (cwd / "secret.json").write_text(json.dumps([{"instruction": SECRET, "output": SECRET}]))
    run_id = fake_run(home, "probe-run")
    studio = start_studio(home, cwd, ["--allow-dir", str(allowed), "--max-upload-mb", str(UPLOAD_MB)])
    yield {"studio": studio, "home": home, "allowed": allowed, "outside": outside, "secret": secret, "cwd": cwd,
           "run": run_id}
    stop_studio(studio)


@pytest.fixture(scope="session")
def api(world):
    with world["studio"].client() as c:
        yield Api(c)


def pytest_terminal_summary(terminalreporter) -> None:
    if PROBES.refused or PROBES.allowed:
        n_ref = sum(ok for _, ok in PROBES.refused)
        n_ok = sum(ok for _, ok in PROBES.allowed)
        terminalreporter.write_line(f"security probes: {n_ref}/{len(PROBES.refused)} refused, "
                                    f"{n_ok}/{len(PROBES.allowed)} allowed uses work")
        verbose = terminalreporter.config.option.verbose > 0
        for name, ok in PROBES.refused:
            if not ok or verbose:
                terminalreporter.write_line(f"  {'refused' if ok else 'NOT REFUSED'}: {name}")
        for name, ok in PROBES.allowed:
            if not ok or verbose:
                terminalreporter.write_line(f"  {'works' if ok else 'BROKEN'}: {name}")
