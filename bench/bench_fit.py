"""The fit check's peak-memory estimate (engine/fit.py) against measured training peaks.

    python bench/bench_fit.py --json fit.json                 # 1B and 8B shapes on the GPU (< 5 min on an H200)
    python bench/bench_fit.py --cpu --tiny --json fit.json    # smoke test of this script on the CPU

On a bare GPU machine of this workplace (no network; wheels carried in .whl/):
    . bench/gpu_env.sh && python3 bench/bench_fit.py --json $OUT/fit.json

For each shape (random-weight Llama-3.2-1B / Llama-3.1-8B, the model folders bench_sft.py builds, shared
through --work), each of QLoRA auto, QLoRA memory and LoRA auto, and two batch sizes (1 and 4 rows of
2048 tokens, gradient accumulation 1): the estimate is what the studio's fit line and the submit-time
refusal compute (engine.fit.check on this GPU, with the free memory it has right before the run); the
measured peak is what the trainer records in events.jsonl (peak_mem_gb: torch.cuda.max_memory_allocated
after a reset at training start, weights included), minus what the process already held before the run
started (nothing, unless an earlier run in the same process leaked). Runs go through the product path:
engine.worker.run on a run folder, exactly what the job manager starts for `tunesmith train`, a few
optimizer steps each (--steps). One process per shape runs its six configurations one after the other,
so imports and Triton's compile happen once. Every row of the generated chat dataset is longer than the
cutoff, so every pass holds batch x 2048 tokens. Other settings are RunConfig's defaults (LoRA r=16 on
all linear layers, adamw_torch, kernels auto).

--cpu --tiny: the demo model (assets/demo-model, 4 layers, hidden 256) with LoRA, cutoff 128, on the
CPU; the "measured" column is then the worker's peak resident memory, which the estimate does not model:
it proves the script runs end to end, not the estimate.

Prints a markdown table ready to paste into bench/RESULTS.md and, with --json, writes every run's details.

What it does not know: several GPUs (FSDP/DDP peaks are per GPU and need a multi-GPU machine), real
weights (memory does not depend on them), and runs longer than a few steps (peaks come at step 1).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sft import SHAPES, WORDS, build_model_dir, versions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024**3
CONFIGS = [("qlora", "auto"), ("qlora", "memory"), ("lora", "auto")]
CPU_CONFIGS = [("lora", "auto")]


def make_long_rows(n: int, tokenizer, tokens: int, seed: int = 0) -> list[dict]:
    """Chat rows of ~1.4 x `tokens` tokens each (a short question, a long reply): all cut at the cutoff."""
    g = random.Random(seed)
    per_word = len(tokenizer(" ".join(WORDS * 4))["input_ids"]) / (len(WORDS) * 4)
    words = int(1.4 * tokens / per_word) + 8
    rows = []
    for _ in range(n):
        text = [g.choice(WORDS) for _ in range(words)]
        rows.append({"messages": [{"role": "user", "content": " ".join(text[:12]) + "?"},
                                  {"role": "assistant", "content": " ".join(text[12:]) + "."}]})
    return rows


def run_config(model_dir: Path, data: Path, runs: Path, method: str, mode: str, batch: int, cutoff: int,
               steps: int, cpu: bool) -> dict:
    """One training run through engine.worker.run (in this process); the estimate for it, the peak it reached."""
    import torch

    from tunesmith.engine import fit, worker
    from tunesmith.engine.config import RunConfig
    from tunesmith.engine.events import read_events

    name = f"{model_dir.name}-{method}-{mode}-b{batch}"
    cfg = RunConfig().with_overrides([
        f"model.name_or_path={model_dir}", f"method={method}", f"data.datasets=[{data}]", f"data.cutoff_len={cutoff}",
        f"training.batch_size={batch}", "training.gradient_accumulation=1", f"training.max_steps={steps}",
        f"training.memory_mode={mode}", "training.logging_steps=1", "training.save_steps=100000",
        f"output.run_name={name}",
    ])
    gc.collect()
    before = 0
    if cpu:
        shape, _ = fit.model_shape(cfg)
        est = fit.estimate(shape, fit.Settings.from_run(cfg, kernels_active=False))
        gpu_line = "cpu"
    else:
        from tunesmith.engine.gpus import GpuInfo

        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated()
        free, total = torch.cuda.mem_get_info()
        gpu = GpuInfo(0, torch.cuda.get_device_name(0), total, free)
        est = fit.check(cfg, [gpu])[0].estimate
        gpu_line = gpu.label()
    run_dir = runs / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    t = time.time()
    rc = worker.run(run_dir)
    evs = read_events(run_dir)
    train = [e for e in evs if e["type"] == "train"]
    status = [e for e in evs if e["type"] == "status"][-1]
    if rc != 0 or not train:
        raise RuntimeError(f"{name}: the run ended {status.get('status')}: {status.get('message')}")
    peak = max(e["peak_mem_gb"] for e in train) * GiB - before  # peak_mem_gb is in GiB (2**30)
    return {
        "name": name, "method": method, "memory_mode": mode, "batch": batch, "cutoff": cutoff,
        "steps": train[-1]["step"], "seconds": round(time.time() - t, 1), "gpu": gpu_line,
        "estimate_gib": round(est.peak_bytes / GiB, 3), "estimate_parts": est.parts(), "estimate_plan": est.plan,
        "measured_gib": round(peak / GiB, 3), "held_before_gib": round(before / GiB, 3),
        "reserved_gib": max((e.get("peak_reserved_gb", 0) for e in train), default=0),
        "error_pct": round(100 * (est.peak_bytes - peak) / peak, 1) if peak > 0 else None,
        "trainer_plan": [e["message"] for e in evs if e["type"] == "info"
                         and e["message"].split(":")[0] in ("memory", "batching", "kernels")],
        "losses": [e["loss"] for e in train],
    }


def child(args) -> None:
    """Every configuration of one shape, one after the other in this process; one RESULT line each."""
    work = Path(args.work)
    os.environ["TUNESMITH_HOME"] = str(work / "fit-home")
    configs = CPU_CONFIGS if args.cpu else CONFIGS
    for method, mode in configs:
        for batch in args.batches:
            if time.time() > args.deadline:
                print("RESULT " + json.dumps({"method": method, "memory_mode": mode, "batch": batch, "cutoff": args.cutoff,
                                              "error": "skipped: out of the --budget time"}), flush=True)
                continue
            try:
                res = run_config(Path(args.model_dir), work / args.data, work / "fit-home" / "bench-runs", method, mode,
                                 batch, args.cutoff, args.steps, args.cpu)
            except Exception as e:  # noqa: BLE001 - the parent records why a configuration could not run
                traceback.print_exc()
                res = {"method": method, "memory_mode": mode, "batch": batch, "cutoff": args.cutoff,
                       "error": f"{type(e).__name__}: {e}"[:1500]}
            print("RESULT " + json.dumps(res), flush=True)


def table(results: list[dict], cpu: bool) -> str:
    measured = "measured GiB (CPU: peak RSS, not comparable)" if cpu else "measured GiB"
    lines = [f"| shape | method | memory mode | batch x cutoff | estimate GiB | {measured} | error % | estimated plan |",
             "|---|---|---|---|---:|---:|---:|---|"]
    for r in results:
        head = f"| {r['shape']} | {r['method']} | {r['memory_mode']} | {r['batch']} x {r.get('cutoff', '')} |"
        if "error" in r:
            note = r["error"] if r["error"].startswith("skipped") else f"failed: {r['error'][:100]}"
            lines.append(f"{head} | | {note} | |")
            continue
        err = f"{r['error_pct']:+.1f}" if r["error_pct"] is not None else "-"
        lines.append(f"{head} {r['estimate_gib']:.2f} | {r['measured_gib']:.2f} | {err} | {r['estimate_plan']} |")
    errs = [abs(r["error_pct"]) for r in results if r.get("error_pct") is not None]
    if errs and not cpu:
        lines.append("")
        lines.append(f"Mean absolute error {sum(errs) / len(errs):.1f}%, worst {max(errs):.1f}% "
                     f"({len(errs)} of {len(results)} configurations measured). Positive = the estimate is high.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="1b,8b")
    ap.add_argument("--batches", default="1,4", help="rows per pass (gradient accumulation 1)")
    ap.add_argument("--cutoff", type=int, default=0, help="tokens per row (default 2048; 128 with --tiny)")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    ap.add_argument("--work", default="/tmp/bench_sft", help="where model folders are built (shared with bench_sft.py)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--cpu", action="store_true", help="train on the CPU (needs --tiny)")
    ap.add_argument("--tiny", action="store_true", help="the demo model instead of the 1B/8B shapes")
    ap.add_argument("--budget", type=int, default=290,
                    help="seconds for everything: configurations not started by then are reported skipped")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=float("inf"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.cutoff = args.cutoff or (128 if args.tiny else 2048)
    if args.cpu and not args.tiny:
        ap.error("--cpu trains the tiny model only: add --tiny")
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the children inherit it
    if args.child:
        return child(args)

    from transformers import AutoTokenizer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    tok = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "demo-model"))
    data = f"fit-rows-{args.cutoff}.jsonl"
    rows = make_long_rows(max(args.batches) * args.steps + 4, tok, args.cutoff)
    (work / data).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    shapes = ["tiny"] if args.tiny else [s for s in args.shapes.split(",") if s]
    if unknown := [s for s in shapes if s != "tiny" and s not in SHAPES]:
        ap.error(f"--shapes: no shape {', '.join(unknown)}; bench_sft.py builds {', '.join(SHAPES)}")
    results: list[dict] = []
    out = {"versions": versions(), "settings": {"batches": args.batches, "cutoff": args.cutoff, "steps": args.steps,
                                                "configs": CPU_CONFIGS if args.cpu else CONFIGS, "cpu": args.cpu},
           "results": results}
    for shape in shapes:
        t = time.time()
        model_dir = ROOT / "assets" / "demo-model" if shape == "tiny" else build_model_dir(shape, work / f"model-{shape}")
        print(f"[{shape}] model folder ready in {time.time() - t:.0f} s", flush=True)
        cmd = [sys.executable, __file__, "--child", shape, "--model-dir", str(model_dir), "--work", str(work),
               "--data", data, "--batches", ",".join(map(str, args.batches)), "--cutoff", str(args.cutoff),
               "--steps", str(args.steps), "--deadline", str(t_all + args.budget)] + (["--cpu", "--tiny"] if args.cpu else [])
        # cwd=work: a repo checkout's kernels/ folder must not shadow Hugging Face's `kernels` package
        try:
            # a run already started may finish past the budget; one that hangs is cut off
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(work),
                               timeout=max(60, t_all + args.budget + 180 - time.time()))
            stdout, tail = p.stdout, (p.stdout + p.stderr)[-3000:]
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            tail = "timed out\n" + stdout[-3000:]
        got = [json.loads(x[7:]) for x in stdout.splitlines() if x.startswith("RESULT ")]
        for r in got:
            r["shape"] = shape
            results.append(r)
            msg = r.get("error") or (f"estimate {r['estimate_gib']:.2f} GiB, measured {r['measured_gib']:.2f} GiB "
                                     f"({r['error_pct']:+.1f}%), {r['seconds']} s; {r['estimate_plan']}")
            print(f"[{shape}] {r['method']} {r['memory_mode']} batch {r['batch']}: {msg}", flush=True)
        if len(got) < len(CPU_CONFIGS if args.cpu else CONFIGS) * len(args.batches) or any("error" in r for r in got):
            print(tail, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=1))
    out["wall_s"] = round(time.time() - t_all, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["versions"]))
    where = "CPU smoke run" if args.cpu else out["versions"].get("gpu", "GPU")
    print(f"\nbench_fit ({where}, torch {out['versions']['torch']}): {args.steps} optimizer steps per run, "
          f"gradient accumulation 1, {out['wall_s']:.0f} s in all. `python3 bench/bench_fit.py --json fit.json`\n")
    print(table(results, args.cpu))


if __name__ == "__main__":
    main()
