"""Group-relative advantages and the GRPO / Dr. GRPO / DAPO loss aggregation, against hand calculations."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.engine.config import RunConfig
from tunesmith.engine.objectives.grpo import aggregate, group_advantages, policy_loss


def test_advantages_are_normalised_within_each_group():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv, std = group_advantages(r, 4)
    # group 1: mean 0.5, sample std sqrt(((.5^2)*4)/3) = sqrt(1/3)
    s = math.sqrt(1 / 3)
    want = torch.tensor([0.5, -0.5, -0.5, 0.5]) / (s + 1e-4)
    assert torch.allclose(adv[:4], want, atol=1e-5)
    assert torch.allclose(adv[4:], torch.zeros(4))  # all equal: no signal
    assert std[0].item() == pytest.approx(s, abs=1e-6) and std[1].item() == 0.0


def test_advantages_without_std_scaling_are_differences_from_the_mean():
    adv, _ = group_advantages(torch.tensor([3.0, 1.0, 2.0]), 3, scale=False)
    assert adv.tolist() == [1.0, -1.0, 0.0]


def test_policy_loss_on_policy_gradient_and_kl():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    ref = torch.tensor([[-1.0, -1.0], [-0.5, 0.0]])
    per_tok, kl, clipped = policy_loss(logp, logp.detach(), adv, mask, 0.2, 0.2, beta=0.1, ref_logp=ref)
    # ratio 1: loss = -A per token, plus beta * k3; k3(d=1) = e - 2
    k3 = math.e - 2
    assert torch.allclose(per_tok, torch.tensor([[-2.0, -2.0 + 0.1 * k3], [1.0, 0.0]]), atol=1e-6)
    assert torch.allclose(kl, torch.tensor([[0.0, k3], [0.0, 0.0]]), atol=1e-6)
    assert clipped.sum() == 0
    per_tok.sum().backward()  # d/dlogp of -ratio*A is -A at ratio 1
    assert logp.grad[0, 0].item() == pytest.approx(-2.0) and logp.grad[1, 1].item() == 0.0


def test_clipping_stops_the_gradient_beyond_the_range():
    logp = torch.tensor([[0.5]], requires_grad=True)
    per_tok, _, clipped = policy_loss(logp, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.28)
    assert per_tok.item() == pytest.approx(-1.28) and clipped.item() == 1.0  # ratio e^.5 = 1.65 > 1.28
    per_tok.sum().backward()
    assert logp.grad.item() == 0.0


def test_aggregation_of_each_loss_type():
    per_tok = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    # grpo: token mean per completion (1, 4), mean over the step's 4 completions -> (1 + 4) / 4
    assert aggregate(per_tok, mask, "grpo", 8, 4.0).item() == pytest.approx(1.25)
    # dr_grpo: token sums (4, 4) / max length 8, / 4 completions
    assert aggregate(per_tok, mask, "dr_grpo", 8, 4.0).item() == pytest.approx(0.25)
    # dapo: 8 / 5 tokens, this pass holds 2 of 4 completions
    assert aggregate(per_tok, mask, "dapo", 8, 4.0).item() == pytest.approx(0.8)


def test_settings_are_validated_with_the_field_named():
    base = {"objective": "grpo", "data": {"datasets": ["arithmetic"]}}
    cfg = RunConfig.model_validate({**base, "objective_settings": {"group_size": 8, "loss_type": "dapo",
                                                                    "rewards": [{"name": "format", "weight": 0.5}]}})
    assert cfg.objective_settings["group_size"] == 8
    with pytest.raises(ValueError, match="group_size"):
        RunConfig.model_validate({**base, "objective_settings": {"group_size": 1}})
    with pytest.raises(ValueError, match="loss_type"):
        RunConfig.model_validate({**base, "objective_settings": {"loss_type": "ppo"}})
    with pytest.raises(ValueError, match="needs a pattern"):
        RunConfig.model_validate({**base, "objective_settings": {"rewards": [{"name": "regex"}]}})


def test_min_completion_length_may_not_exceed_the_max():
    base = {"objective": "grpo", "data": {"datasets": ["arithmetic"]}}
    cfg = RunConfig.model_validate({**base, "objective_settings": {"max_completion_length": 8,
                                                                    "min_completion_length": 8}})
    assert cfg.objective_settings["min_completion_length"] == 8
    with pytest.raises(ValueError, match="min_completion_length"):
        RunConfig.model_validate({**base, "objective_settings": {"max_completion_length": 8,
                                                                 "min_completion_length": 9}})


def test_the_run_log_says_why_vllm_is_not_used(monkeypatch):
    import importlib.util

    from tunesmith.engine.objectives import grpo

    assert grpo.vllm_unused_reason("cpu") is None  # vLLM is a CUDA thing: nothing to say on a CPU
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "not installed" in grpo.vllm_unused_reason("cuda")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert "not built" in grpo.vllm_unused_reason("cuda")


def test_epsilon_high_zero_means_the_same_as_epsilon():
    # the studio's number box sends 0 when left empty
    cfg = RunConfig.model_validate({"objective": "grpo", "data": {"datasets": ["arithmetic"]},
                                    "objective_settings": {"epsilon_high": 0}})
    assert cfg.objective_settings["epsilon_high"] == 0
    from tunesmith.engine.objectives.grpo import GRPOSettings

    assert GRPOSettings(epsilon_high="").epsilon_high is None
