"""orpo: Odds Ratio Preference Optimization (Hong et al. 2024), no reference model.

One loss teaches the chosen reply by example and, with weight beta (the paper's lambda),
raises its odds over the rejected one's:

    log odds(y) = log p(y) - log(1 - p(y)),  p(y) = exp(mean token log-prob of y)
    loss = NLL(chosen) - beta * log sigmoid(log odds(c) - log odds(r))

as TRL's ORPOTrainer.odds_ratio_loss (tests/preference/test_losses.py compares). NLL(chosen)
is each pair's mean token NLL, averaged over pairs (TRL averages over all chosen tokens of a
batch; equal when replies have the same length), so the loss of a step does not depend on
how it is split into passes. Metrics: rewards/* = beta x mean token log-prob, plus
log_odds_ratio and nll.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from . import register
from ._pairs import PairObjective, sequence_logps, split


class ORPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="Weight of the preference term against learning the chosen reply "
                        "(the paper's lambda; 0.1 is the usual value).")


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable at both ends."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_odds_ratio(ac, ar, beta: float):
    """(beta * log sigmoid(log odds ratio) per pair, log odds) from mean token log-probs ac / ar."""
    ac, ar = ac.float(), ar.float()
    log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
    return beta * F.logsigmoid(log_odds), log_odds


@register
class ORPO(PairObjective):
    name = "orpo"
    description = ("Prefer A over B (ORPO): learn the better reply and push away the worse in one step, no "
                   "reference model; for pairs on a model not taught by example first.")
    Settings = ORPOSettings

    def loss(self, ctx, batch, denom):
        beta = self.settings.beta
        logps, ntok = sequence_logps(ctx, batch)
        (pc, pr), (nc, nr) = split(logps), split(ntok)
        ac, ar = pc / nc.clamp(min=1.0), pr / nr.clamp(min=1.0)
        ratio, log_odds = orpo_odds_ratio(ac, ar, beta)
        nll = -ac
        losses = nll - ratio
        sums = self.pair_sums(losses, beta * ac.detach(), beta * ar.detach(), pc, pr)
        sums["log_odds_sum"] = log_odds.detach().sum()
        sums["nll_sum"] = nll.detach().sum()
        return losses.sum() / denom, sums

    def summarize(self, sums):
        out = super().summarize(sums)
        n = max(sums.get("pairs", 0.0), 1.0)
        out["log_odds_ratio"] = sums["log_odds_sum"] / n
        out["nll"] = sums["nll_sum"] / n
        return out
