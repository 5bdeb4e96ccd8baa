"""DPO training speed: TRL's DPOTrainer (stock transformers + PEFT + bitsandbytes) vs `tunesmith train`
with objective dpo (the product path: job manager -> worker -> engine.trainer), in ONE invocation.

    python bench/bench_dpo.py --json bench_dpo.json                  # 1B and 8B shapes, QLoRA, on a GPU
    python bench/bench_dpo.py --shapes 1b --steps 10                  # one shape, more timed steps
    python bench/bench_dpo.py --cpu --tiny                            # a smoke test of this script on the CPU

On a bare GPU machine of this workplace (no network; wheels carried in .whl/):
    . bench/gpu_env.sh && python3 bench/bench_dpo.py --json $OUT/bench_dpo.json

Models: bench_sft.py's random-weight Llama-3.2-1B / Llama-3.1-8B shapes with the demo model's
tokenizer (`build_model_dir`), kept under --work (default /tmp/bench_sft, the folder bench_sft.py
uses, so a machine that ran it builds nothing). Data: --pairs-per-step x (warmup + steps)
preference pairs, each a user prompt of --prompt tokens and chosen / rejected replies of --reply
tokens, made of words that are one token each, so every pair has the same length under the
chat template and both paths process the same tokens per step.

  trl-stock   DPOTrainer(model = 4-bit NF4 double-quant base from from_pretrained +
              prepare_model_for_kbit_training (gradient checkpointing, non-reentrant),
              peft_config = LoRA r16/a32 on all seven projections, bf16, reference = the adapter
              switched off, TRL's default for PEFT models); --pairs-per-step pairs per step
  tunesmith   `tunesmith train` on a YAML with objective dpo, method qlora, the same LoRA,
              batch_size --pairs-per-step, kernels auto, memory_mode auto: Tunesmith's kernels
              and memory plan on the policy's forward and backward and on the reference forward
              (the adapter switched off), padding-free passes, log-probs without full logits

Each method runs in a process of its own. Both: beta 0.1, sigmoid loss, AdamW (torch), lr 5e-6,
no eval, no checkpoints, one log line per step. Reported: tokens/s over the timed steps (the
chosen + rejected tokens of the step's pairs as the chat template renders them; the same count
for both paths), the ratio to trl-stock, peak allocated GiB during training, first/last loss,
and the wall time of each method (loading included). The JSON is rewritten after every method.
With --cpu: fp32 LoRA on a 16-bit base (no bitsandbytes), the tiny shape; the numbers mean
nothing beyond "the script runs".

What it does not know: real text (random weights and words: the losses only show both paths
train), several GPUs, flash-attention (both use PyTorch SDPA).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sft import SHAPES, TARGETS, WORDS, build_model_dir, versions  # noqa: E402

METHODS = ["trl-stock", "tunesmith"]
BETA, LR, SEED = 0.1, 5e-6, 0
GiB = 1024**3


# --- data -----------------------------------------------------------------------------------


def one_token_words(tok) -> list[str]:
    """Words of bench_sft's list that the tokenizer keeps as one token after a space."""
    out = [w for w in dict.fromkeys(WORDS) if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    if len(out) < 8:
        raise SystemExit(f"the tokenizer keeps only {len(out)} of the bench words as one token")
    return out


def write_pairs(path: Path, n: int, prompt: int, reply: int, model_dir: Path) -> list[int]:
    """n pairs as JSON (prompt / chosen / rejected text); returns chosen + rejected tokens per pair
    as the chat template renders them (what both paths put through the model)."""
    import random

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    words = one_token_words(tok)
    rng = random.Random(1234)

    def text(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    rows = [{"prompt": text(prompt), "chosen": text(reply), "rejected": text(reply)} for _ in range(n)]
    path.write_text(json.dumps(rows), encoding="utf-8")
    out = []
    for r in rows:
        p = [{"role": "user", "content": r["prompt"]}]
        out.append(sum(len(tok.apply_chat_template(p + [{"role": "assistant", "content": r[side]}], tokenize=True,
                                                   return_dict=True)["input_ids"]) for side in ("chosen", "rejected")))
    return out


# --- trl-stock (child process) --------------------------------------------------------------


def run_trl(model_dir: Path, data: Path, args, cpu: bool) -> dict:
    """TRL DPOTrainer + PEFT (+ bitsandbytes NF4 on GPUs): step end times, losses, peak memory."""
    import peft
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if cpu:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    else:
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.uint8)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.bfloat16, quantization_config=q,
                                                     device_map={"": 0}, attn_implementation="sdpa")
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                     gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    rows = json.loads(data.read_text(encoding="utf-8"))
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                             "chosen": [{"role": "assistant", "content": r["chosen"]}],
                             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()

        def on_step_end(self, a, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    cfg = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.pairs_per_step,
                    gradient_accumulation_steps=1, max_steps=args.warmup + args.steps, learning_rate=LR,
                    beta=BETA, loss_type=["sigmoid"], logging_steps=1, save_strategy="no", report_to=[],
                    bf16=not cpu, use_cpu=cpu, gradient_checkpointing=not cpu, max_length=None,
                    optim="adamw_torch", dataloader_num_workers=0, seed=SEED, disable_tqdm=True)
    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                           task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora,
                         callbacks=[Clock()])
    trainer.train()
    t = times
    elapsed = t[-1] - t[args.warmup - 1]
    out = {"elapsed": elapsed, "losses": losses,
           "step_times": [b - a for a, b in zip(t[args.warmup - 1:], t[args.warmup:])]}
    if torch.cuda.is_available():
        out["peak_gib"] = torch.cuda.max_memory_allocated() / GiB
    return out


def child(args) -> None:
    """Run trl-stock and print its result as the last line of JSON."""
    try:
        res = run_trl(Path(args.model_dir), Path(args.data), args, args.cpu)
    except Exception as e:  # noqa: BLE001 - the parent records why the method could not run
        traceback.print_exc()
        res = {"error": f"{type(e).__name__}: {str(e)[:2000]}"}
    print("RESULT " + json.dumps(res), flush=True)


# --- tunesmith (`tunesmith train`) ----------------------------------------------------------


def run_tunesmith(model_dir: Path, data: Path, work: Path, args, cpu: bool) -> dict:
    """`tunesmith train CONFIG.yaml` (job manager -> worker -> engine.trainer.Recipe, objective dpo)."""
    import yaml

    cfg = {
        "model": {"name_or_path": str(model_dir)}, "objective": "dpo",
        "objective_settings": {"beta": BETA, "loss_type": "sigmoid"},
        "method": "lora" if cpu else "qlora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": TARGETS},
        "data": {"datasets": [str(data)], "cutoff_len": args.prompt + args.reply + 64},
        "training": {"batch_size": args.pairs_per_step, "gradient_accumulation": 1,
                     "max_steps": args.warmup + args.steps, "learning_rate": LR, "optimizer": "adamw_torch",
                     "logging_steps": 1, "save_steps": 10**6, "warmup_ratio": 0.0, "seed": SEED,
                     "precision": "fp32" if cpu else "auto", "memory_mode": "auto"},
        "kernels": "off" if cpu else "auto",
        "output": {"run_name": "bench-dpo"},
    }
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    path = home / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {**os.environ, "TUNESMITH_HOME": str(home)}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    p = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "train", str(path)], env=env,
                       capture_output=True, text=True, cwd=str(work), timeout=args.timeout)
    runs = sorted((home / "runs").glob("*/events.jsonl"))
    if p.returncode != 0 or not runs:
        logs = "".join(f.read_text(errors="replace")[-3000:] for f in (home / "runs").glob("*/worker.log")) \
            if (home / "runs").exists() else ""
        raise RuntimeError(f"tunesmith train failed ({p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]} {logs}")
    evs = [json.loads(x) for x in runs[-1].read_text().splitlines() if x.strip()]
    train = {e["step"]: e for e in evs if e["type"] == "train"}
    last, first = train[args.warmup + args.steps], train[args.warmup]
    ends = [train[s]["elapsed_s"] for s in range(args.warmup, args.warmup + args.steps + 1)]
    return {"elapsed": last["elapsed_s"] - first["elapsed_s"], "losses": [train[s]["loss"] for s in sorted(train)],
            "step_times": [b - a for a, b in zip(ends, ends[1:])],
            "peak_gib": max((e["peak_mem_gb"] for e in train.values()), default=None) if not cpu else None,
            "tokens_seen": last["tokens_seen"], "notes": [e["message"] for e in evs if e["type"] == "info"]}


# --- one method, the report -----------------------------------------------------------------


def measure(method: str, model_dir: Path, data: Path, work: Path, step_tokens: float, args, cpu: bool) -> dict:
    t = time.time()
    try:
        if method == "tunesmith":
            r = run_tunesmith(model_dir, data, work, args, cpu)
        else:
            cmd = [sys.executable, __file__, "--child", method, "--model-dir", str(model_dir), "--data", str(data),
                   "--pairs-per-step", str(args.pairs_per_step), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)] + (["--cpu"] if cpu else [])
            env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu else {})}
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=str(work), env=env)
            line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("RESULT ")), None)
            r = json.loads(line[7:]) if line else {"error": f"no result (exit {p.returncode})"}
            if "error" in r:
                raise RuntimeError(r["error"] + "\n" + (p.stdout + p.stderr)[-2500:])
    except Exception as e:  # noqa: BLE001 - one broken path must not lose the other's numbers
        msg = f"{type(e).__name__}: {e}"
        print(msg[-3000:], file=sys.stderr, flush=True)
        return {"method": method, "status": "error: " + msg.splitlines()[0][:300], "wall_s": round(time.time() - t, 1)}
    row = {"method": method, "status": "ok", "tokens_per_s": round(args.steps * step_tokens / r["elapsed"], 1),
           "step_s": round(r["elapsed"] / args.steps, 3), "first_loss": r["losses"][0], "last_loss": r["losses"][-1],
           "losses": r["losses"], "wall_s": round(time.time() - t, 1)}
    if r.get("step_times"):  # the spread shows whether the window's mean is typical
        st = sorted(r["step_times"])
        row["median_step_s"] = round(st[len(st) // 2], 4)
        row["median_tokens_per_s"] = round(step_tokens / st[len(st) // 2], 1)
        row["step_times"] = [round(x, 4) for x in r["step_times"]]
    for k in ("peak_gib", "tokens_seen", "notes"):
        if r.get(k) is not None:
            row[k] = round(r[k], 2) if k == "peak_gib" else r[k]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| shape | method | tokens/s | vs trl-stock | median step tokens/s | vs trl-stock | step s | peak GiB | "
             "first loss | last loss | wall s | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    ok = [r for r in rows if r["method"] == "trl-stock" and r["status"] == "ok"]
    base = {r["shape"]: r.get("tokens_per_s") for r in ok}
    base_med = {r["shape"]: r.get("median_tokens_per_s") for r in ok}
    for r in rows:
        tps, med = r.get("tokens_per_s"), r.get("median_tokens_per_s")
        ratio = f"{tps / base[r['shape']]:.2f}x" if tps and base.get(r["shape"]) else "-"
        mratio = f"{med / base_med[r['shape']]:.2f}x" if med and base_med.get(r["shape"]) else "-"
        fl, ll = r.get("first_loss"), r.get("last_loss")
        lines.append(f"| {r['shape']} | {r['method']} | {tps or '-'} | {ratio} | {med or '-'} | {mratio} | {r.get('step_s', '-')} | "
                     f"{r.get('peak_gib', '-')} | {round(fl, 4) if fl is not None else '-'} | "
                     f"{round(ll, 4) if ll is not None else '-'} | {r.get('wall_s')} | {r['status']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="1b,8b", help="comma list of: 1b, 8b, tiny")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of: " + ", ".join(METHODS))
    ap.add_argument("--pairs-per-step", type=int, default=4, help="preference pairs per optimizer step")
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens per pair")
    ap.add_argument("--reply", type=int, default=256, help="tokens of each reply")
    # 1b,8b on one H200 in about 4-5 min with the model folders to build: most of it is building 8B and
    # loading it twice; 8B stock steps take ~5-6 s (4 pairs of 2 x ~525 tokens, plus the reference pass)
    ap.add_argument("--steps", type=int, default=12, help="timed optimizer steps per method")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (Triton compiles, allocator warm-up)")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (fp32 LoRA, no bitsandbytes): a smoke test")
    ap.add_argument("--tiny", action="store_true", help="--shapes tiny --prompt 24 --reply 16 --steps 2 --warmup 1")
    ap.add_argument("--work", default="/tmp/bench_sft", help="model folders (shared with bench_sft.py) and run homes")
    ap.add_argument("--json", default="bench_dpo.json", help="where to write the results")
    ap.add_argument("--timeout", type=int, default=420, help="seconds per method")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.tiny:
        args.shapes, args.prompt, args.reply, args.steps, args.warmup = "tiny", 24, 16, 2, 1
    import torch

    cpu = args.cpu
    if not cpu and not torch.cuda.is_available():
        print("bench_dpo needs a CUDA GPU (or --cpu for a smoke test)", file=sys.stderr)
        return 2
    if args.warmup < 1:
        ap.error("--warmup must be at least 1 (the timed window starts at the end of a step)")
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [s for s in shapes if s not in SHAPES] + [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown shape/method: {bad}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    out = {"versions": versions(), "args": vars(args), "rows": rows}
    t_all = time.perf_counter()
    for shape in shapes:
        t = time.time()
        model_dir = build_model_dir(shape, work / f"model-{shape}")
        print(f"[{shape}] model folder ready in {time.time() - t:.0f} s ({model_dir})", flush=True)
        data = work / f"dpo-pairs-{shape}-{args.prompt}-{args.reply}.json"
        per_pair = write_pairs(data, args.pairs_per_step * (args.warmup + args.steps), args.prompt, args.reply,
                               model_dir)
        step_tokens = sum(per_pair) / len(per_pair) * args.pairs_per_step
        for method in methods:
            row = {"shape": shape, **measure(method, model_dir, data, work, step_tokens, args, cpu)}
            row["step_tokens"] = step_tokens
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "notes")}), flush=True)
            out["total_s"] = round(time.perf_counter() - t_all, 1)
            Path(args.json).write_text(json.dumps(out, indent=1))
    print()
    print(table(rows))
    for r in rows:
        for n in r.get("notes") or []:
            print(f"- {r['shape']} {r['method']}: {n}")
    print(f"wrote {args.json} ({time.perf_counter() - t_all:.0f} s)")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
