"""End-to-end SFT on chat data: stock TRL, Unsloth and `tunesmith train`, in ONE invocation.

    python bench/bench_sft.py --json bench_sft.json                 # 1B and 8B, every method
    python bench/bench_sft.py --shapes 1b --methods tunesmith-auto  # one shape, one method

On a bare GPU machine of this workplace (no network; wheels carried in .whl/):
    . bench/gpu_env.sh && python3 bench/bench_sft.py --json $OUT/bench_sft.json

What is timed is what users run, on the same generated chat dataset:

  stock             TRL SFTTrainer + PEFT + bitsandbytes: prepare_model_for_kbit_training, gradient
                    checkpointing (non-reentrant), padded micro-batches, adamw_8bit; SFTTrainer stores a
                    quantized model's LoRA weights in bf16 (Tunesmith: fp32 unless lora.precision bf16)
  stock-bf16        (diagnostic, not run by default) stock with the norms and embeddings that
                    prepare_model_for_kbit_training upcasts to fp32 cast back to bf16, so its
                    residual stream is bf16 like Unsloth's and Tunesmith's
  stock-fp32        (diagnostic) stock computing in fp32 (NF4 compute dtype fp32, no autocast, TF32
                    off): the reference the 16-bit paths round away from
  unsloth           Unsloth's FastLanguageModel (4-bit) + get_peft_model(use_gradient_checkpointing=
                    "unsloth") + its patched SFTTrainer, adamw_8bit (packing on: TRL's packing under it)
  tunesmith-auto    `tunesmith train` (engine.jobs -> worker -> engine.trainer) with memory_mode auto
  tunesmith-speed   the same with memory_mode speed (the same plan as auto unless auto changes)
  tunesmith-memory  the same with memory_mode memory
  tunesmith-off     (diagnostic) `tunesmith train` with kernels: off (PEFT layers, stock checkpointing,
                    padding-free flash varlen passes): Tunesmith's loop on stock arithmetic
  tunesmith-offpad  (diagnostic) the same with training.padding_free false (padded SDPA passes)
  tunesmith-bf16    tunesmith-auto with lora.precision bf16: the adapter weights in bf16, as TRL's
                    SFTTrainer stores a quantized model's adapters (stock's curve is a bf16-adapter curve;
                    Tunesmith keeps fp32 adapters by default, whose small updates do not round away)
Each method runs in a process of its own (Unsloth patches transformers on import). Packing off and
on (data.packing; for TRL-based methods packing=True), 1B and 8B shapes.

Setup shared by every method: random-weight Llama-3.2-1B / Llama-3.1-8B shapes built on the GPU
and saved as a bf16 model folder with the demo model's tokenizer (vocab 4,096 ids inside the
128,256-row embedding), loaded with NF4 double quant, LoRA r=16 alpha=16 on all seven projections,
batch 2 x accumulation 4, cutoff 2048, adamw_8bit, lr 2e-4, linear schedule, 3% warmup, bf16,
responses-only loss, logging at step 1 and every 10 steps, SDPA attention. Rows are tokenized once by
Tunesmith's data path (the same ids and masks go to every method) and trained in the same order
(the TRL-based methods get Tunesmith's seeded epoch order as their sampler).

The dataset (`make_chat_rows`): `--rows` chat rows, lengths log-normal in tokens (median ~330,
p95 ~1,100; the longest go past the cutoff and are truncated), ~30% prompt / 70% reply,
words drawn from a fixed list. Its measured distribution is printed and stored in the JSON.

Reported per run: trained tokens/s over the whole training run (non-padding input tokens of the
rows trained on / wall time from the first step to the last, loading excluded), the same after
the first optimizer step ("steady": the first step compiles kernels and sizes caches), peak allocated
and peak reserved GPU memory during training (torch.cuda.max_memory_allocated / _reserved after
a reset at training start, weights included), first/last logged loss and the mean of the logged
losses. Ratios to Unsloth and the loss difference to stock are printed in a table last.

What it does not know: real weights and real text (random weights keep losses near ln(vocab)),
flash-attention (SDPA everywhere), several GPUs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
               rope_theta=500000.0, rope_scaling={**LLAMA3_ROPE, "factor": 32.0}, max_position_embeddings=131072),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
               rope_theta=500000.0, rope_scaling={**LLAMA3_ROPE, "factor": 8.0}, max_position_embeddings=131072),
    # CPU smoke tests of the bench scripts (bench_dpo.py --cpu --tiny): the demo tokenizer's 4,096 ids
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=4096, tie_word_embeddings=True),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
METHODS = ["stock", "unsloth", "tunesmith-auto", "tunesmith-memory", "tunesmith-bf16"]
# diagnostics, by --methods: tunesmith-speed, tunesmith-off, tunesmith-offpad, stock-bf16, stock-fp32
PACKED_METHODS = ["unsloth", "tunesmith-auto"]
BS, GA, CUTOFF, LR, SEED, LOG_STEPS = 2, 4, 2048, 2e-4, 42, 10
GiB = 1024**3

WORDS = ("the model learns from data every reply should answer the question with care and detail while "
         "keeping facts straight about history science music cooking travel code numbers weather sport "
         "language people cities rivers mountains planets stars engines circuits gardens recipes stories "
         "because although however therefore meanwhile quickly slowly gently carefully brightly").split()


# --- data ---------------------------------------------------------------------------------


def make_chat_rows(n: int, tokenizer, seed: int = 0) -> list[dict]:
    """Chat rows whose token lengths (chat template included) are log-normal, median ~330."""
    g = random.Random(seed)
    per_word = len(tokenizer(" ".join(WORDS * 4))["input_ids"]) / (len(WORDS) * 4)
    rows = []
    for _ in range(n):
        total = max(24, int(g.lognormvariate(math.log(330), 0.75)))
        words = max(4, int(total / per_word))
        k = max(2, int(words * g.uniform(0.2, 0.4)))
        text = [g.choice(WORDS) for _ in range(words)]
        rows.append({"messages": [{"role": "user", "content": " ".join(text[:k]) + "?"},
                                  {"role": "assistant", "content": " ".join(text[k:]) + "."}]})
    return rows


def length_stats(lengths: list[int]) -> dict:
    s = sorted(lengths)
    q = lambda f: s[min(len(s) - 1, int(f * len(s)))]  # noqa: E731
    return {"rows": len(s), "median": statistics.median(s), "p90": q(0.9), "p95": q(0.95), "max": s[-1],
            "mean": round(statistics.mean(s), 1), f"over_{CUTOFF}": sum(x > CUTOFF for x in s)}


# --- shared setup (parent process) ----------------------------------------------------------


def build_model_dir(shape: str, out: Path) -> Path:
    """A random-weight Llama of `shape` saved as a bf16 model folder with the demo tokenizer
    (built on the GPU; on the CPU without one, for the tiny smoke-test shape). Kept: a folder
    that exists already is reused (bench_dpo.py reads the ones this script made)."""
    import shutil

    import torch
    import transformers

    if (out / "config.json").exists():
        return out
    cfg = transformers.LlamaConfig(**SHAPES[shape], bos_token_id=None, eos_token_id=2, pad_token_id=0)
    cfg.use_cache = False
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size="4GB")
    demo = ROOT / "assets" / "demo-model"
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (demo / f).exists():
            shutil.copy(demo / f, tmp / f)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    os.replace(tmp, out)
    return out


def prepare_data(work: Path, n_rows: int) -> tuple[Path, dict]:
    """chat.jsonl (for `tunesmith train`) and tokenized/ + packed/ datasets (for the TRL-based methods),
    tokenized by Tunesmith's own data path so every method trains on the same ids and masks."""
    from transformers import AutoTokenizer

    from tunesmith.engine.config import RunConfig
    from tunesmith.engine.data import prepare_datasets

    tok = AutoTokenizer.from_pretrained(str(ROOT / "assets" / "demo-model"))
    rows = make_chat_rows(n_rows, tok)
    jsonl = work / "chat.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = RunConfig().with_overrides([f"data.datasets=[{jsonl}]", f"data.cutoff_len={CUTOFF}"])
    untruncated = RunConfig().with_overrides([f"data.datasets=[{jsonl}]", "data.cutoff_len=1000000"])
    ds_full, _ = prepare_datasets(untruncated, tok, use_cache=False)
    stats = length_stats([len(x) for x in ds_full["input_ids"]])
    ds, _ = prepare_datasets(cfg, tok, use_cache=False)
    ds.save_to_disk(str(work / "tokenized"))
    stats["trained_tokens_share"] = round(sum(map(sum, ds["assistant_masks"])) / sum(map(len, ds["input_ids"])), 3)
    return jsonl, stats


# --- one method (child process) -------------------------------------------------------------


def _order(n: int) -> list[int]:
    from tunesmith.engine.training.batching import epoch_order

    return epoch_order(n, SEED, 0)


def run_trl(method: str, model_dir: Path, work: Path, steps: int, packing: bool, log_steps: int = LOG_STEPS) -> dict:
    """stock or unsloth: TRL's SFTTrainer on the pre-tokenized rows, Tunesmith's row order."""
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    if method == "unsloth":
        import unsloth  # noqa: F401 - patches transformers/TRL first, as Unsloth's docs require
        from unsloth import FastLanguageModel
    import datasets
    import torch
    from torch.utils.data import Sampler
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    ds = datasets.load_from_disk(str(work / "tokenized"))
    if method == "unsloth":
        model, tok = FastLanguageModel.from_pretrained(model_name=str(model_dir), max_seq_length=CUTOFF,
                                                       load_in_4bit=True, dtype=torch.bfloat16)
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                 target_modules=TARGETS, use_gradient_checkpointing="unsloth",
                                                 random_state=SEED)
    else:
        import peft
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        dtype = torch.float32 if method == "stock-fp32" else torch.bfloat16
        if method == "stock-fp32":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=torch.uint8)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=bnb, dtype=dtype,
                                                     device_map={"": 0}, attn_implementation="sdpa")
        model.config.use_cache = False
        transformers.set_seed(SEED)  # the LoRA A matrices start as Tunesmith's (same seed, same peft init)
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                     gradient_checkpointing_kwargs={"use_reentrant": False})
        if method == "stock-bf16":  # undo its fp32 upcast of norms and embeddings: a bf16 residual stream
            for prm in model.parameters():
                if prm.dtype == torch.float32:
                    prm.data = prm.data.to(torch.bfloat16)
        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                           target_modules=TARGETS, task_type="CAUSAL_LM"))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    timing: dict = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            timing["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                torch.cuda.synchronize()
                timing["t_first"], timing["tokens_first"] = time.perf_counter(), int(state.num_input_tokens_seen)

        def on_train_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            timing["t1"] = time.perf_counter()

    order = _order(len(ds))

    class InOrder(Sampler):
        def __len__(self):
            return len(order)

        def __iter__(self):
            return iter(order)

    base = SFTTrainer

    class Trainer(base):
        def _get_train_sampler(self, *args, **kwargs):
            return InOrder() if not packing else super()._get_train_sampler(*args, **kwargs)

    # gradient checkpointing: stock gets it from prepare_model_for_kbit_training, Unsloth from its own
    args = SFTConfig(
        output_dir=str(work / f"out-{method}"), per_device_train_batch_size=BS, gradient_accumulation_steps=GA,
        max_steps=steps, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=0.03, optim="adamw_8bit",
        logging_steps=log_steps, logging_first_step=True, save_strategy="no", bf16=method != "stock-fp32",
        report_to="none",
        disable_tqdm=True, seed=SEED, data_seed=SEED, max_length=CUTOFF, packing=packing, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", dataset_num_proc=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    secs = timing["t1"] - timing["t0"]
    tokens = int(trainer.state.num_input_tokens_seen)
    steady = (tokens - timing["tokens_first"]) / (timing["t1"] - timing["t_first"]) if "t_first" in timing else None
    return {"tokens": tokens, "seconds": secs, "tokens_per_s": tokens / secs, "steady_tokens_per_s": steady,
            "peak_gib": torch.cuda.max_memory_allocated() / GiB, "reserved_gib": torch.cuda.max_memory_reserved() / GiB,
            "losses": [(h["step"], h["loss"]) for h in logs], "steps": trainer.state.global_step,
            "grad_norms": [(h["step"], h.get("grad_norm")) for h in logs]}


def run_tunesmith(method: str, model_dir: Path, work: Path, steps: int, packing: bool, jsonl: Path,
                  log_steps: int = LOG_STEPS) -> dict:
    """`tunesmith train CONFIG.yaml`: the product path (job manager -> worker -> engine.trainer)."""
    variant = method.split("-", 1)[1]  # auto | speed | memory, or a diagnostic variant of auto
    mode = "auto" if variant in ("off", "offpad", "bf16") else variant
    home = work / f"home-{method}-{'packed' if packing else 'plain'}"
    cfg = {
        "model": {"name_or_path": str(model_dir)}, "method": "qlora",
        "lora": {"r": 16, "alpha": 16, "dropout": 0.0, "target_modules": TARGETS},
        "data": {"datasets": [str(jsonl)], "cutoff_len": CUTOFF, "packing": packing},
        "training": {"max_steps": steps, "learning_rate": LR, "batch_size": BS, "gradient_accumulation": GA,
                     "optimizer": "adamw_8bit", "memory_mode": mode, "logging_steps": log_steps,
                     "save_steps": 100000, "seed": SEED, "warmup_ratio": 0.03},
        "output": {"run_name": f"bench-{method}"},
    }
    if variant == "bf16":
        cfg["lora"]["precision"] = "bf16"
    elif variant in ("off", "offpad"):
        cfg["kernels"] = "off"
        cfg["training"]["padding_free"] = variant == "off"
    import yaml

    path = work / f"{method}-{'packed' if packing else 'plain'}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {**os.environ, "TUNESMITH_HOME": str(home)}
    # `tunesmith train` (the console script is `python -m tunesmith.cli.main`)
    p = subprocess.run([sys.executable, "-m", "tunesmith.cli.main", "train", str(path)], env=env,
                       capture_output=True, text=True, cwd=str(work))
    runs = sorted((home / "runs").glob("*/events.jsonl"))
    if p.returncode != 0 or not runs:
        log = "".join(open(f).read()[-3000:] for f in (home / "runs").glob("*/worker.log")) if (home / "runs").exists() else ""
        raise RuntimeError(f"tunesmith train failed ({p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]} {log}")
    evs = [json.loads(x) for x in runs[-1].read_text().splitlines() if x.strip()]
    start = next(e["time"] for e in evs if e["type"] == "status" and e.get("message") == "training")
    train = [e for e in evs if e["type"] == "train"]
    last = train[-1]
    infos = [e["message"] for e in evs if e["type"] == "info"]
    secs = last["time"] - start
    first = train[0]
    steady = ((last["tokens_seen"] - first["tokens_seen"]) / (last["time"] - first["time"])
              if len(train) > 1 and last["time"] > first["time"] else None)
    return {"tokens": last["tokens_seen"], "seconds": secs, "tokens_per_s": last["tokens_seen"] / secs,
            "steady_tokens_per_s": steady,
            "peak_gib": max(e["peak_mem_gb"] for e in train), "reserved_gib": max(e.get("peak_reserved_gb", 0) for e in train),
            "losses": [(e["step"], e["loss"]) for e in train], "steps": last["step"], "plan": infos,
            "grad_norms": [(e["step"], e.get("grad_norm")) for e in train]}


def child(args) -> None:
    """Run one method and print its result as the last line of JSON."""
    work, model_dir = Path(args.work), Path(args.model_dir)
    try:
        if args.child.startswith("tunesmith"):
            res = run_tunesmith(args.child, model_dir, work, args.steps, args.packing, work / "chat.jsonl",
                                args.log_steps)
        else:
            res = run_trl(args.child, model_dir, work, args.steps, args.packing, args.log_steps)
    except Exception as e:  # noqa: BLE001 - the parent records why a method could not run
        traceback.print_exc()
        res = {"error": f"{type(e).__name__}: {str(e)[:2000]}"}
    print("RESULT " + json.dumps(res))


def run_method(method: str, shape: str, model_dir: Path, work: Path, steps: int, packing: bool, timeout: int,
               log_steps: int = LOG_STEPS) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--model-dir", str(model_dir), "--work", str(work),
           "--steps", str(steps), "--log-steps", str(log_steps)] + (["--packing"] if packing else [])
    t = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(work))
        out = p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        return {"error": f"timed out after {timeout} s", "tail": str(e.stdout)[-1500:]}
    line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("RESULT ")), None)
    res = json.loads(line[7:]) if line else {"error": f"no result (exit {p.returncode})"}
    if "error" in res:
        res["tail"] = out[-2500:]
    res["wall_s"] = round(time.time() - t, 1)
    return res


# --- report -------------------------------------------------------------------------------


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "transformers", "peft", "trl", "bitsandbytes", "datasets", "unsloth", "unsloth_zoo"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = None
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        try:
            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True).stdout.strip()
        except OSError:
            out["driver"] = None
    return out


def mean_loss(r: dict) -> float | None:
    ls = [x for _, x in r.get("losses", [])]
    return sum(ls) / len(ls) if ls else None


def max_point_diff(r: dict, st: dict | None) -> float | None:
    """Largest relative difference to stock over the logged points both runs have (percent)."""
    if not st:
        return None
    ref = dict(st.get("losses", []))
    d = [100 * (x - ref[k]) / ref[k] for k, x in r.get("losses", []) if k in ref and ref[k]]
    return max(d, key=abs) if d else None


def table(results: list[dict]) -> str:
    lines = ["| shape | packing | method | tokens/s | vs unsloth | steady tokens/s | vs unsloth | peak GiB | "
             "reserved GiB | first loss | last loss | mean loss vs stock | largest point vs stock | steps |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        key = (r["shape"], r["packing"])
        un = next((x for x in results if (x["shape"], x["packing"]) == key and x["method"] == "unsloth"
                   and "tokens_per_s" in x), None)
        st = next((x for x in results if x["shape"] == r["shape"] and not x["packing"] and x["method"] == "stock"
                   and "tokens_per_s" in x), None)
        if "error" in r:
            lines.append(f"| {r['shape']} | {'on' if r['packing'] else 'off'} | {r['method']} | failed: "
                         f"{r['error'][:120]} | | | | | | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / un['tokens_per_s']:.2f}x" if un else "-"
        ml, sl = mean_loss(r), mean_loss(st) if st and not r["packing"] else None
        dl = f"{100 * (ml - sl) / sl:+.2f}%" if ml is not None and sl else "-"
        mp = max_point_diff(r, st) if not r["packing"] else None
        dp = f"{mp:+.2f}%" if mp is not None else "-"
        sr, su = r.get("steady_tokens_per_s"), (un or {}).get("steady_tokens_per_s")
        steady = f"{sr:.0f}" if sr else "-"
        sratio = f"{sr / su:.2f}x" if sr and su else "-"
        losses = r["losses"]
        lines.append(f"| {r['shape']} | {'on' if r['packing'] else 'off'} | {r['method']} | {r['tokens_per_s']:.0f} | "
                     f"{ratio} | {steady} | {sratio} | {r['peak_gib']:.2f} | {r['reserved_gib']:.2f} | "
                     f"{losses[0][1]:.4f} | {losses[-1][1]:.4f} | {dl} | {dp} | {r['steps']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="1b,8b")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--packing", action="store_true", help=argparse.SUPPRESS)  # child
    ap.add_argument("--no-packed", action="store_true", help="skip the packing-on runs")
    ap.add_argument("--rows", type=int, default=400, help="chat rows in the generated dataset (>= 400)")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps per run (0: per shape, see --steps-*)")
    ap.add_argument("--steps-1b", type=int, default=50, help="1B: 50 steps x 8 rows = one epoch of 400 rows")
    ap.add_argument("--steps-8b", type=int, default=20)
    ap.add_argument("--steps-packed", type=int, default=0, help="packing on: steps (0: one epoch of packed rows)")
    ap.add_argument("--log-steps", type=int, default=LOG_STEPS, help="log the loss every N steps (and at step 1)")
    ap.add_argument("--work", default="/tmp/bench_sft")
    ap.add_argument("--json", default=None)
    ap.add_argument("--timeout", type=int, default=600, help="seconds per method")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    jsonl, stats = prepare_data(work, args.rows)
    print("dataset:", json.dumps(stats), flush=True)
    import datasets as hf_datasets

    n_rows = len(hf_datasets.load_from_disk(str(work / "tokenized")))
    results: list[dict] = []
    out = {"versions": versions(), "dataset": stats, "settings": dict(batch=BS, accumulation=GA, cutoff=CUTOFF, lr=LR,
                                                                       lora="r16 a16 all 7", optimizer="adamw_8bit"),
           "results": results}
    methods = [m for m in args.methods.split(",") if m]
    for shape in [s for s in args.shapes.split(",") if s]:
        t = time.time()
        model_dir = build_model_dir(shape, work / f"model-{shape}")
        print(f"[{shape}] model folder in {time.time() - t:.0f} s", flush=True)
        steps = args.steps or (args.steps_1b if shape == "1b" else args.steps_8b)
        runs = [(m, False) for m in methods]
        if not args.no_packed and shape == "1b":
            runs += [(m, True) for m in methods if m in PACKED_METHODS]
        for method, packing in runs:
            n = steps
            if packing:
                n = args.steps_packed or max(1, int(n_rows * 0.22 / (BS * GA)))  # ~4.5 rows per packed row: one epoch
            r = run_method(method, shape, model_dir, work, n, packing, args.timeout, args.log_steps)
            r.update(shape=shape, method=method, packing=packing)
            results.append(r)
            msg = r.get("error") or (f"{r['tokens_per_s']:.0f} tok/s, peak {r['peak_gib']:.2f} GiB, reserved "
                                     f"{r['reserved_gib']:.2f}, loss {r['losses'][0][1]:.3f} -> {r['losses'][-1][1]:.3f}")
            print(f"[{shape}] {method} packing={'on' if packing else 'off'} ({r.get('wall_s')} s): {msg}", flush=True)
            if "error" in r:
                print(r.get("tail", "")[-2000:], flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(out, indent=1))
    out["wall_s"] = round(time.time() - t_all, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["versions"]))
    print(table(results))


if __name__ == "__main__":
    main()
