"""GRPO step time: TRL's GRPOTrainer (stock path) vs Tunesmith's grpo objective, in ONE invocation.

    python bench/bench_grpo.py --json bench_grpo.json         # 1B shape, both methods, one CUDA GPU
    python bench/bench_grpo.py --cpu --tiny                   # a smoke test of this script on the CPU

On a bare GPU machine of this workplace (no network; wheels carried in .whl/):
    . bench/gpu_env.sh && python3 bench/bench_grpo.py --json $OUT/grpo.json

Model: the random-weight Llama-3.2-1B shape of bench/bench_sft.py (`build_model_dir`, the demo
model's tokenizer), loaded in 4-bit NF4 with double quant, LoRA r16 alpha16 on all seven
projections. Prompts: the first questions of the bundled data/arithmetic.json (chat template,
generation prompt), --prompts per step, each sampled --group times. Reward: one plain Python
function (the completion's last number equals the row's answer), written to a file that both
paths call: Tunesmith as a `python` reward, TRL as a reward function over the same call.

Generation length is fixed: min new tokens = max new tokens = --completion, so random weights
never stop early and both paths generate and train the same number of tokens per step.

  trl-stock   GRPOTrainer(model = 4-bit base + prepare_model_for_kbit_training, peft_config = the
              LoRA), HF generate (no vLLM), gradient checkpointing, bf16,
              per_device_train_batch_size = prompts x group, num_generations = group, one
              optimizer step per generation, generation_kwargs min_new_tokens
  tunesmith   RunConfig(objective=grpo, method=qlora, batch_size = prompts, same LoRA,
              min_completion_length = max_completion_length), run by engine.trainer.Recipe (the
              worker's trainer): generation with the policy (HF generate), the training forward
              and backward with Tunesmith's kernels and memory plan

Both: beta 0 (TRL's default: no reference forward), loss_type dapo (TRL's default), epsilon 0.2,
temperature 1, top_p 1, AdamW, lr 1e-5, no eval, no checkpoints. Each method runs in its own
subprocess. The first --warmup steps are not timed.

Reported per method: seconds per optimizer step (generation + scoring + training),
generated tokens/s (completion tokens of the timed steps / their time), trained tokens/s
(prompt + completion tokens the training forward saw, from each path's own count / the same
time), mean completion length, peak GPU memory (torch.cuda.max_memory_allocated after a reset
at the start of training, weights included). JSON + a markdown table.

With --cpu --tiny: the demo model (assets/demo-model), fp32 LoRA, no bitsandbytes, a few short
steps: the numbers mean nothing beyond "the script runs end to end".

What it does not know: real weights and text (random weights: rewards stay ~0, the losses only
show both paths ran), vLLM generation (neither path uses it here), several GPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_sft import SHAPES, TARGETS, build_model_dir, versions  # noqa: E402 - the shared 1B setup

METHODS = ["trl-stock", "tunesmith"]
SEED, LR = 42, 1e-5
GiB = 1024**3

REWARD_SOURCE = '''"""Benchmark reward: 1.0 when the completion's last number equals the row's answer."""
import re


def reward(prompt, completion, **row):
    found = re.findall(r"-?\\d+", completion)
    return 1.0 if found and found[-1] == str(row.get("answer", "")).strip() else 0.0
'''


# --- shared setup (parent) ------------------------------------------------------------------


def write_inputs(work: Path, n_prompts: int) -> tuple[Path, Path]:
    """prompts.jsonl (question, answer) from the bundled arithmetic set, and reward.py."""
    rows = json.loads((ROOT / "data" / "arithmetic.json").read_text(encoding="utf-8"))[:n_prompts]
    if len(rows) < n_prompts:
        raise SystemExit(f"data/arithmetic.json has {len(rows)} rows; lower --prompts or --steps")
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": r["question"], "answer": str(r["answer"])}) + "\n"
                            for r in rows), encoding="utf-8")
    reward = work / "reward.py"
    reward.write_text(REWARD_SOURCE, encoding="utf-8")
    return data, reward


# --- the two paths (child process) -----------------------------------------------------------


def _load_reward(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_reward", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.reward


def run_trl(a, model_dir: Path, data: Path, reward_file: Path) -> dict:
    """TRL GRPOTrainer as its docs show it for QLoRA; step end times from a callback."""
    import dataclasses

    import peft
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if a.cpu:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    else:
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=bnb, dtype=torch.bfloat16,
                                                     device_map={"": 0}, attn_implementation="sdpa")
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                     gradient_checkpointing_kwargs={"use_reentrant": False})
    rows = [json.loads(x) for x in data.read_text(encoding="utf-8").splitlines() if x.strip()]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}], "answer": r["answer"]}
                            for r in rows])
    user_reward = _load_reward(reward_file)

    def arithmetic_reward(prompts, completions, answer, **kw):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        qs = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
        return [user_reward(q, t, answer=ans) for q, t, ans in zip(qs, texts, answer)]

    times: list[float] = []
    logged: list[dict] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                logged.append({**{k: v for k, v in logs.items() if isinstance(v, (int, float))},
                             "step": state.global_step})

    want = dict(
        output_dir=tempfile.mkdtemp(prefix="bench-grpo-trl-"), per_device_train_batch_size=a.prompts * a.group,
        gradient_accumulation_steps=1, steps_per_generation=1, num_generations=a.group,
        max_completion_length=a.completion, generation_kwargs={"min_new_tokens": a.completion},
        temperature=1.0, top_p=1.0, top_k=0, beta=0.0, loss_type="dapo", epsilon=0.2, num_iterations=1,
        max_steps=a.warmup + a.steps, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED, data_seed=SEED,
        bf16=not a.cpu, use_cpu=a.cpu, gradient_checkpointing=not a.cpu, use_vllm=False, log_completions=False,
        dataloader_num_workers=0, shuffle_dataset=True,
    )
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    skipped = sorted(k for k in want if k not in known)  # fields a TRL version lacks (1.15 and 1.16 differ)
    cfg = GRPOConfig(**{k: v for k, v in want.items() if k in known})
    lora = peft.LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                           task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[arithmetic_reward], args=cfg, train_dataset=ds,
                          processing_class=tok, peft_config=lora, callbacks=[Clock()])
    trainer.train()
    by_step = {lg["step"]: lg for lg in logged if "loss" in lg or "reward" in lg}
    timed = [by_step[s] for s in range(a.warmup + 1, a.warmup + a.steps + 1) if s in by_step]
    seconds = times[a.warmup + a.steps] - times[a.warmup]
    # num_tokens: TRL's running count of prompt + completion tokens (non-padding) the steps trained on
    tok_before = by_step.get(a.warmup, {}).get("num_tokens", 0.0) if a.warmup else 0.0
    tok_after = by_step[a.warmup + a.steps].get("num_tokens")
    mean_len = sum(lg.get("completions/mean_length", 0.0) for lg in timed) / max(len(timed), 1)
    return {"seconds": seconds, "completion_tokens": mean_len * a.prompts * a.group * a.steps,
            "trained_tokens": (tok_after - tok_before) if tok_after is not None else None,
            "mean_completion_length": mean_len, "losses": [lg.get("loss") for lg in by_step.values()],
            "rewards": [lg.get("reward") for lg in by_step.values()],
            "peak_gib": torch.cuda.max_memory_allocated() / GiB if torch.cuda.is_available() else None,
            "skipped_settings": skipped}


def run_tunesmith(a, model_dir: Path, data: Path, reward_file: Path) -> dict:
    """The product path: RunConfig(objective=grpo) trained by engine.trainer.Recipe."""
    import torch

    from tunesmith.engine.config import RunConfig
    from tunesmith.engine.events import EventWriter, read_events
    from tunesmith.engine.trainer import Recipe

    cfg = RunConfig.model_validate({
        "model": {"name_or_path": str(model_dir)}, "method": "lora" if a.cpu else "qlora",
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "target_modules": TARGETS},
        "objective": "grpo",
        "objective_settings": {
            "group_size": a.group, "max_completion_length": a.completion, "min_completion_length": a.completion,
            "temperature": 1.0, "top_p": 1.0, "beta": 0.0, "loss_type": "dapo", "epsilon": 0.2,
            "rewards": [{"name": "python", "path": str(reward_file)}]},
        "data": {"datasets": [str(data)], "cutoff_len": 64 + a.completion},
        "training": {"batch_size": a.prompts, "gradient_accumulation": 1, "max_steps": a.warmup + a.steps,
                     "learning_rate": LR, "lr_scheduler": "constant", "warmup_ratio": 0.0, "logging_steps": 1,
                     "save_steps": 10**6, "seed": SEED, "precision": "fp32" if a.cpu else "auto"},
        "kernels": "off" if a.cpu else "auto",
        "output": {"run_name": "bench-grpo"},
    })
    run_dir = Path(tempfile.mkdtemp(prefix="bench-grpo-run-"))
    recipe = Recipe(cfg, run_dir, EventWriter(run_dir), lambda: False)
    recipe.setup()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    recipe.train()
    evs = read_events(run_dir)
    train = {e["step"]: e for e in evs if e["type"] == "train"}
    first, last = train.get(a.warmup), train[a.warmup + a.steps]
    timed = [train[s] for s in range(a.warmup + 1, a.warmup + a.steps + 1)]
    seconds = last["elapsed_s"] - (first["elapsed_s"] if first else 0.0)
    mean_len = sum(e["completion_length"] for e in timed) / len(timed)
    out = {"seconds": seconds, "completion_tokens": mean_len * a.prompts * a.group * a.steps,
           "trained_tokens": last["tokens_seen"] - (first["tokens_seen"] if first else 0),
           "mean_completion_length": mean_len, "losses": [e["loss"] for e in train.values()],
           "rewards": [e["reward"] for e in train.values()],
           "peak_gib": torch.cuda.max_memory_allocated() / GiB if torch.cuda.is_available() else None,
           "notes": [e["message"] for e in evs if e["type"] == "info"]}
    from tunesmith.engine.objectives.grpo import vllm_unused_reason

    if why := vllm_unused_reason("cuda" if torch.cuda.is_available() else "cpu"):
        out["notes"].append(f"vLLM not used: {why}")
    recipe.cleanup()
    return out


def child(a) -> None:
    """One method; its result is the last line of stdout, as JSON."""
    if a.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    torch.manual_seed(SEED)
    work = Path(a.work)
    try:
        fn = run_trl if a.child == "trl-stock" else run_tunesmith
        res = fn(a, Path(a.model_dir), work / "prompts.jsonl", work / "reward.py")
        s = a.steps
        res.update(status="ok", step_s=round(res["seconds"] / s, 3),
                   generated_tokens_per_s=round(res["completion_tokens"] / res["seconds"], 1),
                   trained_tokens_per_s=(round(res["trained_tokens"] / res["seconds"], 1)
                                         if res.get("trained_tokens") else None))
    except Exception as e:  # noqa: BLE001 - the parent records why a method could not run
        traceback.print_exc()
        res = {"status": "OOM" if "OutOfMemory" in type(e).__name__ else f"error: {type(e).__name__}: {str(e)[:600]}"}
    print("RESULT " + json.dumps(res), flush=True)


def run_method(method: str, a, model_dir: Path, work: Path, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--model-dir", str(model_dir),
           "--work", str(work), "--prompts", str(a.prompts), "--group", str(a.group),
           "--completion", str(a.completion), "--steps", str(a.steps), "--warmup", str(a.warmup)]
    cmd += ["--cpu"] if a.cpu else []
    t = time.time()
    env = dict(os.environ, TUNESMITH_HOME=str(work / f"home-{method}"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(timeout, 1), cwd=str(work), env=env)
        out = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        tail = (e.stdout or b"")[-1500:]
        return {"status": f"timed out after {timeout:.0f} s", "tail": tail.decode(errors="replace")
                if isinstance(tail, bytes) else tail}
    line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("RESULT ")), None)
    res = json.loads(line[7:]) if line else {"status": f"error: no result (exit {p.returncode})"}
    if res.get("status") != "ok":
        res["tail"] = out[-3000:]
    res["wall_s"] = round(time.time() - t, 1)
    return res


# --- report -------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    lines = ["| shape | method | s / step | vs trl-stock | generated tok/s | trained tok/s | completion len | "
             "peak GiB | status |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    base = next((r for r in rows if r["method"] == "trl-stock" and r.get("status") == "ok"), None)
    for r in rows:
        ok = r.get("status") == "ok"
        speed = f"{base['step_s'] / r['step_s']:.2f}x" if ok and base else "-"
        peak = f"{r['peak_gib']:.2f}" if r.get("peak_gib") is not None else "-"
        lines.append(
            f"| {r['shape']} | {r['method']} | {r.get('step_s', '-')} | {speed} | "
            f"{r.get('generated_tokens_per_s', '-')} | {r.get('trained_tokens_per_s') or '-'} | "
            f"{round(r['mean_completion_length'], 1) if ok else '-'} | {peak} | {str(r.get('status'))[:120]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="1b", choices=sorted(SHAPES), help="model shape (bench_sft.SHAPES)")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of: " + ", ".join(METHODS))
    ap.add_argument("--prompts", type=int, default=4, help="prompts per optimizer step")
    ap.add_argument("--group", type=int, default=8, help="completions sampled per prompt (group size)")
    ap.add_argument("--completion", type=int, default=128, help="tokens per completion (min = max)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps per method")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--budget", type=float, default=225.0, help="seconds for the whole invocation (H200: < 4 min)")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU: demo model, fp32 LoRA (a smoke test)")
    ap.add_argument("--tiny", action="store_true", help="--prompts 2 --group 2 --completion 8 --steps 2 --warmup 1")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--json", default="bench_grpo.json", help="where to write the results")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a)
        return 0
    if a.tiny:
        a.prompts, a.group, a.completion, a.steps, a.warmup = 2, 2, 8, 2, 1
    import torch

    if not a.cpu and not torch.cuda.is_available():
        print("bench_grpo needs a CUDA GPU (or --cpu for a smoke test)", file=sys.stderr)
        return 2
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    if bad := [m for m in methods if m not in METHODS]:
        ap.error(f"unknown method(s): {bad}")
    t_all = time.time()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    work.mkdir(parents=True, exist_ok=True)
    write_inputs(work, a.prompts * (a.warmup + a.steps))
    if a.cpu:
        shape, model_dir = "demo (cpu)", ROOT / "assets" / "demo-model"
    else:
        shape = a.shape
        t = time.time()
        model_dir = build_model_dir(a.shape, work / f"model-{a.shape}")
        print(f"[{shape}] model folder in {time.time() - t:.0f} s", flush=True)
    rows: list[dict] = []
    out = {"versions": versions(), "settings": dict(shape=shape, prompts_per_step=a.prompts, group=a.group,
                                                    completion_tokens=a.completion, steps=a.steps, warmup=a.warmup,
                                                    lora="r16 a16 all 7", quant="none (cpu)" if a.cpu else "nf4 dq",
                                                    beta=0.0, loss_type="dapo", lr=LR), "rows": rows}
    for i, method in enumerate(methods):
        # the budget left is shared among the methods still to run
        left = a.budget - (time.time() - t_all)
        r = {"shape": shape, "method": method, **run_method(method, a, model_dir, work, left / (len(methods) - i))}
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("tail", "losses", "rewards", "notes")}), flush=True)
        if r.get("status") != "ok":
            print(r.get("tail", "")[-2500:], flush=True)
        Path(a.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    out["wall_s"] = round(time.time() - t_all, 1)
    Path(a.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(json.dumps(out["versions"]))
    print()
    print(table(rows))
    for r in rows:
        for n in r.get("notes") or []:
            print(f"- {r['method']}: {n}")
    print(f"\nwrote {a.json} ({out['wall_s']:.0f} s)")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
