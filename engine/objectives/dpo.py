"""dpo: Direct Preference Optimization on prompt / chosen / rejected pairs.

The policy (the model with its adapter) learns to prefer the chosen reply over the rejected
one more than the reference does; the reference is the same model with the adapter
switched off (`ctx.reference()`), so no second copy of the weights is held. Both sides of a
pair go through one forward pass (padding-free: end to end); reference log-probs come from
a second, no-grad pass over the same batch.

    h = beta * [(log pi(c) - log ref(c)) - (log pi(r) - log ref(r))]
    sigmoid: -log sigmoid(h)                   (Rafailov et al. 2023; label_smoothing: cDPO)
    hinge:   max(0, 1 - h)                     (SLiC)
    ipo:     (h / beta - 1 / (2 beta))^2 with log-probs averaged per reply token (Azar et al.
             2023; TRL's normalisation)
    + sft_weight x the chosen reply's mean token NLL (RPO), when set

These are TRL's DPOTrainer formulas (tests/preference/test_losses.py checks them on tiny
tensors). Metrics: rewards/chosen = beta (log pi(c) - log ref(c)), rewards/rejected,
rewards/margins, rewards/accuracies (share of pairs with chosen reward > rejected).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from . import register
from ._pairs import PairObjective, sequence_logps, split


class DPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="How strongly the base model holds the policy back: lower lets it move "
                        "further from the base (0.1 is the usual start; 0.01-0.5).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid = the original DPO loss; ipo = squared loss that resists overfitting "
        "small sets; hinge = SLiC's margin loss.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Share of pairs assumed mislabelled (conservative "
                                   "DPO, sigmoid only); 0 trusts every pair.")
    reference: Literal["base", "none"] = Field(
        "base", title="Reference model", description="base = the model with the adapter switched off (no extra memory); none = "
        "reference-free (log-ratios against zero).")
    sft_weight: float = Field(0.0, ge=0, title="SFT weight", description="Also learn the chosen reply by example with this weight (RPO); "
                              "0 = off.")


def dpo_losses(pc, pr, rc, rr, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
               nc=None, nr=None):
    """(per-pair losses, chosen rewards, rejected rewards) from summed log-probs of the policy (pc, pr)
    and the reference (rc, rr); nc / nr (reply tokens) are needed for ipo."""
    chosen, rejected = pc - rc, pr - rr
    delta = chosen - rejected
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * delta) * (1 - label_smoothing) - F.logsigmoid(-beta * delta) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * delta)
    elif loss_type == "ipo":
        d = chosen / nc.clamp(min=1.0) - rejected / nr.clamp(min=1.0)
        losses = (d - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    return losses, beta * chosen.detach(), beta * rejected.detach()


@register
class DPO(PairObjective):
    name = "dpo"
    description = ("Prefer A over B (DPO): learn from pairs of a better and a worse reply, kept close to the base "
                   "model; the usual pick when you have such pairs.")
    Settings = DPOSettings
    needs_reference = True

    def __init__(self, cfg, settings=None):
        super().__init__(cfg, settings)
        if self.settings.reference == "base" and cfg.method == "full":
            from ..errors import ConfigError

            raise ConfigError("objective dpo with reference: base needs method lora or qlora (the base model is the "
                              "adapter switched off; full fine-tuning keeps no frozen copy). Pick lora/qlora, or set "
                              "objective_settings.reference: none.")

    def loss(self, ctx, batch, denom):
        s = self.settings
        logps, ntok = sequence_logps(ctx, batch)
        if s.reference == "base":
            ref, _ = sequence_logps(ctx, batch, reference=True)
        else:
            ref = torch.zeros_like(logps)
        (pc, pr), (rc, rr), (nc, nr) = split(logps), split(ref), split(ntok)
        losses, cr, rj = dpo_losses(pc, pr, rc, rr, s.beta, s.loss_type, s.label_smoothing, nc, nr)
        total = losses
        if s.sft_weight:
            total = total + s.sft_weight * (-pc / nc.clamp(min=1.0))
        return total.sum() / denom, self.pair_sums(total, cr, rj, pc, pr)
