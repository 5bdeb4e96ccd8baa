"""Bad input gives one clear message naming the problem, and leaves nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.engine import jobs, registry
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError, DataError, ModelError


def _home_is_clean(home: Path) -> None:
    runs = home / "runs"
    assert not runs.exists() or list(runs.iterdir()) == [], list(runs.iterdir())
    assert registry.all_runs() == []


def test_unknown_model_path(fresh_home):
    cfg = RunConfig().with_overrides(["model.name_or_path=/nonexistent/model"])
    with pytest.raises(ModelError, match="no such folder /nonexistent/model"):
        jobs.submit(cfg)
    _home_is_clean(fresh_home)


def test_model_path_that_is_not_a_model(fresh_home, tmp_path):
    (tmp_path / "notamodel").mkdir()
    cfg = RunConfig().with_overrides([f"model.name_or_path={tmp_path / 'notamodel'}"])
    with pytest.raises(ModelError, match="no config.json"):
        jobs.submit(cfg)
    _home_is_clean(fresh_home)


@pytest.mark.parametrize("content", ["", "[]", "\n\n"])
def test_empty_dataset(fresh_home, tmp_path, content):
    f = tmp_path / "empty.json"
    f.write_text(content)
    cfg = RunConfig().with_overrides([f"data.datasets=[{f}]"])
    with pytest.raises(DataError) as e:
        jobs.submit(cfg)
    assert "empty.json" in str(e.value)
    _home_is_clean(fresh_home)


def test_unknown_dataset_name(fresh_home):
    cfg = RunConfig().with_overrides(["data.datasets=[no_such_dataset]"])
    with pytest.raises(DataError, match="no_such_dataset"):
        jobs.submit(cfg)
    _home_is_clean(fresh_home)


def test_wrong_field_type_in_yaml_cli(fresh_home, tmp_path, capsys):
    f = tmp_path / "run.yaml"
    f.write_text("training:\n  learning_rate: fast\n")
    assert main(["train", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "training.learning_rate" in err and "Traceback" not in err
    _home_is_clean(fresh_home)


def test_missing_config_file_cli(fresh_home, capsys):
    assert main(["train", "/nope/run.yaml"]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_webui_refuses_public_host_without_auth(fresh_home, monkeypatch):
    monkeypatch.delenv("TUNESMITH_AUTH", raising=False)
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_AUTH"}
    p = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "webui", "--host", "0.0.0.0"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=str(fresh_home.parent))
    assert p.returncode == 2
    assert "--auth user:password" in p.stderr and "TUNESMITH_AUTH" in p.stderr
    assert "Traceback" not in p.stderr


def test_bad_auth_value():
    from tunesmith.studio.app import parse_auth

    with pytest.raises(ConfigError, match="user:password"):
        parse_auth("justaname")
    assert parse_auth("me:pw:with:colons") == ("me", "pw:with:colons")


def test_unknown_run_id(fresh_home, capsys):
    assert main(["export", "nope", "--format", "adapter"]) == 2
    assert "No run with id 'nope'" in capsys.readouterr().err
