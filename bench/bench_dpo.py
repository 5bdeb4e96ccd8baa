"""DPO training speed: TRL's DPOTrainer (stock transformers + PEFT + bitsandbytes) vs Tunesmith's
dpo objective through the product path (RunConfig -> engine.trainer.Recipe), in ONE run.

    python bench/bench_dpo.py --json bench_dpo.json                 # 1B and 8B shapes, QLoRA, on a GPU
    python bench/bench_dpo.py --shapes 1b --steps 10 --pairs 8       # one shape, bigger steps
    python bench/bench_dpo.py --cpu --tiny                           # a smoke test of this script on the CPU

On a bare GPU machine of this workplace (no network; wheels carried in .whl/):
    . bench/gpu_env.sh && python3 bench/bench_dpo.py --json $OUT/bench_dpo.json

Models are random-weight Llama-3.2-1B / Llama-3.1-8B shapes written once to a temporary folder
in bf16 (no download) with a word-level tokenizer over the whole vocabulary ("t0" ... one
token per word) and a small chat template, so every path tokenizes the generated pairs to
the same lengths. Data: --pairs-per-step x (warmup + steps) preference pairs, each a
prompt of --prompt tokens and chosen / rejected replies of --reply tokens (random words).

  trl-stock   DPOTrainer(model=4-bit NF4 double-quant base from from_pretrained +
              prepare_model_for_kbit_training, peft_config=LoRA r16/a32 on all seven projections,
              gradient checkpointing, bf16, reference = the adapter switched off, which is
              TRL's default for PEFT), batch = --pairs-per-step pairs, one optimizer step each
  tunesmith   RunConfig(objective=dpo, method=qlora, same LoRA, batch_size = --pairs-per-step,
              kernels auto, memory_mode auto) run by engine.trainer.Recipe: padding-free passes,
              Tunesmith's kernels and memory plan on the policy and the reference forward

Both: beta 0.1, sigmoid loss, AdamW, lr 5e-6, no eval, no checkpoints. Reported: tokens/s
over the timed steps (chosen + rejected tokens of the step's pairs, the same count for both
paths), ratio to trl-stock, peak GiB (torch.cuda.max_memory_allocated), first/last loss.
With --cpu: fp32, LoRA on a 16-bit base (no bitsandbytes), tiny shapes; numbers mean nothing
beyond "the script runs".

What it does not know: real text (random words: the losses only show both paths train),
multi-GPU, flash-attention (both use PyTorch SDPA).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

LLAMA3_ROPE = {"rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
               rope_theta=500000.0, rope_scaling={**LLAMA3_ROPE, "factor": 32.0}),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False,
               rope_theta=500000.0, rope_scaling={**LLAMA3_ROPE, "factor": 8.0}),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=512, tie_word_embeddings=True),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
METHODS = ["trl-stock", "tunesmith"]
SPECIALS = ["<pad>", "<|end|>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' <|end|> ' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|> ' }}{% endif %}")
GiB = 1024**3


# --- model, tokenizer, data -----------------------------------------------------------------


def write_model(shape: str, folder: Path, max_len: int) -> None:
    """A random-weight Llama of `shape` (bf16 on GPUs) + a word-level tokenizer, saved to `folder`."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    spec = dict(SHAPES[shape])
    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for i in range(spec["vocab_size"] - len(SPECIALS)):
        vocab[f"t{i}"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<|end|>",
                                               unk_token="<unk>")
    tok.chat_template = TEMPLATE
    tok.save_pretrained(str(folder))
    cfg = transformers.LlamaConfig(**spec, max_position_embeddings=max(8192, max_len), pad_token_id=0,
                                   eos_token_id=1, bos_token_id=None)
    cfg.use_cache = False
    torch.manual_seed(0)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = transformers.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.save_pretrained(str(folder), safe_serialization=True)
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def write_pairs(path: Path, n: int, vocab: int, prompt: int, reply: int) -> None:
    rng = random.Random(1234)
    words = vocab - len(SPECIALS)

    def text(k: int) -> str:
        return " ".join(f"t{rng.randrange(words)}" for _ in range(k))

    rows = [{"prompt": text(prompt), "chosen": text(reply), "rejected": text(reply)} for _ in range(n)]
    path.write_text(json.dumps(rows), encoding="utf-8")


def pair_tokens(folder: Path, data: Path) -> list[int]:
    """Chosen + rejected tokens per pair, as the chat template renders them (what both paths process)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    out = []
    for r in json.loads(data.read_text(encoding="utf-8")):
        p = [{"role": "user", "content": r["prompt"]}]
        n = 0
        for side in ("chosen", "rejected"):
            n += len(tok.apply_chat_template(p + [{"role": "assistant", "content": r[side]}], tokenize=True,
                                             return_dict=True)["input_ids"])
        out.append(n)
    return out


# --- the two paths ------------------------------------------------------------------------


def run_trl(folder: Path, data: Path, args, cpu: bool) -> dict:
    """TRL DPOTrainer + PEFT (+ bitsandbytes NF4 on GPUs): returns step end times and losses."""
    import peft
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if cpu:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    else:
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16, quantization_config=q,
                                                     device_map={"": 0})
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                     gradient_checkpointing_kwargs={"use_reentrant": False})
    rows = json.loads(data.read_text(encoding="utf-8"))
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                             "chosen": [{"role": "assistant", "content": r["chosen"]}],
                             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    times: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    cfg = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.pairs_per_step,
                    gradient_accumulation_steps=1, max_steps=args.warmup + args.steps, learning_rate=5e-6,
                    beta=0.1, loss_type=["sigmoid"], logging_steps=1, save_strategy="no", report_to=[],
                    bf16=not cpu, use_cpu=cpu, gradient_checkpointing=not cpu, max_length=None,
                    dataloader_num_workers=0, seed=0)
    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                           task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora,
                         callbacks=[Clock()])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    del trainer, model
    return {"start": t0, "times": times, "losses": losses}


def run_tunesmith(folder: Path, data: Path, args, cpu: bool) -> dict:
    """The product path: a RunConfig with objective dpo, trained by engine.trainer.Recipe."""
    from tunesmith.engine.config import RunConfig
    from tunesmith.engine.events import EventWriter, read_events
    from tunesmith.engine.trainer import Recipe

    cfg = RunConfig.model_validate({
        "model": {"name_or_path": str(folder)}, "objective": "dpo",
        "objective_settings": {"beta": 0.1, "loss_type": "sigmoid"},
        "method": "lora" if cpu else "qlora",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"datasets": [str(data)], "cutoff_len": args.prompt + args.reply + 16},
        "training": {"batch_size": args.pairs_per_step, "gradient_accumulation": 1,
                     "max_steps": args.warmup + args.steps, "learning_rate": 5e-6, "logging_steps": 1,
                     "save_steps": 10**6, "warmup_ratio": 0.0, "precision": "fp32" if cpu else "auto"},
        "kernels": "off" if cpu else "auto",
    })
    run_dir = Path(tempfile.mkdtemp())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    recipe = Recipe(cfg, run_dir, EventWriter(run_dir), lambda: False)
    recipe.setup()
    recipe.train()
    evs = [e for e in read_events(run_dir) if e["type"] == "train"]
    notes = [e["message"] for e in read_events(run_dir) if e["type"] == "info"]
    recipe.cleanup()
    del recipe
    return {"events": evs, "notes": notes}


def measure(method: str, folder: Path, data: Path, per_pair: list[int], args, cpu: bool) -> dict:
    row: dict = {"method": method}
    step_tokens = sum(per_pair[:args.pairs_per_step])  # every pair has the same length
    try:
        if method == "trl-stock":
            r = run_trl(folder, data, args, cpu)
            t = r["times"]
            elapsed = t[-1] - t[args.warmup - 1] if args.warmup else t[-1] - r["start"]
            row["losses"] = r["losses"]
        else:
            r = run_tunesmith(folder, data, args, cpu)
            ev = r["events"]
            by_step = {e["step"]: e for e in ev}
            last, first = by_step[args.warmup + args.steps], by_step.get(args.warmup)
            elapsed = last["elapsed_s"] - (first["elapsed_s"] if first else 0.0)
            row["losses"] = [e["loss"] for e in ev]
            row["notes"] = r["notes"]
        row.update(status="ok", tokens_per_s=round(args.steps * step_tokens / elapsed, 1),
                   step_s=round(elapsed / args.steps, 3), first_loss=row["losses"][0], last_loss=row["losses"][-1])
        if torch.cuda.is_available():
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / GiB, 2)
    except torch.OutOfMemoryError:
        row.update(status="OOM")
    except Exception as exc:  # one broken path must not lose the other's numbers
        row.update(status=f"error: {type(exc).__name__}: {exc}"[:300])
        traceback.print_exc()
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def table(rows: list[dict]) -> str:
    lines = ["| shape | method | tokens/s | vs trl-stock | step s | peak GiB | first loss | last loss | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    base = {r["shape"]: r.get("tokens_per_s") for r in rows if r["method"] == "trl-stock" and r.get("status") == "ok"}
    for r in rows:
        tps = r.get("tokens_per_s")
        ratio = f"{tps / base[r['shape']]:.2f}x" if tps and base.get(r["shape"]) else "-"
        fl, ll = r.get("first_loss"), r.get("last_loss")
        lines.append(f"| {r['shape']} | {r['method']} | {tps or '-'} | {ratio} | {r.get('step_s', '-')} | "
                     f"{r.get('peak_gib', '-')} | {round(fl, 4) if fl is not None else '-'} | "
                     f"{round(ll, 4) if ll is not None else '-'} | {r.get('status')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="1b,8b", help="comma list of: " + ", ".join(SHAPES))
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of: " + ", ".join(METHODS))
    ap.add_argument("--pairs-per-step", type=int, default=4, help="preference pairs per optimizer step")
    ap.add_argument("--prompt", type=int, default=512, help="prompt words (tokens) per pair")
    ap.add_argument("--reply", type=int, default=512, help="words (tokens) of each reply")
    ap.add_argument("--steps", type=int, default=6, help="timed optimizer steps per method")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (fp32 LoRA, no bitsandbytes): a smoke test")
    ap.add_argument("--tiny", action="store_true", help="--shapes tiny --prompt 24 --reply 16 --steps 2 --warmup 1")
    ap.add_argument("--json", default="bench_dpo.json", help="where to write the results")
    args = ap.parse_args(argv)
    if args.tiny:
        args.shapes, args.prompt, args.reply, args.steps, args.warmup = "tiny", 24, 16, 2, 1
    cpu = args.cpu or not torch.cuda.is_available()
    if not args.cpu and not torch.cuda.is_available():
        print("bench_dpo needs a CUDA GPU (or --cpu for a smoke test)", file=sys.stderr)
        return 2
    if cpu:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [s for s in shapes if s not in SHAPES] + [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown shape/method: {bad}")
    os.environ.setdefault("TUNESMITH_HOME", tempfile.mkdtemp(prefix="bench-dpo-home-"))
    rows = []
    t_all = time.perf_counter()
    for shape in shapes:
        with tempfile.TemporaryDirectory(prefix=f"bench-dpo-{shape}-") as tmp:
            folder, data = Path(tmp) / "model", Path(tmp) / "pairs.json"
            write_model(shape, folder, args.prompt + args.reply + 64)
            write_pairs(data, args.pairs_per_step * (args.warmup + args.steps), SHAPES[shape]["vocab_size"],
                        args.prompt, args.reply)
            per_pair = pair_tokens(folder, data)
            for method in methods:
                row = {"shape": shape, **measure(method, folder, data, per_pair, args, cpu)}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "notes")}), flush=True)
    print()
    print(table(rows))
    for r in rows:
        for n in r.get("notes") or []:
            print(f"- {r['shape']} {r['method']}: {n}")
    with open(args.json, "w") as f:
        json.dump(dict(args=vars(args), rows=rows, total_s=round(time.perf_counter() - t_all, 1)), f, indent=1)
    print(f"wrote {args.json} ({time.perf_counter() - t_all:.0f} s)")
    return 0 if all(r.get("status") == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
