"""GGUF export speed: a random Qwen2.5-0.5B-shaped model -> F16 + Q4_K_M, on this machine's CPU.

    python bench/bench_gguf_export.py                 # builds the model in /tmp/tunesmith-bench-gguf
    python bench/bench_gguf_export.py --check         # also time the llama.cpp fidelity check
    python bench/bench_gguf_export.py --keep          # keep the model and outputs

The model is built locally (nothing downloaded): Qwen2.5-0.5B's shapes (hidden 896, 24 layers,
14 heads / 2 KV heads, FFN 4864, vocab 151,936, tied embeddings, q/k/v biases) with random bf16
weights in two safetensors shards, and a byte-level BPE tokenizer of the real size (151,643
tokens, Qwen 2 pre-tokenizer, synthetic merges), so vocabulary handling costs what it costs.

What is measured, in one run:
- export_gguf(..., ["f16", "q4_k_m"], check=False) wall time, split into its stages: plan
  (config, headers, tokenizer), F16 streaming write, Q4_K_M (llama.cpp's quantizer).
- two floors for the F16 stage: writing the same number of bytes from memory with fsync (the
  disk), and reading + converting every tensor without writing (safetensors + torch). If F16 is
  close to disk + convert, the stage is bounded by I/O, not by our Python.
- optionally (--check) the fidelity check: HF forward in float32 + llama.cpp on both files.

Measured on the 2-core dev machine (CPU only, shared with other jobs: +-20% between runs),
494M parameters, F16 file 0.99 GB, Q4_K_M file 0.40 GB:

    export F16 + Q4_K_M (total)                 23.2 - 25.4 s
      plan: config, headers, 151k-token vocab    1.2 -  1.4 s
      F16 write (streamed, fsync)                3.5 -  4.6 s   floors: disk 2.8 - 3.6 s + convert 0.5 - 1.3 s
      Q4_K_M (llama.cpp, 2 threads)             17.2 - 18.4 s
    fidelity check (--check)                    57 - 73 s     (HF float32 forward + both files in llama.cpp)

The F16 stage runs at its floors (disk write + tensor conversion); 70% of the export is
llama.cpp's quantizer. With random weights the quantized top-1 agreement printed by --check is
meaningless (flat distributions); tests/gguf measures fidelity on trained tiny models.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHAPE = dict(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0,
    rms_norm_eps=1e-6, tie_word_embeddings=True,
)
N_TOKENS = 151643  # Qwen2.5's tokenizer size (the embedding has 151,936 rows)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_tokenizer(out: Path) -> None:
    """Byte-level BPE of the real size with synthetic merges (each merge joins earlier tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tunesmith.engine.gguf.vocab import bytes_to_unicode

    rng = random.Random(0)
    alphabet = list(bytes_to_unicode().values())
    letters = [bytes_to_unicode()[b] for b in b"etaoinshrdlucmfwypvbgkqjxz"]
    tokens, seen, merges = list(alphabet), set(alphabet), []
    while len(tokens) < N_TOKENS - 3:
        a = tokens[rng.randrange(256, len(tokens))] if len(tokens) > 256 and rng.random() < 0.7 else rng.choice(letters)
        b = rng.choice(letters)
        if a + b in seen or len(a) > 12:
            continue
        merges.append((a, b))
        tokens.append(a + b)
        seen.add(a + b)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    chatml = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            chat_template=chatml).save_pretrained(out)


def build_model(out: Path) -> int:
    """Random bf16 weights of the 0.5B shape in two shards; returns the parameter count."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config

    out.mkdir(parents=True, exist_ok=True)
    cfg = Qwen2Config(**SHAPE)
    cfg.save_pretrained(out)
    h, f, kv = SHAPE["hidden_size"], SHAPE["intermediate_size"], 128
    g = torch.Generator().manual_seed(0)

    def w(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)

    shards: list[dict[str, torch.Tensor]] = [{"model.embed_tokens.weight": w(SHAPE["vocab_size"], h), "model.norm.weight": torch.ones(h, dtype=torch.bfloat16)}, {}]
    n = 0
    for i in range(SHAPE["num_hidden_layers"]):
        s = shards[0 if i < 12 else 1]
        p = f"model.layers.{i}."
        s.update({
            p + "input_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch.bfloat16),
            p + "self_attn.q_proj.weight": w(h, h), p + "self_attn.q_proj.bias": w(h),
            p + "self_attn.k_proj.weight": w(kv, h), p + "self_attn.k_proj.bias": w(kv),
            p + "self_attn.v_proj.weight": w(kv, h), p + "self_attn.v_proj.bias": w(kv),
            p + "self_attn.o_proj.weight": w(h, h),
            p + "mlp.gate_proj.weight": w(f, h), p + "mlp.up_proj.weight": w(f, h), p + "mlp.down_proj.weight": w(h, f),
        })
    index = {"metadata": {}, "weight_map": {}}
    for k, s in enumerate(shards):
        name = f"model-{k + 1:05d}-of-00002.safetensors"
        save_file(s, str(out / name), metadata={"format": "pt"})
        index["weight_map"].update({t: name for t in s})
        n += sum(t.numel() for t in s.values())
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return n


def disk_floor(path: Path, nbytes: int) -> float:
    """Seconds to write nbytes from memory to path with fsync (64 MiB chunks)."""
    buf = np.random.default_rng(0).integers(0, 255, 64 * 2**20, dtype=np.uint8)
    t = time.perf_counter()
    with open(path, "wb") as fh:
        left = nbytes
        while left > 0:
            chunk = buf[: min(left, buf.size)]
            chunk.tofile(fh)
            left -= chunk.size
        fh.flush()
        os.fsync(fh.fileno())
    dt = time.perf_counter() - t
    path.unlink()
    return dt


def convert_floor(model_dir: Path) -> float:
    """Seconds to read and convert every tensor to F16 as the writer does, without writing."""
    from tunesmith.engine.gguf.arch import plan_model

    plan = plan_model(model_dir)
    t = time.perf_counter()
    for tp in plan.tensors:
        data = tp.load()
        _ = data.to(torch.float16).numpy() if tp.is_matrix else data.to(torch.float32).numpy()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/tunesmith-bench-gguf"), help="model and outputs go here")
    ap.add_argument("--check", action="store_true", help="also time the llama.cpp fidelity check")
    ap.add_argument("--keep", action="store_true", help="keep the model and GGUFs afterwards")
    args = ap.parse_args()

    from tunesmith.engine.gguf import export_gguf

    model_dir, out_dir = args.workdir / "qwen2-0.5b-random", args.workdir / "out"
    shutil.rmtree(args.workdir, ignore_errors=True)
    t = time.perf_counter()
    n_params = build_model(model_dir)
    build_tokenizer(model_dir)
    print(f"built {n_params / 1e6:.0f}M-parameter model in {time.perf_counter() - t:.1f}s ({model_dir})", flush=True)

    stages: dict[str, float] = {}

    def progress(frac: float, msg: str) -> None:
        stages.setdefault(msg, time.perf_counter())

    t0 = time.perf_counter()
    results = export_gguf(model_dir, out_dir, ["f16", "q4_k_m"], progress=progress, check=False, threads=os.cpu_count())
    total = time.perf_counter() - t0
    marks = sorted(stages.items(), key=lambda kv: kv[1])
    bounds = [(m, s, e) for (m, s), (_, e) in zip(marks, marks[1:] + [("end", t0 + total)])]
    f16, q4 = results
    t_plan = sum(e - s for m, s, e in bounds if m.startswith("reading"))
    t_f16 = sum(e - s for m, s, e in bounds if m.startswith("writing") and "Modelfile" not in m)
    t_q4 = sum(e - s for m, s, e in bounds if m.startswith("quantizing"))

    floor_disk = disk_floor(out_dir / "floor.bin", f16.size_bytes)
    floor_conv = convert_floor(model_dir)
    gb = f16.size_bytes / 1e9
    rows = [
        ("export F16 + Q4_K_M (total)", total, ""),
        ("  plan: config, headers, 151k-token vocab", t_plan, ""),
        ("  F16 write (streamed, fsync)", t_f16, f"{gb / t_f16:.2f} GB/s"),
        ("  Q4_K_M (llama.cpp, %d threads)" % os.cpu_count(), t_q4, f"{q4.size_bytes / 1e9:.2f} GB out"),
        ("floor: write %.2f GB from memory + fsync" % gb, floor_disk, f"{gb / floor_disk:.2f} GB/s"),
        ("floor: read + convert all tensors, no write", floor_conv, ""),
    ]
    if args.check:
        from tunesmith.engine.gguf.fidelity import Reference, check_fidelity

        t = time.perf_counter()
        ref = Reference.compute(model_dir)
        fids = [check_fidelity(r.path, model_dir, quant=r.quant, reference=ref) for r in results]
        rows.append(("fidelity check (HF fp32 + 2 GGUFs)", time.perf_counter() - t,
                     "; ".join(f"{r.quant}: {f.top1_agreement:.0%}" for r, f in zip(results, fids)) + " (random weights: top-1 not meaningful)"))

    print(f"\n{'stage':48s} {'seconds':>8s}  note")
    for name, sec, note in rows:
        print(f"{name:48s} {sec:8.1f}  {note}")
    print(f"\nF16 stage vs its floors (disk + convert): {t_f16:.1f}s vs {floor_disk + floor_conv:.1f}s")
    print(f"files: {f16.path.name} {f16.size_bytes / 1e9:.2f} GB, {q4.path.name} {q4.size_bytes / 1e9:.2f} GB")
    if not args.keep:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
