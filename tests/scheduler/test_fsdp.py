"""FSDP2 on two CPU processes (torchrun, gloo), launched by the job manager.

The demo model (QLoRA: its NF4 weights are bitsandbytes Params4bit, sharded like any tensor) trains
the same sharded over 2 processes x batch 1 as in 1 process x batch 2 (accumulation 2, so 4 rows a
step either way; gradient checkpointing on; an evaluation at the end, where the ranks' rows need
different numbers of forward passes); only rank 0 writes; the adapter it saves, gathered from
both shards, equals the one-process adapter; a run resumed from its checkpoint (written whole, read
back into the shards) continues exactly where it was.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.engine import events, jobs, launcher
from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig

pytestmark = pytest.mark.slow

# One evaluation, after the last step: on the CPU, bitsandbytes repacks a one-process run's NF4 weights
# for inference at its first evaluation, which moves that run's later losses by ~1e-2.
BASE = ["training.max_steps=4", "training.save_steps=2", "training.gradient_accumulation=2",
        "training.gradient_checkpointing=true", "data.val_size=0.05", "training.eval_steps=4"]


def _cfg(name: str, *extra: str) -> RunConfig:
    return RunConfig().with_overrides(demo_overrides_list() + BASE + [f"output.run_name={name}", *extra])


def _train(run_dir: Path) -> list[dict]:
    return [e for e in events.read_events(run_dir) if e["type"] == "train"]


def _adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _same_adapter(a: Path, b: Path, tol: float) -> None:
    """Every tensor of the two adapters equal within `tol` of its norm (Adam makes the smallest
    gradients' updates sensitive to the order in which ranks sum them)."""
    mine, theirs = _adapter(a), _adapter(b)
    assert mine.keys() == theirs.keys() and len(mine) > 0
    for name in mine:
        assert (mine[name] - theirs[name]).norm() <= tol * theirs[name].norm(), name


def _wait_gone(run_dir: Path, timeout: float = 60) -> None:
    """Rank 0 writes "completed" before the ranks tear the process group down."""
    t0 = time.time()
    while launcher.find_worker(run_dir) is not None:
        assert time.time() - t0 < timeout
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """One FSDP run on 2 processes, 4 steps of 2 x 2 rows (checkpoints at steps 2 and 4)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESMITH_HOME", str(tmp_path_factory.mktemp("fsdp-home")))
        run = jobs.wait(jobs.submit(_cfg("fsdp", "training.batch_size=1", "resources.processes=2",
                                         "resources.strategy=fsdp")), timeout=600)
        assert run.status == "completed", run.error
        _wait_gone(run.run_dir)
        yield run


def test_fsdp_trains_like_one_process_with_the_same_global_batch(sharded, fresh_home):
    one = jobs.wait(jobs.submit(_cfg("one", "training.batch_size=2")), timeout=600)
    assert one.status == "completed", one.error

    assert [e["loss"] for e in _train(sharded.run_dir)] == pytest.approx([e["loss"] for e in _train(one.run_dir)],
                                                                          rel=2e-3)
    assert [e["grad_norm"] for e in _train(sharded.run_dir)] == pytest.approx(
        [e["grad_norm"] for e in _train(one.run_dir)], rel=2e-3)
    evals = [e["eval_loss"] for e in events.read_events(one.run_dir) if e["type"] == "eval"]
    assert len(evals) == 1
    assert [e["eval_loss"] for e in events.read_events(sharded.run_dir) if e["type"] == "eval"] \
        == pytest.approx(evals, rel=1e-2)  # the one-process run evaluates with bitsandbytes' packed CPU kernel
    _same_adapter(sharded.run_dir, one.run_dir, 2e-3)

    # Only rank 0 wrote; the run log says which strategy ran and why.
    evs = events.read_events(sharded.run_dir)
    assert [e["step"] for e in evs if e["type"] == "train"] == [1, 2, 3, 4]
    assert [e["status"] for e in evs if e["type"] == "status"].count("completed") == 1
    said = [e["message"] for e in evs if e["type"] == "info" and e["message"].startswith("multi-process")]
    assert said == ["multi-process: FSDP (decoder weights, adapter and optimizer sharded over the processes) over 2 "
                    "processes: resources.strategy is fsdp"]
    assert sorted(p.name for p in (sharded.run_dir / "checkpoints").iterdir() if not p.name.startswith(".")) \
        == ["checkpoint-2", "checkpoint-4"]
    log = (sharded.run_dir / "worker.log").read_text()
    assert "[rank 0] INFO tunesmith.trainer: fsdp: 4 decoder layers" in log
    assert "[rank 1] INFO tunesmith.trainer: fsdp: 4 decoder layers" in log


def test_a_resumed_fsdp_run_continues_exactly(sharded, tmp_path):
    """Start the worker (torchrun, 2 ranks) with --resume on a copy of the run that holds only its
    step-2 checkpoint: steps 3 and 4 and the final adapter come out as in the uninterrupted run."""
    run_dir = tmp_path / "resumed"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(sharded.run_dir / "config.yaml", run_dir / "config.yaml")
    shutil.copytree(sharded.run_dir / "checkpoints" / "checkpoint-2", run_dir / "checkpoints" / "checkpoint-2")
    proc = launcher.launch(run_dir, nproc=2, resume=True)
    assert proc.wait(timeout=300) == 0, (run_dir / "worker.log").read_text()[-3000:]

    whole = {e["step"]: e["loss"] for e in _train(sharded.run_dir)}
    resumed = {e["step"]: e["loss"] for e in _train(run_dir)}
    assert sorted(resumed) == [3, 4]
    assert resumed == pytest.approx({s: whole[s] for s in (3, 4)}, rel=1e-4)
    _same_adapter(run_dir, sharded.run_dir, 1e-4)


def test_fsdp_refuses_a_gather_dtype_that_would_cast_packed_nf4_bytes():
    """QLoRA under FSDP on GPUs: the packed NF4 bytes are stored as the compute dtype; gathering them
    in another dtype would convert them as numbers. Refused naming both fields."""
    import bitsandbytes as bnb

    from tunesmith.engine.errors import ConfigError
    from tunesmith.engine.training.fsdp import check_packed_dtype

    m = torch.nn.Module()
    m.w = bnb.nn.Params4bit(torch.zeros(8, 1, dtype=torch.bfloat16), requires_grad=False)
    check_packed_dtype(m, torch.bfloat16)  # the same dtype: fine
    check_packed_dtype(m, None)  # the CPU: no mixed precision
    with pytest.raises(ConfigError, match="quantization.compute_dtype .*training.precision"):
        check_packed_dtype(m, torch.float16)
