"""On a CUDA machine: QLoRA (NF4, double quant, bf16 compute), LoRA 16-bit and full
fine-tuning all run through the same engine on a local model folder."""

from __future__ import annotations

import shutil

import pytest
import torch

from tunesmith.engine import events, infer, jobs
from tunesmith.engine.config import RunConfig

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def qwen_shaped_model(tmp_path_factory):
    """A small random Qwen2-architecture model with the demo tokenizer, saved as a local folder."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from tunesmith.engine.paths import demo_model_dir

    d = tmp_path_factory.mktemp("qwen-tiny")
    tok = AutoTokenizer.from_pretrained(demo_model_dir())
    cfg = Qwen2Config(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=True,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("method", ["qlora", "lora", "full"])
def test_method_trains_on_cuda(tunesmith_home, qwen_shaped_model, method):
    cfg = RunConfig().with_overrides([
        f"model.name_or_path={qwen_shaped_model}", f"method={method}", "training.max_steps=6",
        "training.learning_rate=1e-3" if method != "full" else "training.learning_rate=1e-4",
        "data.datasets=[identity]", f"output.run_name=gpu-{method}",
    ])
    run_id = jobs.submit(cfg)
    info = jobs.wait(run_id, timeout=600)
    assert info.status == "completed", info.error
    train = [e for e in events.read_events(info.run_dir) if e["type"] == "train"]
    assert len(train) == 6 and train[-1]["peak_mem_gb"] > 0 and train[-1]["tokens_per_s"]
    assert (info.has_full_model if method == "full" else info.has_adapter)
    # Chat answers from the run's trained weights (not the base model's), and the reply is what
    # greedy decoding of those weights gives.
    hi = [{"role": "user", "content": "hi"}]
    reply = infer.chat(run_id, hi, max_new_tokens=5)
    model, tok = infer.get_model(run_id)
    ids = infer.build_prompt_ids(tok, hi).to(model.device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        tuned_logits = model(input_ids=ids).logits[0, -1].float()
    assert reply == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    base, _ = infer.get_model(str(qwen_shaped_model))
    with torch.no_grad():
        base_logits = base(input_ids=ids.to(base.device)).logits[0, -1].float().to(tuned_logits.device)
    assert not torch.allclose(tuned_logits, base_logits, atol=1e-3), "chat used the base model, not the run"
    infer.forget()
    infos = " | ".join(e.get("message", "") for e in events.read_events(info.run_dir) if e["type"] == "info")
    if method != "full":  # the kernels applied, and their memory plan says what it chose
        assert "LoRA-fused" in infos and "memory (auto, " in infos, infos


@pytest.mark.parametrize("mode", ["speed", "memory"])
def test_kernel_memory_modes_train_on_cuda(tunesmith_home, qwen_shaped_model, mode):
    cfg = RunConfig().with_overrides([
        f"model.name_or_path={qwen_shaped_model}", "method=qlora", "training.max_steps=4",
        "data.datasets=[identity]", f"training.memory_mode={mode}", f"output.run_name=gpu-mem-{mode}",
    ])
    info = jobs.wait(jobs.submit(cfg), timeout=600)
    assert info.status == "completed", info.error
    infos = " | ".join(e.get("message", "") for e in events.read_events(info.run_dir) if e["type"] == "info")
    expected = "offloaded to CPU" if mode == "memory" else "no checkpointing"
    assert f"memory ({mode}, " in infos and expected in infos, infos
    losses = [e["loss"] for e in events.read_events(info.run_dir) if e["type"] == "train"]
    assert len(losses) == 4 and all(x == x for x in losses)
