"""simpo: Simple Preference Optimization (Meng et al. 2024), no reference model.

The reward of a reply is beta x its mean token log-prob; the chosen reply should beat the
rejected one by a margin gamma:

    loss = -log sigmoid(beta * (mean logp(c) - mean logp(r)) - gamma)

(label_smoothing mixes in the flipped term), plus sft_weight x the chosen reply's mean
token NLL when set (CPO's alpha). These are TRL's CPOTrainer formulas with loss_type
"simpo" (tests/preference/test_losses.py compares). Metrics as dpo; rewards/* are beta x
mean token log-probs.
"""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from . import register
from ._pairs import PairObjective, sequence_logps, split


class SimPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(2.0, gt=0, description="Scale of the length-normalised reward (the paper uses 2.0-2.5).")
    gamma: float = Field(0.5, ge=0, description="Margin by which the chosen reward should beat the rejected one "
                         "(0.5-1.5 in the paper).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Share of pairs assumed mislabelled; 0 trusts every "
                                   "pair.")
    sft_weight: float = Field(0.0, ge=0, title="SFT weight", description="Also learn the chosen reply by example with this weight; 0 = off.")


def simpo_losses(ac, ar, beta: float, gamma: float, label_smoothing: float = 0.0):
    """Per-pair losses from mean token log-probs ac / ar (chosen / rejected)."""
    logits = (ac - ar) - gamma / beta
    return -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing


@register
class SimPO(PairObjective):
    name = "simpo"
    description = ("Prefer A over B (SimPO): length-normalised preference with a margin, no reference model; "
                   "pairs at less time and memory than DPO.")
    Settings = SimPOSettings

    def loss(self, ctx, batch, denom):
        s = self.settings
        logps, ntok = sequence_logps(ctx, batch)
        (pc, pr), (nc, nr) = split(logps), split(ntok)
        ac, ar = pc / nc.clamp(min=1.0), pr / nr.clamp(min=1.0)
        losses = simpo_losses(ac, ar, s.beta, s.gamma, s.label_smoothing)
        if s.sft_weight:
            losses = losses + s.sft_weight * (-ac)
        return losses.sum() / denom, self.pair_sums(losses, s.beta * ac.detach(), s.beta * ar.detach(), pc, pr)
