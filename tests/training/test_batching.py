"""Batching: padding-free and padded passes give the same loss and gradients; best-fit-decreasing
packing fills >= 98% of each row on a chat-like length distribution."""

from __future__ import annotations

import random

import pytest
import torch

from tunesmith.engine.data.packing import pack_best_fit
from tunesmith.engine.training.batching import (
    Layout,
    best_fit_decreasing,
    collate_causal,
    epoch_order,
    fill_ratio,
    forward_groups,
    trained_tokens,
)
from tunesmith.engine.training.lm import CausalLM


def tiny_llama(attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256, attn_implementation=attn, use_cache=False)
    return LlamaForCausalLM(cfg)


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    g = random.Random(seed)
    rows = []
    for _ in range(n):
        k = g.randint(3, 40)
        ids = [g.randrange(1, 61) for _ in range(k)]
        p = g.randint(1, k - 1)
        rows.append({"input_ids": ids, "assistant_masks": [0] * p + [1] * (k - p)})
    return rows


def step_loss(model, rows, layout, capacity=None, rows_per_pass=3):
    """Loss and LoRA-free grads of one optimizer step over `rows`, split into passes."""
    lm = CausalLM(model)
    model.zero_grad()
    denom = sum(trained_tokens(r) for r in rows)
    total = 0.0
    groups = forward_groups([len(r["input_ids"]) for r in rows], capacity, rows_per_pass)
    for g in groups:
        batch = collate_causal([rows[i] for i in g], layout)
        assert batch["n_targets"] == sum(trained_tokens(rows[i]) for i in g)
        loss, loss_sum, _ = lm.token_loss(lm.hidden(batch), batch["targets"], denom)
        loss.backward()
        total += float(loss.detach())
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return total, grads, len(groups)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_equals_padded(attn):
    model = tiny_llama(attn)
    rows = chat_rows(7)
    padded, g_pad, _ = step_loss(model, rows, Layout(padding_free=False))
    free, g_free, n_free = step_loss(model, rows, Layout(padding_free=True), capacity=120)
    bucket, g_bucket, _ = step_loss(model, rows, Layout(padding_free=True, pad_to=200), capacity=120)
    assert n_free < 7
    assert free == pytest.approx(padded, rel=1e-5) and bucket == pytest.approx(padded, rel=1e-5)
    torch.testing.assert_close(g_free, g_pad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(g_bucket, g_pad, atol=1e-5, rtol=1e-4)


def test_packed_rows_give_the_unpacked_loss_in_both_layouts():
    model = tiny_llama()
    rows = chat_rows(9, seed=3)
    cols = pack_best_fit(((r["input_ids"], r["assistant_masks"]) for r in rows), max_len=64)
    packed = [{"input_ids": i, "assistant_masks": m, "seq_lengths": s}
              for i, m, s in zip(cols["input_ids"], cols["assistant_masks"], cols["seq_lengths"])]
    assert len(packed) < len(rows)
    ref, _, _ = step_loss(model, rows, Layout(padding_free=False))
    free, _, _ = step_loss(model, packed, Layout(padding_free=True), capacity=128, rows_per_pass=2)
    padded, _, _ = step_loss(model, packed, Layout(padding_free=False), rows_per_pass=2)
    assert free == pytest.approx(ref, rel=1e-5) and padded == pytest.approx(ref, rel=1e-5)


def test_no_example_sees_its_neighbour():
    """Guard that the equality above means something: without restarting positions, the loss moves."""
    model = tiny_llama()
    rows = chat_rows(4, seed=5)
    lm = CausalLM(model)
    batch = collate_causal(rows, Layout(padding_free=True))
    with torch.no_grad():
        apart = float(lm.token_loss(lm.hidden(batch), batch["targets"], 1.0)[0])
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None]
        leaked = float(lm.token_loss(lm.hidden(batch), batch["targets"], 1.0)[0])
    assert abs(apart - leaked) > 1e-3


def lognormal_lengths(n: int, cutoff: int, seed: int = 0) -> list[int]:
    g = random.Random(seed)
    return [min(cutoff, max(8, int(g.lognormvariate(5.8, 0.75)))) for _ in range(n)]  # median ~330


def test_best_fit_decreasing_fills_rows():
    cutoff = 2048
    lengths = lognormal_lengths(2000, cutoff)
    bins = best_fit_decreasing(lengths, cutoff)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= cutoff for b in bins)
    assert fill_ratio(lengths, bins, cutoff) >= 0.98, fill_ratio(lengths, bins, cutoff)


def test_pack_best_fit_keeps_every_token():
    g = random.Random(1)
    lengths = lognormal_lengths(300, 1024, seed=2)
    rows = [([g.randrange(100) for _ in range(n)], [g.randint(0, 1) for _ in range(n)]) for n in lengths]
    cols = pack_best_fit(rows, 1024)
    assert sum(map(len, cols["input_ids"])) == sum(lengths)
    assert all(len(r) <= 1024 and sum(s) == len(r) for r, s in zip(cols["input_ids"], cols["seq_lengths"]))
    assert all(p[0] == 0 for p in cols["position_ids"])
    assert sum(map(len, cols["input_ids"])) / (len(cols["input_ids"]) * 1024) >= 0.98


def test_epoch_order_is_a_seeded_permutation_and_groups_lengths():
    a, b = epoch_order(50, 7, 0), epoch_order(50, 7, 0)
    assert a == b and sorted(a) == list(range(50)) and a != epoch_order(50, 7, 1)
    lengths = list(range(50))
    grouped = epoch_order(50, 7, 0, lengths=lengths, group=10)
    assert sorted(grouped) == list(range(50))
    for s in range(0, 50, 10):
        win = [lengths[i] for i in grouped[s:s + 10]]
        assert win == sorted(win, reverse=True)
