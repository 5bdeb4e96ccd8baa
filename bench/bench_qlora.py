"""QLoRA training speed and memory: stock transformers + PEFT + bitsandbytes vs Tunesmith, in ONE run.

    python bench/bench_qlora.py --quick --json bench_qlora.json            # 1B and 8B, ~2 min on an H100
    python bench/bench_qlora.py --shapes 1b --steps 10                      # one shape, more steps
    python bench/bench_qlora.py --shapes 8b --batch 1 --seq 131072 --methods tunesmith-memory   # long context
    python bench/bench_qlora.py --parity 50 --shapes 1b                     # kernels on vs off, 50 steps

On a bare GPU machine of this workplace (no network; wheels carried in .whl/):
    . bench/gpu_env.sh && python3 bench/bench_qlora.py --quick --json $OUT/bench_qlora.json

Models are random-weight Llama-3.2-1B and Llama-3.1-8B shapes built on the GPU
(no download), the decoder projections quantized to NF4 with double quant
(blocksize 64) by bitsandbytes, LoRA r=16 / alpha=32 on all seven projections,
bf16 autocast, AdamW on the LoRA weights, batch 2 x 2048 random tokens (same
tokens, same seed for every method). Methods:

  stock-gc          the stock QLoRA recipe (what engine/trainer.py does with kernels off):
                    prepare_model_for_kbit_training (norms/embeddings/head to fp32) +
                    PEFT + non-reentrant gradient checkpointing on every layer
  stock             the same without gradient checkpointing (may run out of memory)
  tunesmith-auto    plan = plan_memory(prefer="auto"), patch(model, settings=plan.settings),
                    apply_memory_plan: the fastest settings that fit free memory
                    (checkpointing, NF4 weight cache; the plan is printed)
  tunesmith-speed   the same with prefer="speed"
  tunesmith-memory  the same with prefer="memory": every layer checkpointed with
                    its input offloaded to pinned CPU memory, small LM-head chunks, the
                    layers' backward replayed from CUDA graphs (TUNESMITH_CUDA_GRAPHS=0: eager)
  liger-gc          Liger-Kernel's apply_liger_kernel_to_llama on stock-gc (only if installed)

Tunesmith methods keep the non-quantized weights (norms, embeddings, head) in bf16
instead of prepare_model_for_kbit_training's fp32 copies; LoRA weights are fp32 in
all methods (PEFT's default).

Reported per method: tokens/s over the timed steps (after warm-up), ratio to
stock-gc, peak GiB (torch.cuda.max_memory_allocated, weights included), reserved
GiB (torch.cuda.max_memory_reserved: the caching allocator and CUDA-graph pools),
first and last loss, allocator retries. A table is printed and everything is written as JSON.

What it does not know: real checkpoints and real text (random weights and
tokens make the loss meaningless beyond parity between methods), multi-GPU,
and flash-attn (attention is PyTorch SDPA in every method).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

# --- shapes -----------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sft import SHAPES, TARGETS  # noqa: E402  one definition of the shapes for every bench
from tunesmith.engine.training.profiling import gaps, host_stalls  # noqa: E402

METHODS = ["stock-gc", "stock", "tunesmith-auto", "tunesmith-speed", "tunesmith-memory", "liger-gc"]
EXTRA_METHODS = ["tunesmith-ckpt"]  # diagnosis only: every layer checkpointed, nothing offloaded
GiB = 1024**3


# --- model building -----------------------------------------------------------------------


def build_model(shape: str, seq: int):
    """Random-weight Llama of `shape` on the GPU in bf16, decoder Linears quantized to NF4 (double quant)."""
    import bitsandbytes as bnb
    import transformers

    cfg = transformers.LlamaConfig(**SHAPES[shape])
    cfg.max_position_embeddings = max(cfg.max_position_embeddings, seq)
    cfg._attn_implementation = "sdpa"
    cfg.use_cache = False
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = transformers.LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                with torch.device("meta"):
                    q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                          compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                          quant_storage=torch.uint8)
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", blocksize=64).to("cuda")
                if lin.bias is not None:
                    q.bias = torch.nn.Parameter(lin.bias.data, requires_grad=False)
                setattr(parent, name, q)
                del lin
    model.is_loaded_in_4bit = True  # what from_pretrained(load_in_4bit) sets; PEFT reads it
    gc.collect()
    torch.cuda.empty_cache()
    return model


def prepare(model, method: str, tokens: int):
    """Apply the method's recipe; returns (model, note)."""
    import peft

    lora = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                           task_type="CAUSAL_LM")
    note = ""
    if method.startswith(("stock", "liger")):
        gc_on = method.endswith("-gc")
        model = peft.prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gc_on, gradient_checkpointing_kwargs={"use_reentrant": False})
        if method == "liger-gc":
            from liger_kernel.transformers import apply_liger_kernel_to_llama

            apply_liger_kernel_to_llama(model=model)
            note = "liger: rope, rms_norm, swiglu, fused_linear_cross_entropy"
        model = peft.get_peft_model(model, lora)
    else:
        import tunesmith.kernels as K

        for p in model.parameters():
            p.requires_grad_(False)
        model = peft.get_peft_model(model, lora)
        prefer = method.split("-", 1)[1]
        plan = K.plan_memory(model, tokens, prefer="memory" if prefer == "ckpt" else prefer)
        if prefer == "ckpt":  # memory mode's checkpointing and settings, nothing offloaded, no graphs
            plan.offload = plan.graphs = plan.graph_forward = False
            plan.reason = "diagnosis: no offload"
        report = K.patch(model, mode="on", settings=plan.settings)
        K.apply_memory_plan(model, plan)
        note = f"{report.summary()} | {plan.summary()}"
    model.train()
    return model, note


# --- one measurement ----------------------------------------------------------------------


def batches(n: int, batch: int, seq: int, vocab: int):
    g = torch.Generator().manual_seed(1234)
    return [torch.randint(0, vocab, (batch, seq), generator=g) for _ in range(n)]


def run_method(shape: str, method: str, args) -> dict:
    tokens = args.batch * args.seq
    row = dict(shape=shape, method=method, batch=args.batch, seq=args.seq)
    model = opt = None
    try:
        t0 = time.perf_counter()
        model = build_model(shape, args.seq)
        model, note = prepare(model, method, tokens)
        row["note"] = note
        row["setup_s"] = round(time.perf_counter() - t0, 1)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=args.lr, fused=True)
        data = batches(args.warmup + args.steps, args.batch, args.seq, SHAPES[shape]["vocab_size"])
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # reserved memory starts from what this method holds
        torch.cuda.reset_peak_memory_stats()
        losses = []
        for i, ids in enumerate(data):
            if i == args.warmup:
                torch.cuda.synchronize()
                t_start = time.perf_counter()
            ids = ids.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - t_start
        losses = [float(x) for x in losses]
        stats = torch.cuda.memory_stats()
        # allocator retries and stream syncs stall the host: a memory mode that hits them is slower
        row["alloc_retries"] = stats.get("num_alloc_retries", 0)
        row["alloc_syncs"] = stats.get("num_sync_all_streams", 0)
        row["device_frees"] = stats.get("num_device_free", 0)
        row.update(status="ok", tokens_per_s=round(args.steps * tokens / elapsed, 1),
                   step_s=round(elapsed / args.steps, 3), peak_gib=round(torch.cuda.max_memory_allocated() / GiB, 2),
                   reserved_gib=round(torch.cuda.max_memory_reserved() / GiB, 2),
                   first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4), losses=[round(x, 5) for x in losses])
    except torch.OutOfMemoryError:
        row.update(status="OOM", peak_gib=round(torch.cuda.max_memory_allocated() / GiB, 2))
    except Exception as exc:  # one broken method must not lose the others' numbers
        row.update(status=f"error: {type(exc).__name__}: {exc}"[:300])
        traceback.print_exc()
    finally:
        del model, opt
        try:  # the NF4 scratch outlives a model (its weight cache goes with it): free it for the next method
            from tunesmith.kernels.nf4 import release_scratch

            release_scratch()
        except ImportError:
            pass
        gc.collect()
        torch.cuda.empty_cache()
    return row


# --- parity: kernels on vs off --------------------------------------------------------------


def parity(shape: str, args) -> dict:
    """Same NF4 weights, data, seed and recipe (bf16 non-quantized weights, no checkpointing):
    kernels off vs on under bf16 autocast for N steps (loss curves), and the LoRA gradients of
    step one of both against an fp32 reference (kernels off, no autocast, bitsandbytes computing
    in fp32). "Within bf16 tolerance" = our error against fp32 is about stock bf16's error."""
    import peft

    import tunesmith.kernels as K

    out, grads = {}, {}
    for mode in ("off", "on", "fp32"):
        model = build_model(shape, args.seq)
        for p in model.parameters():
            p.requires_grad_(False)
        if mode == "fp32":
            for m in model.modules():
                if hasattr(m, "compute_dtype"):
                    m.compute_dtype = torch.float32
            for p in model.parameters():
                if type(p).__name__ != "Params4bit":
                    p.data = p.data.float()
        torch.manual_seed(1)
        model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS,
                                                           lora_dropout=0.0, init_lora_weights=False))
        if mode == "on":
            K.patch(model, mode="on")
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
        losses = []
        steps = 1 if mode == "fp32" else args.parity
        for i, ids in enumerate(batches(steps, args.batch, args.seq, SHAPES[shape]["vocab_size"])):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode != "fp32"):
                loss = model(input_ids=ids.cuda(), labels=ids.cuda()).loss
            loss.backward()
            if i == 0:
                grads[mode] = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
                               if p.requires_grad}
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        out[mode] = losses
        from tunesmith.kernels.nf4 import release_scratch

        release_scratch()
        del model, opt
        gc.collect()
        torch.cuda.empty_cache()
    rel = [abs(a - b) / abs(b) for a, b in zip(out["on"], out["off"])]

    def errs(mode):
        ref = grads["fp32"]
        e = sorted(((g - ref[n]).norm() / ref[n].norm().clamp_min(1e-30)).item() for n, g in grads[mode].items())
        return dict(median=e[len(e) // 2], p90=e[int(len(e) * 0.9)], max=e[-1])

    on_vs_off = max(((g - grads["off"][n]).norm() / grads["off"][n].norm().clamp_min(1e-30)).item()
                    for n, g in grads["on"].items())
    return dict(shape=shape, steps=args.parity, max_rel_loss_diff=max(rel), loss_off=out["off"], loss_on=out["on"],
                loss_fp32_step1=out["fp32"][0], grad_err_vs_fp32_stock_bf16=errs("off"),
                grad_err_vs_fp32_tunesmith=errs("on"), worst_lora_grad_rel_diff_on_vs_off=on_vs_off)


def profile(shape: str, method: str, args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = build_model(shape, args.seq)
    model, note = prepare(model, method, args.batch * args.seq)
    print(note)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, fused=True)
    data = batches(4, args.batch, args.seq, SHAPES[shape]["vocab_size"])

    def step(ids):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids.cuda(), labels=ids.cuda()).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for ids in data[:2]:
        step(ids)
    torch.cuda.synchronize()
    if args.profile_python:
        import cProfile
        import pstats

        pr = cProfile.Profile()
        t0 = time.perf_counter()
        pr.enable()
        for ids in data[2:]:
            step(ids)
        torch.cuda.synchronize()
        pr.disable()
        print(f"2 steps: {time.perf_counter() - t0:.3f} s wall (with cProfile)")
        pstats.Stats(pr).sort_stats("tottime").print_stats(35)
        return
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for ids in data[2:]:
            step(ids)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total" if _old_profiler() else "device_time_total",
                                    row_limit=30, max_name_column_width=70))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=70))
    print("\n".join(gaps(prof)))
    print("\n".join(host_stalls(prof)))


def _old_profiler() -> bool:
    return tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 4)


# --- report -------------------------------------------------------------------------------


def environment() -> dict:
    import transformers

    env = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), python=platform.python_version(),
               torch=torch.__version__, transformers=transformers.__version__,
               gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    from importlib import metadata

    for dist in ("triton", "peft", "bitsandbytes", "liger-kernel"):
        try:
            env[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist.replace("-", "_")] = None
    try:
        env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                       capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
    except Exception:
        env["driver"] = None
    return env


def table(rows: list[dict]) -> str:
    lines = ["| shape | method | tokens/s | vs stock-gc | peak GiB | reserved GiB | first loss | last loss | status |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    base = {r["shape"]: r.get("tokens_per_s") for r in rows if r["method"] == "stock-gc" and r.get("status") == "ok"}
    for r in rows:
        tps = r.get("tokens_per_s")
        ratio = f"{tps / base[r['shape']]:.2f}x" if tps and base.get(r["shape"]) else "-"
        lines.append(f"| {r['shape']} | {r['method']} | {tps if tps else '-'} | {ratio} | {r.get('peak_gib', '-')} | "
                     f"{r.get('reserved_gib', '-')} | {r.get('first_loss', '-')} | {r.get('last_loss', '-')} | {r.get('status', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # what to run
    ap.add_argument("--shapes", default="1b,8b", help="comma list of: " + ", ".join(SHAPES))
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of: " + ", ".join(METHODS))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=2048)
    # how long
    ap.add_argument("--steps", type=int, default=8, help="timed steps per method")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile, allocator)")
    ap.add_argument("--quick", action="store_true", help="--warmup 2 --steps 4")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="skip the methods left once this much wall time has passed (the table says so)")
    ap.add_argument("--parity", type=int, default=0, help="instead: N steps kernels on vs off, report the curves")
    ap.add_argument("--profile", default="", metavar="METHOD",
                    help="instead: profile two steps of METHOD on the first shape, print the top CUDA kernels")
    ap.add_argument("--profile-python", action="store_true",
                    help="with --profile: cProfile the host side instead (where Python time goes)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--json", default="bench_qlora.json", help="where to write the results")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.steps = 2, 4
    if not torch.cuda.is_available():
        print("bench_qlora needs a CUDA GPU", file=sys.stderr)
        return 2
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [s for s in shapes if s not in SHAPES] + [m for m in methods if m not in METHODS + EXTRA_METHODS]
    if unknown:
        ap.error(f"unknown shape/method: {unknown}")
    env = environment()
    print(json.dumps(env))

    if args.profile:
        profile(shapes[0], args.profile, args)
        return 0
    if args.parity:
        res = [parity(s, args) for s in shapes]
        for r in res:
            print(f"{r['shape']}: {r['steps']} steps, kernels on vs off: max relative loss difference "
                  f"{r['max_rel_loss_diff']:.3%}")
            print(f"  step-1 LoRA gradients vs fp32 reference (relative error norm per tensor): "
                  f"stock bf16 {r['grad_err_vs_fp32_stock_bf16']}, tunesmith bf16 {r['grad_err_vs_fp32_tunesmith']}")
        with open(args.json, "w") as f:
            json.dump(dict(env=env, parity=res), f, indent=1)
        return 0

    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        methods = [m for m in methods if m != "liger-gc"]
    rows = []
    t_all = time.perf_counter()
    # Liger patches transformers' modeling_llama module globally (classes and functions), so every
    # model built after it would be Liger's too: it runs last, after all shapes.
    order = [(s, m) for s in shapes for m in methods if not m.startswith("liger")]
    order += [(s, m) for s in shapes for m in methods if m.startswith("liger")]
    for shape, method in order:
        if time.perf_counter() - t_all > args.budget_s:
            rows.append(dict(shape=shape, method=method, status="skipped (time budget)"))
            continue
        row = run_method(shape, method, args)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
    rows.sort(key=lambda r: (shapes.index(r["shape"]), methods.index(r["method"])))
    print()
    print(table(rows))
    for r in rows:
        if r.get("note"):
            print(f"- {r['shape']} {r['method']}: {r['note']}")
    with open(args.json, "w") as f:
        json.dump(dict(env=env, args=vars(args), rows=rows, total_s=round(time.perf_counter() - t_all, 1)), f, indent=1)
    print(f"wrote {args.json} ({time.perf_counter() - t_all:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
