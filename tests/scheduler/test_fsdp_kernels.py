"""FSDP2 (and DDP) with Tunesmith's kernels on: 2 CPU processes (torchrun, gloo) under the Triton interpreter.

A tiny random Llama (2 layers, the demo tokenizer) trains with QLoRA (NF4 bases: the LoRA-fused
projections dequantize the packed bytes FSDP gathers) and kernels=on, sharded over 2 processes x
batch 1 and in 1 process x batch 2 (accumulation 2 either way): the loss curve, the gradient norms
and the adapter are the same, and the run log says which kernels ran and what FSDP turned off. Two DDP processes with the
kernels give the same curve.
Every decoder layer is checkpointed (the plan on a machine without CUDA), so the kernels'
recompute runs under FSDP's pre-backward all-gather.

Takes ~65 s on 2 cores (the interpreter runs every kernel in Python).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.engine import events, jobs, launcher

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "assets" / "demo-model"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with random weights and the demo model's tokenizer: the interpreter's time
    grows with every weight the NF4 kernel dequantizes."""
    import transformers

    cfg = transformers.AutoConfig.from_pretrained(DEMO)
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 64, 128, 2
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 4, 2, 16
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copy(DEMO / name, out / name)
    return out


def _train(model: Path, name: str, *extra: str):
    from tunesmith.engine.config import RunConfig

    cfg = RunConfig().with_overrides([
        f"model.name_or_path={model}", "data.datasets=[identity]", "data.cutoff_len=32", "kernels='on'",
        "training.max_steps=2", "training.gradient_accumulation=2", "training.learning_rate=1e-3",
        "training.save_steps=100", f"output.run_name={name}", *extra])
    run = jobs.wait(jobs.submit(cfg), timeout=600)
    assert run.status == "completed", run.error
    return run


def _infos(run_dir: Path) -> list[str]:
    return [e["message"] for e in events.read_events(run_dir) if e["type"] == "info"]


def test_fsdp_and_ddp_with_kernels_train_like_one_process_with_kernels(tiny_model, fresh_home, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the workers run the Triton kernels on the CPU
    two = ["training.batch_size=1", "resources.processes=2"]
    sharded = _train(tiny_model, "fsdp", *two, "resources.strategy=fsdp")
    copies = _train(tiny_model, "ddp", *two, "resources.strategy=ddp")
    one = _train(tiny_model, "one", "training.batch_size=2")

    def curve(run, key):
        return [e[key] for e in events.read_events(run.run_dir) if e["type"] == "train"]

    for run in (sharded, copies):
        assert curve(run, "step") == [1, 2]
        assert curve(run, "loss") == pytest.approx(curve(one, "loss"), rel=1e-4)
        assert curve(run, "grad_norm") == pytest.approx(curve(one, "grad_norm"), rel=1e-4)
    assert any("kernels[on] llama: swapped" in m for m in _infos(copies.run_dir))
    mine = load_file(str(sharded.run_dir / "adapter" / "adapter_model.safetensors"))
    theirs = load_file(str(one.run_dir / "adapter" / "adapter_model.safetensors"))
    assert mine.keys() == theirs.keys() and mine
    for k in mine:
        assert (mine[k] - theirs[k]).norm() <= 1e-4 * theirs[k].norm(), k

    # The run log: the same kernels swapped in as in one process, and what FSDP turned off.
    said = _infos(sharded.run_dir)
    swapped = [m for m in said if m.startswith("kernels: kernels[on] llama: swapped")]
    assert swapped == [m for m in _infos(one.run_dir) if m.startswith("kernels: kernels[on]")]
    assert "mlp x2 (2 LoRA-fused)" in swapped[0] and "2 LoRA-fused QKV/O" in swapped[0]
    assert "fused_linear_ce x1" in swapped[0] and "rms_norm x5" in swapped[0]
    memory = [m for m in said if m.startswith("memory (")]
    assert len(memory) == 1 and "checkpoint 2/2 layers" in memory[0]
    assert "FSDP: no NF4 weight cache, no CUDA graphs" in memory[0]
    assert not any("stock path" in m for m in said)
    _wait_gone(sharded.run_dir)
    _wait_gone(copies.run_dir)


def _wait_gone(run_dir: Path, timeout: float = 60) -> None:
    """Rank 0 writes "completed" before the ranks tear the process group down."""
    t0 = time.time()
    while launcher.find_worker(run_dir) is not None:
        assert time.time() - t0 < timeout
        time.sleep(0.2)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_fsdp_with_kernels_on_two_gpus_trains_like_one_gpu(tiny_model, fresh_home, monkeypatch):
    """The same run on GPUs (NCCL, bf16 gathers, compiled kernels): the kernels apply on both, and
    the sharded curve follows one GPU's with the same global batch (bf16: looser)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    sharded = _train(tiny_model, "fsdp-gpu", "training.batch_size=1", "resources.gpus=[0,1]",
                     "resources.strategy=fsdp", "kernels=auto")
    one = _train(tiny_model, "one-gpu", "training.batch_size=2", "resources.gpus=[0]", "kernels=auto")

    def losses(run):
        return [e["loss"] for e in events.read_events(run.run_dir) if e["type"] == "train"]

    assert losses(sharded) == pytest.approx(losses(one), rel=2e-2)
    said = _infos(sharded.run_dir)
    assert any(m.startswith("kernels: kernels[auto] llama: swapped") and "LoRA-fused" in m for m in said)
    assert any(m.startswith("memory (") and "FSDP: no NF4 weight cache, no CUDA graphs" in m for m in said)
    _wait_gone(sharded.run_dir)
