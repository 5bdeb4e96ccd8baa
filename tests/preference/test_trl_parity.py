"""Tunesmith's DPO loss equals TRL's DPOTrainer on the same model and batch.

TRL's DPOTrainer (1.16) is built on the demo model with a LoRA adapter whose weights are not
zero (so the policy differs from the base); TRL's own collated batch goes through
Tunesmith's sequence log-probs (adapter on) and reference (adapter off, ctx.reference())
and dpo_losses. TRL is given the base model's log-probs as its precomputed reference
(computed here with a plain transformers forward under disable_adapter), because a PEFT
model handed to TRL with a trained adapter makes TRL use a copy of that adapter as the
reference; Tunesmith's reference is the base, which equals the initial policy of a fresh
LoRA run.
"""

from __future__ import annotations

import contextlib

import pytest
import torch




@pytest.fixture(scope="module")
def trl_setup(tmp_path_factory):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tunesmith.engine.models import resolve_model_path

    path = resolve_model_path("tunesmith/demo")
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                             init_lora_weights=False, lora_dropout=0.0))
    ds = Dataset.from_list([
        {"prompt": "What is 2+2?", "chosen": " 4, of course.", "rejected": " 5 I think"},
        {"prompt": "Capital of France?", "chosen": " Paris.", "rejected": " Lyon is the capital of France."},
        {"prompt": "Say hi", "chosen": " Hi there!", "rejected": " no"},
    ])
    args = DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=3, beta=0.1,
                     report_to=[], use_cpu=True, max_length=None, precompute_ref_log_probs=True)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    model.train()
    return trainer, model, batch


def _plain_logps(model, batch) -> torch.Tensor:
    """Summed completion log-probs per row from model(...).logits (no Tunesmith code)."""
    ids, att, cm = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    z = model(input_ids=ids, attention_mask=att).logits.float().log_softmax(-1)
    lp = z[:, :-1].gather(2, ids[:, 1:, None])[..., 0]
    return (lp * cm[:, 1:]).sum(1)


@pytest.mark.parametrize("loss_type,beta", [("sigmoid", 0.1), ("hinge", 0.3), ("ipo", 0.5)])
def test_dpo_loss_equals_trl_dpotrainer(trl_setup, loss_type, beta):
    from tunesmith.engine.objectives._pairs import collate_sequences, sequence_logps, split
    from tunesmith.engine.objectives.dpo import dpo_losses
    from tunesmith.engine.training.batching import Layout
    from tunesmith.engine.training.lm import CausalLM, StepContext

    trainer, model, batch = trl_setup
    with torch.no_grad(), model.disable_adapter():
        base = _plain_logps(model, batch)
    batch = dict(batch)
    batch["ref_chosen_logps"], batch["ref_rejected_logps"] = base.chunk(2)
    trainer.beta, trainer.loss_types, trainer.loss_weights = beta, [loss_type], [1.0]
    trl_loss = trainer.compute_loss(model, batch)

    seqs = []
    for i in range(batch["input_ids"].shape[0]):
        keep = batch["attention_mask"][i].bool()
        seqs.append((batch["input_ids"][i][keep].tolist(), batch["completion_mask"][i][keep].tolist()))
    ctx = StepContext(model, CausalLM(model), torch.device("cpu"), contextlib.nullcontext)
    for layout in (Layout(padding_free=True), Layout(padding_free=False)):
        b = collate_sequences(seqs, layout)
        logps, ntok = sequence_logps(ctx, b)
        ref, _ = sequence_logps(ctx, b, reference=True)
        torch.testing.assert_close(ref, base, atol=1e-4, rtol=1e-5)  # the reference is the base model
        assert not torch.allclose(logps, ref)  # and the adapter really was on for the policy
        (pc, pr), (rc, rr), (nc, nr) = split(logps), split(ref), split(ntok)
        mine = dpo_losses(pc, pr, rc, rr, beta, loss_type, 0.0, nc, nr)[0].mean()
        torch.testing.assert_close(mine, trl_loss.detach(), atol=1e-5, rtol=1e-4)
        # gradients agree too (the chunked log-prob op's backward against TRL's autograd)
        g_mine = torch.autograd.grad(mine, [p for p in model.parameters() if p.requires_grad])
        g_trl = torch.autograd.grad(trainer.compute_loss(model, batch),
                                    [p for p in model.parameters() if p.requires_grad])
        for a, e in zip(g_mine, g_trl):
            torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-3)
