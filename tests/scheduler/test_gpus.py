"""engine.gpus and resources.gpus: reading nvidia-smi, picking GPUs, refusing impossible requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.cli.main import main
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError
from tunesmith.engine.gpus import GpuInfo, check_request, parse_nvidia_smi, pick_gpus
from tunesmith.engine.launcher import worker_command

SMI = """0, NVIDIA H100 80GB HBM3, 81559, 80770
1, NVIDIA H100 80GB HBM3, 81559, 1024
2, NVIDIA A10G, 23028, [N/A]
"""


def test_nvidia_smi_rows_become_gpus():
    gpus = parse_nvidia_smi(SMI)
    assert [g.index for g in gpus] == [0, 1]  # the row without a number is skipped
    assert gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].total_bytes == 81559 * 2**20
    assert gpus[1].label() == "GPU 1: NVIDIA H100 80GB HBM3, 1.1 of 85.5 GB free"


@pytest.mark.parametrize("text,value", [
    ("auto", "auto"), ("2", 2), ("0,1", [0, 1]), ("[1]", [1]), ("1,", [1]), ("[0, 2]", [0, 2]),
])
def test_gpus_field_parses_cli_and_yaml_forms(text, value):
    assert RunConfig().with_overrides([f"resources.gpus={text}"]).resources.gpus == value
    assert RunConfig.from_yaml_text(f"resources:\n  gpus: {text}\n").resources.gpus == value


@pytest.mark.parametrize("bad", ["0", "-1", "[0, 0]", "two", "[]x"])
def test_bad_gpu_requests_name_the_field(bad):
    with pytest.raises(ConfigError, match="resources.gpus"):
        RunConfig().with_overrides([f"resources.gpus={bad}"])


def _machine(free_gb: list[float]) -> list[GpuInfo]:
    return [GpuInfo(i, "G", 80 * 2**30, int(f * 2**30)) for i, f in enumerate(free_gb)]


def test_pick_gpus():
    m = _machine([10, 70, 40, 70])
    assert pick_gpus("auto", m, set()) == [1]          # most free memory, lowest index on ties
    assert pick_gpus("auto", m, {1, 3}) == [2]
    assert pick_gpus(2, m, {1}) == [2, 3]
    assert pick_gpus(3, m, {0, 1}) is None             # waits
    assert pick_gpus([0, 1], m, {1}) is None           # a set waits for all of it
    assert pick_gpus([1, 0], m, {2}) == [0, 1]
    assert pick_gpus("auto", [], set()) == []          # the CPU


def test_requests_the_machine_cannot_meet_are_refused():
    m = _machine([70, 70])
    check_request("auto", m)
    check_request([0, 1], m)
    with pytest.raises(ConfigError, match="asks for 3 GPUs but this machine has 2 GPUs"):
        check_request(3, m)
    with pytest.raises(ConfigError, match="no GPU 4"):
        check_request([0, 4], m)
    with pytest.raises(ConfigError, match="has 0 GPUs"):
        check_request(2, [])
    with pytest.raises(ConfigError, match="resources.processes"):
        check_request([0, 1], m, processes=3)
    check_request("auto", [], processes=2)  # CPU processes over gloo


def test_launch_commands(tmp_path):
    argv, env = worker_command(tmp_path, nproc=1, gpus=[3])
    assert argv[1:4] == ["-m", "tunesmith.engine.worker", str(tmp_path)]
    assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    argv, env = worker_command(tmp_path, nproc=2, gpus=[0, 1], resume=True)
    assert argv[1:8] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--max-restarts", "0"]
    assert argv[-4:] == ["-m", "tunesmith.engine.worker", str(tmp_path), "--resume"]
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"
    _, env = worker_command(tmp_path, nproc=2, gpus=[])
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_cli_gpus_flag_reaches_the_config(fresh_home, capsys):
    # No GPUs here: asking for two is refused with the field named, exit status 2.
    demo = Path(__file__).resolve().parents[2] / "assets" / "demo_identity.yaml"
    assert main(["train", str(demo), "--gpus", "0,1", "--detach"]) == 2
    assert "resources.gpus" in capsys.readouterr().err
