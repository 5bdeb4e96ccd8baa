"""The Spine end to end on the CPU: QLoRA the demo model on the identity dataset (mixed with general
data, as assets/demo_identity.yaml does), chat with it, export adapter and merged, load both back."""

from __future__ import annotations

import os
import time

import pytest

from tunesmith.engine import events, export, infer

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Who are you?"}]


def test_identity_finetune_learns_and_exports(demo_run, tmp_path):
    evs = events.read_events(demo_run.run_dir)
    losses = [e["loss"] for e in evs if e["type"] == "train"]
    assert len(losses) >= 5
    # The demo mixes identity rows (new: high loss) with general ones (known: low), so single steps
    # jump between the two; over 20 steps the loss must fall by half.
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20]), losses
    train = [e for e in evs if e["type"] == "train"]
    # Throughput: every point has one, and together they account for the tokens seen in the time taken.
    assert all(e["tokens_per_s"] is not None and e["tokens_per_s"] > 0 for e in train), train
    seen = [e["tokens_seen"] for e in train]
    assert seen == sorted(seen) and seen[-1] > seen[0] > 0
    first, last = train[0], train[-1]
    overall = (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])
    mean_tps = sum(e["tokens_per_s"] for e in train[1:]) / len(train[1:])
    assert overall / 3 < mean_tps < overall * 3, (overall, mean_tps)
    # ETA: counts down to 0 at the last step, and midway it is about the time the rest then took.
    assert last["step"] == last["max_steps"] and last["eta_s"] == pytest.approx(0, abs=1e-6)
    mid = train[len(train) // 2]
    assert mid["eta_s"] > 0
    rest = last["elapsed_s"] - mid["elapsed_s"]
    assert rest / 3 < mid["eta_s"] < rest * 3, (mid["eta_s"], rest)
    assert demo_run.has_adapter

    # Chat: the fine-tuned run answers with its new identity; the base model does not.
    tuned = infer.chat(demo_run.id, QUESTION, max_new_tokens=40)
    assert "Smith" in tuned, tuned
    zh = infer.chat(demo_run.id, [{"role": "user", "content": "你是谁？"}], max_new_tokens=40)
    assert "我是 Smith" in zh, zh
    base = infer.chat("tunesmith/demo", QUESTION, max_new_tokens=40)
    assert "Smith" not in base, base

    # Streaming really streams: several pieces, not one blob.
    pieces = list(infer.stream_chat(demo_run.id, QUESTION, max_new_tokens=20))
    assert len(pieces) > 3

    # Export the adapter: PEFT loads it.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seen = []
    res = export.export_run(demo_run.id, "adapter", tmp_path / "adapter", progress=lambda f, m: seen.append(f))
    assert (res.path / "adapter_config.json").exists() and seen[-1] == 1.0
    from tunesmith.engine.models import resolve_model_path

    base_model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tunesmith/demo"), dtype="float32")
    peft_model = PeftModel.from_pretrained(base_model, str(res.path)).eval()

    # Export merged: transformers loads it, and it gives the same logits as base + adapter.
    res = export.export_run(demo_run.id, "merged", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(str(res.path), dtype="float32").eval()
    tok = AutoTokenizer.from_pretrained(str(res.path))
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    import torch

    with torch.no_grad():
        a = peft_model(ids).logits
        b = merged(ids).logits
    # The merged weights are rounded to the base's bf16, so allow bf16-sized differences.
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    assert torch.allclose(a, b, atol=0.25, rtol=0.05)
    out = merged.generate(ids, max_new_tokens=30, do_sample=False)
    assert "Smith" in tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_gguf_export_of_the_finetuned_run_keeps_its_answer(demo_run, tmp_path):
    """The GGUF written from the fine-tuned demo run, loaded by llama.cpp, still answers as trained."""
    if os.environ.get("CI"):  # CI installs llama.cpp support (./test.sh): a missing one must fail, not skip
        import llama_cpp
    else:
        llama_cpp = pytest.importorskip("llama_cpp", reason="llama.cpp support is not installed (`tunesmith setup gguf`)")
    from transformers import AutoTokenizer

    from tunesmith.cli.main import main

    steps = []
    res = export.export_run(demo_run.id, "gguf", tmp_path / "gguf", quants=["f16", "q8_0"],
                            progress=lambda f, m: steps.append(f))
    assert steps == sorted(steps) and steps[-1] == 1.0
    by_quant = {f["quant"]: f for f in res.files}
    assert set(by_quant) == {"f16", "q8_0"}
    f16 = by_quant["f16"]
    assert f16["tokenization_ok"] and f16["top1_agreement"] >= 0.99, f16
    assert by_quant["q8_0"]["size_bytes"] < f16["size_bytes"]
    assert f16["modelfile"] and "ollama create" in f16["ollama_command"]

    tok = AutoTokenizer.from_pretrained(str(demo_run.run_dir / "adapter"))
    prompt = tok.apply_chat_template(QUESTION, add_generation_prompt=True, tokenize=False)
    llm = llama_cpp.Llama(model_path=f16["path"], n_ctx=256, verbose=False, logits_all=False)
    out = llm(prompt, max_tokens=30, temperature=0.0, stop=["<|im_end|>"])["choices"][0]["text"]
    assert "Smith" in out, out

    # The CLI prints the same table.
    assert main(["export", demo_run.id, "--format", "gguf", "--quant", "q4_k_m", "--out", str(tmp_path / "q4")]) == 0


def test_export_never_replaces_a_folder_it_did_not_write(demo_run, tmp_path):
    from tunesmith.engine.errors import ExportError

    mine = tmp_path / "my-projects"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(ExportError, match="not written by a Tunesmith export"):
        export.export_run(demo_run.id, "merged", mine)
    assert (mine / "notes.txt").read_text() == "precious" and len(list(mine.iterdir())) == 1
    # Its own earlier export is replaced in place.
    first = export.export_run(demo_run.id, "adapter", tmp_path / "again")
    second = export.export_run(demo_run.id, "adapter", tmp_path / "again")
    assert first.path == second.path and (second.path / "adapter_config.json").exists()
