"""Each preference loss against a reference on tiny tensors: TRL's own functions where TRL has
one that can be called alone (ORPO's odds_ratio_loss, CPO's simpo loss), TRL's formulas
otherwise (DPO and KTO are inline in TRL's trainers; test_trl_parity.py runs DPOTrainer itself).
The chunked log-prob op against full logits, values and gradients."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from tunesmith.engine.objectives._pairs import IGNORE, linear_logps, linear_logps_reference
from tunesmith.engine.objectives.dpo import dpo_losses
from tunesmith.engine.objectives.kto import kto_losses
from tunesmith.engine.objectives.orpo import orpo_odds_ratio
from tunesmith.engine.objectives.reward import reward_losses
from tunesmith.engine.objectives.simpo import simpo_losses


def _logps(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [-(torch.rand(n, generator=g, dtype=torch.float64) * 20 + 1) for _ in range(4)]


@pytest.mark.parametrize("rows,vocab,chunk,softcap,bias", [(37, 50, 8, None, False), (16, 33, 5, 30.0, True),
                                                           (9, 17, 64, None, True)])
def test_linear_logps_matches_full_logits(rows, vocab, chunk, softcap, bias):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(rows, 12, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, 12, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(vocab, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    y = torch.randint(0, vocab, (rows,), generator=g)
    y[::3] = IGNORE
    up = torch.randn(rows, generator=g, dtype=torch.float64)
    got = linear_logps(h, w, b, y, softcap, chunk)
    want = linear_logps_reference(h, w, b, y, softcap)
    torch.testing.assert_close(got.double(), want.double(), atol=1e-5, rtol=1e-5)
    assert torch.all(got[::3] == 0)
    params = [h, w] + ([b] if bias else [])
    g1 = torch.autograd.grad((got * up).sum(), params)
    g2 = torch.autograd.grad((want * up).sum(), params)
    for a, e in zip(g1, g2):
        torch.testing.assert_close(a.double(), e.double(), atol=1e-5, rtol=1e-5)


def _trl_dpo(pc, pr, rc, rr, beta, loss_type, ls, nc, nr):
    # TRL 1.16 DPOTrainer._compute_loss, reverse_kl branch, copied formula by formula
    chosen_scores, rejected_scores = pc - rc, pr - rr
    delta_score = chosen_scores - rejected_scores
    if loss_type == "sigmoid":
        return -F.logsigmoid(beta * delta_score)
    if loss_type == "cdpo":  # conservative DPO (label smoothing), as TRL CPOTrainer sigmoid and DPO before 1.0
        return -F.logsigmoid(beta * delta_score) * (1 - ls) - F.logsigmoid(-beta * delta_score) * ls
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta_score)
    if loss_type == "ipo":
        ipo_delta = chosen_scores / nc.clamp(min=1.0) - rejected_scores / nr.clamp(min=1.0)
        return (ipo_delta - 1 / (2 * beta)) ** 2


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_losses_match_trl(loss_type, beta):
    pc, pr, rc, rr = _logps()
    nc, nr = torch.arange(1.0, 7.0), torch.arange(3.0, 9.0)
    losses, cr, rj = dpo_losses(pc, pr, rc, rr, beta, loss_type, 0.0, nc, nr)
    torch.testing.assert_close(losses, _trl_dpo(pc, pr, rc, rr, beta, loss_type, 0.0, nc, nr))
    torch.testing.assert_close(cr, beta * (pc - rc))
    torch.testing.assert_close(rj, beta * (pr - rr))


def test_dpo_label_smoothing_is_conservative_dpo():
    pc, pr, rc, rr = _logps(seed=3)
    losses, _, _ = dpo_losses(pc, pr, rc, rr, 0.2, "sigmoid", 0.1)
    torch.testing.assert_close(losses, _trl_dpo(pc, pr, rc, rr, 0.2, "cdpo", 0.1, None, None))
    # the plain loss falls as the policy prefers chosen more; smoothing bounds the push
    assert dpo_losses(pc + 5, pr, rc, rr, 0.2)[0].mean() < dpo_losses(pc, pr, rc, rr, 0.2)[0].mean()


def _trainer_self(**kw):
    return types.SimpleNamespace(accelerator=types.SimpleNamespace(device=torch.device("cpu")), **kw)


def test_orpo_matches_trl_odds_ratio_loss():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    pc, pr, _, _ = _logps(seed=4)
    ac, ar = pc / 10, pr / 12  # mean token log-probs
    ratio, log_odds = orpo_odds_ratio(ac, ar, 0.1)
    losses, cr, rj, mean_ratio, mean_log_odds = ORPOTrainer.odds_ratio_loss(_trainer_self(beta=0.1), ac, ar)
    torch.testing.assert_close(ratio, losses.to(ratio.dtype))
    torch.testing.assert_close(log_odds.mean(), mean_log_odds.to(log_odds.dtype))


@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_simpo_matches_trl_cpo_loss(ls):
    from trl.experimental.cpo.cpo_trainer import CPOTrainer

    pc, pr, _, _ = _logps(seed=5)
    ac, ar = pc / 7, pr / 9
    me = simpo_losses(ac, ar, beta=2.0, gamma=0.7, label_smoothing=ls)
    trl_losses, _, _ = CPOTrainer.cpo_loss(
        _trainer_self(beta=2.0, simpo_gamma=0.7, label_smoothing=ls, loss_type="simpo", alpha=0.0), ac, ar)
    torch.testing.assert_close(me, trl_losses)


def test_kto_losses_match_trl():
    policy, ref, kl_p, kl_r = _logps(8, seed=6)
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0])
    kl = (kl_p - kl_r).mean().clamp(min=0)
    losses, rewards = kto_losses(policy, ref, labels, kl, 0.1, 1.5, 0.7)
    # TRL 1.16 KTOTrainer._compute_loss (loss_type "kto"): desirable rows first, then undesirable
    good = labels.bool()
    chosen_losses = 1 - F.sigmoid(0.1 * ((policy - ref)[good] - kl))
    rejected_losses = 1 - F.sigmoid(0.1 * (kl - (policy - ref)[~good]))
    trl = torch.cat((1.5 * chosen_losses, 0.7 * rejected_losses))
    torch.testing.assert_close(losses.mean(), trl.mean())
    torch.testing.assert_close(losses[good], 1.5 * chosen_losses)
    torch.testing.assert_close(rewards, 0.1 * (policy - ref))


def test_reward_loss_is_bradley_terry():
    sc, sr, _, _ = _logps(seed=7)
    # TRL RewardTrainer: -logsigmoid(chosen - rejected) + coef * mean((chosen + rejected)^2)
    torch.testing.assert_close(reward_losses(sc, sr).mean(), -F.logsigmoid(sc - sr).mean())
    torch.testing.assert_close(reward_losses(sc, sr, 0.01).mean(),
                               -F.logsigmoid(sc - sr).mean() + 0.01 * torch.mean((sc + sr) ** 2))
