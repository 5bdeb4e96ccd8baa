"""Push to the Hub: the export folder, its model card, and the upload through huggingface_hub's own
client against a local server that speaks the Hub's upload API (tests/ecosystem/fake_hub.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunesmith.engine import hub
from tunesmith.engine.config import RunConfig

from .fake_hub import FakeHub


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    with FakeHub(tmp_path / "hub") as h:
        monkeypatch.setattr(constants, "ENDPOINT", h.url)
        yield h


def test_push_adapter_with_model_card(adapter_run, fake_hub):
    url = hub.push_run(adapter_run.id, "me/demo-lora", fmt="adapter", private=True, token="hf_test_token")
    assert url.endswith("/me/demo-lora")
    repo = fake_hub.root / "me" / "demo-lora"
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "tunesmith_config.yaml"} <= {
        p.name for p in repo.iterdir()}
    assert fake_hub.repos["me/demo-lora"]["create"]["visibility"] == "private"
    assert all(auth == "Bearer hf_test_token" for method, _, auth in fake_hub.requests if method == "POST")
    readme = (repo / "README.md").read_text()
    meta = hub.card_metadata(readme)
    assert meta["base_model"] == "tunesmith/demo" and meta["library_name"] == "peft"
    assert {"tunesmith", "lora"} <= set(meta["tags"])
    assert "`identity`" in readme and "Final training loss: 1.2500" in readme and "Final eval loss: 1.5000" in readme
    assert "tunesmith train run.yaml" in readme and "AutoPeftModelForCausalLM" in readme
    assert RunConfig.from_yaml(repo / "tunesmith_config.yaml").lora.r == 4
    assert json.loads((repo / "adapter_config.json").read_text())["base_model_name_or_path"] == "tunesmith/demo"
    # the uploaded adapter is the run's: same bytes
    assert (repo / "adapter_model.safetensors").read_bytes() == (adapter_run.run_dir / "adapter" / "adapter_model.safetensors").read_bytes()


def test_push_merged(adapter_run, fake_hub):
    hub.push_run(adapter_run.id, "me/demo-merged", fmt="merged", token="hf_test_token")
    repo = fake_hub.root / "me" / "demo-merged"
    meta = hub.card_metadata((repo / "README.md").read_text())
    assert meta["library_name"] == "transformers" and (repo / "config.json").exists()
    assert any(p.suffix == ".safetensors" for p in repo.iterdir())
    assert fake_hub.repos["me/demo-merged"]["create"].get("visibility") != "private"


def test_errors_are_one_line(adapter_run, fake_hub, tmp_path, monkeypatch):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    with pytest.raises(hub.HubError, match="rejected the token"):
        hub.push_folder(folder, "me/x", token="hf_wrong")
    with pytest.raises(hub.HubError, match="user/name"):
        hub.check_repo_id("just-a-name")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login either
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    with pytest.raises(hub.HubError, match="no Hugging Face token"):
        hub.push_folder(folder, "me/x")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(hub.HubError, match="cannot reach the Hub"):
        hub.push_folder(folder, "me/x", token="hf_test_token")


def test_cli_push_uses_hf_endpoint_and_token_from_the_environment(adapter_run, tmp_path):
    with FakeHub(tmp_path / "hub") as h:
        env = {**os.environ, "HF_ENDPOINT": h.url, "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_TELEMETRY": "1"}
        res = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "push", adapter_run.id, "--repo", "me/cli-lora"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert f"pushed adapter to {h.url}/me/cli-lora" in res.stdout
        assert (h.root / "me" / "cli-lora" / "README.md").exists()
        env["HF_TOKEN"] = "hf_wrong"
        res = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "push", adapter_run.id, "--repo", "me/cli-lora"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 2 and "rejected the token (401)" in res.stderr.strip().splitlines()[-1]


def test_studio_share_panel_serves_and_stops(adapter_run):
    import urllib.request

    from tunesmith.studio import share_panel

    info = share_panel.start_serving(adapter_run.id)
    port = int(info.split("http://127.0.0.1:")[1].split("/")[0])
    try:
        assert "curl http://127.0.0.1:" in info and "hub-push" in info
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as r:
            assert json.loads(r.read())["data"][0]["id"] == "hub-push"
        assert share_panel.start_serving(adapter_run.id) == info  # a second click shows the same server
        curl = info.split("```bash\n", 1)[1].split("\n```", 1)[0]  # the line the panel shows, run as shown
        res = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120)
        reply = json.loads(res.stdout)
        assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["role"] == "assistant"
    finally:
        assert share_panel.stop_serving(adapter_run.id) == "Stopped."
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
