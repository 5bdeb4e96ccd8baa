"""kto: Kahneman-Tversky Optimization (Ethayarajh et al. 2024) on replies labelled desirable
or undesirable, no pairs needed.

    r(y)  = log pi(y) - log ref(y)        (ref: the adapter switched off, no second copy)
    z     = max(0, mean over the pass of r(y') for mismatched prompt / reply pairs)   (no grad)
    desirable:   w_d * (1 - sigmoid(beta * (r(y) - z)))
    undesirable: w_u * (1 - sigmoid(beta * (z - r(y))))

averaged over rows: TRL's KTOTrainer formulas (tests/preference/test_losses.py compares).
The KL estimate z pairs each row's prompt with the next row's reply within the forward pass
(TRL cycles completions within a batch the same way), so it needs at least two rows per
pass; with `kl: none` z = 0 (cheaper: two forward passes instead of four).

Data: KTO rows (a true/false label per reply; LLaMA-Factory `kto_tag`) or preference pairs,
unpaired. Metrics: rewards/chosen (mean beta r over desirable rows), rewards/rejected (over
undesirable rows), rewards/margins, kl.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from . import Objective, register
from ._pairs import collate_sequences, sequence_logps


class KTOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="How strongly the base model holds the policy back: lower lets it move "
                        "further (0.1 is the usual start).")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of rows labelled good; raise it when good rows are "
                                    "fewer than bad ones.")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of rows labelled bad; raise it when bad rows are "
                                      "fewer than good ones.")
    kl: Literal["batch", "none"] = Field("batch", title="KL term", description="batch = estimate the KL term from mismatched prompt / "
                                         "reply pairs of each pass (as the paper); none = skip it (faster).")


def kto_losses(policy, ref, labels, kl, beta: float, desirable_weight: float = 1.0, undesirable_weight: float = 1.0):
    """(per-row losses, per-row rewards beta * (policy - ref)) for summed log-probs and 0/1 labels."""
    ratio = policy - ref
    good = labels.bool()
    losses = torch.where(good, desirable_weight * (1 - torch.sigmoid(beta * (ratio - kl))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratio))))
    return losses, beta * ratio.detach()


@register
class KTO(Objective):
    name = "kto"
    description = ("Good or bad examples (KTO): learn from replies marked desirable or undesirable, no pairs "
                   "needed; for thumbs-up / thumbs-down feedback.")
    Settings = KTOSettings
    needs_reference = True

    def __init__(self, cfg, settings=None):
        super().__init__(cfg, settings)
        if cfg.method == "full":
            from ..errors import ConfigError

            raise ConfigError("objective kto needs method lora or qlora: its reference is the base model with the "
                              "adapter switched off, and full fine-tuning keeps no frozen copy.")

    def prepare(self, tokenizer):
        from ..data.pairs import prepare_unpaired

        train, val = prepare_unpaired(self.cfg, tokenizer)
        if self.settings.kl == "batch" and self.cfg.training.batch_size < 2 and not self.cfg.training.tokens_per_forward:
            import logging

            logging.getLogger(__name__).warning("kto: training.batch_size 1 gives one row per forward pass, so the KL "
                                                "term is estimated from a row with itself; use batch_size >= 2")
        return train, val

    def items(self, row):
        return 1

    def collate(self, rows, layout):
        seqs = [(r["input_ids"], r["assistant_masks"]) for r in rows]
        batch = collate_sequences(seqs, layout)
        batch["labels"] = torch.tensor([r["label"] for r in rows])
        if self.settings.kl == "batch":
            # prompt of row i + reply of row i+1 (mod n): the mismatched pairs of the KL estimate
            kl = []
            for i, r in enumerate(rows):
                o = rows[(i + 1) % len(rows)]
                p, q = r["prompt_len"], o["prompt_len"]
                ids = list(r["input_ids"][:p]) + list(o["input_ids"][q:])
                mask = [0] * p + list(o["assistant_masks"][q:])
                kl.append((ids, mask))
            # a permutation of the same replies: the same total length, so a fixed pass size still fits
            batch["kl_batch"] = collate_sequences(kl, layout)
        return batch

    def loss(self, ctx, batch, denom):
        s = self.settings
        logps, _ = sequence_logps(ctx, batch)
        ref, _ = sequence_logps(ctx, batch, reference=True)
        kl = torch.zeros((), device=logps.device)
        if "kl_batch" in batch:
            with torch.no_grad():
                kp, _ = sequence_logps(ctx, batch["kl_batch"])
                kr, _ = sequence_logps(ctx, batch["kl_batch"], reference=True)
                kl = (kp - kr).mean().clamp(min=0)
        labels = batch["labels"].to(logps.device)
        losses, rewards = kto_losses(logps, ref, labels, kl, s.beta, s.desirable_weight, s.undesirable_weight)
        good = labels.bool()
        sums = {
            "loss_sum": losses.detach().sum(), "rows": int(labels.shape[0]), "good": int(good.sum()),
            "chosen_reward_sum": rewards[good].sum(), "rejected_reward_sum": rewards[~good].sum(),
            "chosen_logp_sum": logps.detach()[good].sum(), "rejected_logp_sum": logps.detach()[~good].sum(),
            "kl_sum": kl.detach(), "passes": 1,
        }
        return losses.sum() / denom, sums

    def summarize(self, sums):
        n = max(sums.get("rows", 0.0), 1.0)
        g = sums.get("good", 0.0)
        b = sums.get("rows", 0.0) - g
        out = {"loss": sums["loss_sum"] / n, "kl": sums["kl_sum"] / max(sums.get("passes", 0.0), 1.0),
               "rows": int(sums.get("rows", 0))}
        c = sums["chosen_reward_sum"] / g if g else None
        r = sums["rejected_reward_sum"] / b if b else None
        if c is not None:
            out["rewards/chosen"] = c
            out["logps/chosen"] = sums["chosen_logp_sum"] / g
        if r is not None:
            out["rewards/rejected"] = r
            out["logps/rejected"] = sums["rejected_logp_sum"] / b
        if c is not None and r is not None:
            out["rewards/margins"] = c - r
        return out
