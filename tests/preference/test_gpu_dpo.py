"""On a CUDA machine: DPO with QLoRA goes through Tunesmith's kernels and memory plan, policy and
reference alike (the reference = the same patched layers with the adapter switched off).

    pytest tests/preference/test_gpu_dpo.py -m gpu
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from tunesmith.engine.config import RunConfig
from tunesmith.engine.events import EventWriter, read_events
from tunesmith.engine.trainer import Recipe
from tunesmith.engine.training.batching import IGNORE

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """A small random Llama with the demo tokenizer (an architecture the kernels patch)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tunesmith.engine.paths import demo_model_dir

    d = tmp_path_factory.mktemp("llama-small")
    tok = AutoTokenizer.from_pretrained(demo_model_dir())
    cfg = LlamaConfig(hidden_size=512, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=2, vocab_size=len(tok), tie_word_embeddings=False,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_qlora_dpo_runs_on_the_kernels_with_the_base_as_reference(tmp_path, tunesmith_home, llama_folder):
    from tunesmith.engine.objectives._pairs import sequence_logps
    from tunesmith.engine.training.lm import StepContext

    cfg = RunConfig().with_overrides([
        f"model.name_or_path={llama_folder}", "objective=dpo", "method=qlora", "data.datasets=[preference_pairs]",
        "training.max_steps=4", "training.batch_size=4", "training.learning_rate=1e-3", "training.logging_steps=1",
        "training.save_steps=1000", "kernels=auto"])
    recipe = Recipe(cfg, tmp_path, EventWriter(tmp_path), lambda: False)
    recipe.setup()
    assert recipe.train() == "completed"
    evs = read_events(tmp_path)
    notes = " ".join(e.get("message", "") for e in evs if e["type"] == "info")
    assert "kernels:" in notes and "memory (" in notes, notes  # patched, and a memory plan chosen
    train = [e for e in evs if e["type"] == "train"]
    assert len(train) == 4 and train[-1]["tokens_per_s"] > 0
    assert abs(train[0]["rewards/margins"]) < 1e-3  # step 1: policy == reference through the same kernels

    # The reference pass (adapter off, patched layers, cached NF4 weights) gives the log-probs of the
    # stock base model: the same folder loaded by transformers + bitsandbytes, no kernels.
    ctx = StepContext(recipe.model, recipe.lm, torch.device("cuda"),
                      lambda: torch.autocast("cuda", dtype=torch.bfloat16))
    batch = recipe._to_device(recipe.objective.collate(recipe.train_rows[:2], recipe.layout), torch.device("cuda"))
    ref, _ = sequence_logps(ctx, batch, reference=True)
    recipe.cleanup()
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    stock = AutoModelForCausalLM.from_pretrained(str(llama_folder), quantization_config=q, dtype=torch.bfloat16,
                                                 device_map={"": 0}).eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = stock(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       use_cache=False).logits[0].float()
    tgt = batch["targets"][0]
    tok = logits.log_softmax(-1).gather(1, tgt.clamp(min=0)[:, None])[:, 0] * (tgt != IGNORE)
    want = torch.zeros(batch["n_seq"] + 1, device="cuda").index_add(0, batch["seq_index"], tok)[:-1]
    torch.testing.assert_close(ref, want, atol=0.5, rtol=2e-2)  # bf16 sums over replies of ~100 tokens
