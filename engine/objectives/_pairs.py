"""What the preference objectives share: sequence log-probs without the logits, batches of
sequences, and the pair objective's data, batching and metrics.

    batch = collate_sequences([(ids, mask), ...], layout)      # one forward pass, any layout
    logps, n = sequence_logps(ctx, batch)                       # per sequence: sum of reply log-probs, tokens
    ref, _ = sequence_logps(ctx, batch, reference=True)         # the base (adapter off), no grad

`sequence_logps` runs the decoder once (`ctx.lm.hidden`: Tunesmith's kernels and memory
plan apply) and reads log p(target) per token through `linear_logps`: the LM head and a
log-softmax in row chunks, the logits of a chunk recomputed in backward, so the full
(tokens x vocabulary) logits never exist (a 128k vocabulary at 8k tokens would be 4 GiB in
fp32). Only the positions that have a target (the replies) go through the head: the prompt's
hidden states never meet the vocabulary (for prompts as long as replies, half the head's work).
Models whose head is not a plain Linear give logits (`ctx.lm.direct` False); those are read
directly.

Pair rows (engine.data.pairs) put chosen sides first, rejected after: `split` halves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from . import Objective
from ..training.batching import IGNORE, Layout, collate_causal

# Rows per chunk so one chunk's fp32 logits stay near 2**26 elements (256 MiB).
_CHUNK_ELEMENTS = 2**26


def _logits(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, softcap: float | None):
    """(capped fp32 logits, tanh term or None) of one chunk."""
    z = F.linear(h.to(w.dtype), w, b).float()
    if softcap is None:
        return z, None
    t = torch.tanh(z / softcap)
    return softcap * t, t


class LinearLogp(torch.autograd.Function):
    """log softmax(h W^T + b)[y] per row (0 where y == IGNORE), chunked over rows.

    Forward keeps only the log-sum-exp per row; backward recomputes each chunk's logits:
    d logp / dz = onehot(y) - softmax(z), times the incoming gradient per row.
    """

    @staticmethod
    def forward(ctx, h, w, b, y, softcap, chunk):
        n = h.shape[0]
        out = torch.zeros(n, dtype=torch.float32, device=h.device)
        lse = torch.zeros(n, dtype=torch.float32, device=h.device)
        for s in range(0, n, chunk):
            z, _ = _logits(h[s:s + chunk], w, b, softcap)
            yc = y[s:s + chunk]
            l_c = torch.logsumexp(z, dim=-1)
            picked = z.gather(1, yc.clamp(min=0).unsqueeze(1)).squeeze(1)
            out[s:s + chunk] = torch.where(yc != IGNORE, picked - l_c, torch.zeros_like(l_c))
            lse[s:s + chunk] = l_c
        ctx.save_for_backward(h, w, b, y, lse)
        ctx.softcap, ctx.chunk = softcap, chunk
        return out

    @staticmethod
    def backward(ctx, g):
        h, w, b, y, lse = ctx.saved_tensors
        softcap, chunk = ctx.softcap, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        dh = torch.empty_like(h) if need_h else None
        dw = torch.zeros_like(w, dtype=torch.float32) if need_w else None
        db = torch.zeros_like(b, dtype=torch.float32) if need_b and b is not None else None
        g = g.float() * (y != IGNORE)
        for s in range(0, h.shape[0], chunk):
            hc, yc, gc = h[s:s + chunk], y[s:s + chunk], g[s:s + chunk]
            z, t = _logits(hc, w, b, softcap)
            dz = torch.exp(z - lse[s:s + chunk, None]).mul_(-gc[:, None])
            dz.scatter_add_(1, yc.clamp(min=0).unsqueeze(1), gc.unsqueeze(1))
            if t is not None:
                dz.mul_(1 - t * t)
            dzw = dz.to(w.dtype)
            if need_h:
                dh[s:s + chunk] = (dzw @ w).to(h.dtype)
            if need_w:
                dw += (dzw.t() @ hc.to(w.dtype)).float()
            if db is not None:
                db += dz.sum(0)
        return (dh, dw.to(w.dtype) if dw is not None else None, db.to(b.dtype) if db is not None else None,
                None, None, None)


def linear_logps(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor,
                 softcap: float | None = None, chunk: int | None = None) -> torch.Tensor:
    """Per-row log-prob of `y` (N,) under the head (w, b) applied to h (N, H); 0 where y is IGNORE."""
    chunk = chunk or max(1, _CHUNK_ELEMENTS // w.shape[0])
    return LinearLogp.apply(h, w, b, y, softcap, chunk)


def linear_logps_reference(h, w, b, y, softcap=None) -> torch.Tensor:
    """The same in plain PyTorch, with the full logits (for tests)."""
    z = F.linear(h, w, b).float()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    lp = torch.log_softmax(z, -1).gather(1, y.clamp(min=0)[:, None])[:, 0]
    return torch.where(y != IGNORE, lp, torch.zeros_like(lp))


# ---------------------------------------------------------------------------
# Batches of sequences


def collate_sequences(seqs: list[tuple[list[int], list[int]]], layout: Layout) -> dict[str, Any]:
    """One forward pass over whole sequences (ids, reply mask), each its own example.

    Adds to collate_causal's batch: `seq_index` (per token of the flattened batch, which
    sequence it belongs to; len(seqs) for padding), `seq_targets` (trained targets per
    sequence), `target_rows` (flat positions that have a target, made here on the host so the
    device never syncs to find them) and `n_seq`.
    """
    rows = [{"input_ids": ids, "assistant_masks": mask} for ids, mask in seqs]
    batch = collate_causal(rows, layout)
    n = len(seqs)
    lens = torch.tensor([len(ids) for ids, _ in seqs])
    if layout.padding_free:
        idx = torch.repeat_interleave(torch.arange(n), lens)
        pad = batch["input_ids"].shape[1] - idx.shape[0]
        idx = torch.cat([idx, torch.full((pad,), n)])
    else:
        width = batch["input_ids"].shape[1]
        idx = torch.arange(n)[:, None].expand(n, width).clone()
        idx[torch.arange(width)[None, :] >= lens[:, None]] = n
        idx = idx.reshape(-1)
    tgt = batch["targets"].reshape(-1)
    counts = torch.zeros(n + 1).index_add_(0, idx, (tgt != IGNORE).float())
    batch["seq_index"] = idx
    batch["seq_targets"] = counts[:n]
    batch["target_rows"] = (tgt != IGNORE).nonzero().squeeze(1)
    batch["n_seq"] = n
    return batch


def sequence_logps(ctx, batch: dict, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the trained tokens' log-probs per sequence (n_seq,) fp32, trained tokens per sequence).

    `reference`: the base model (adapter off), under no_grad."""
    if reference:
        with ctx.reference():
            return sequence_logps(ctx, batch)
    lm = ctx.lm
    with ctx.autocast():
        hidden = lm.hidden(batch)
    tgt = batch["targets"].reshape(-1)
    h = hidden.reshape(-1, hidden.shape[-1])
    seq_index = batch["seq_index"]
    if (rows := batch.get("target_rows")) is not None:
        h, tgt, seq_index = h.index_select(0, rows), tgt.index_select(0, rows), seq_index.index_select(0, rows)
    if lm.direct:
        tok = linear_logps(h, lm.head.weight, lm.head.bias, tgt, lm.softcap)
    else:  # `hidden` holds the logits
        lp = torch.log_softmax(h.float(), -1).gather(1, tgt.clamp(min=0)[:, None])[:, 0]
        tok = torch.where(tgt != IGNORE, lp, torch.zeros_like(lp))
    n = batch["n_seq"]
    out = torch.zeros(n + 1, dtype=torch.float32, device=tok.device).index_add(0, seq_index, tok)
    return out[:n], batch["seq_targets"].to(tok.device)


def split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) halves of a per-sequence tensor of a pair batch."""
    half = t.shape[0] // 2
    return t[:half], t[half:]


# ---------------------------------------------------------------------------
# The pair objective: data, batching and the metrics dpo / orpo / simpo share


class PairObjective(Objective):
    """Base of the objectives trained on preference pairs (one row = chosen + rejected)."""

    def prepare(self, tokenizer):
        from ..data.pairs import prepare_pairs

        return prepare_pairs(self.cfg, tokenizer, self.name)

    def row_tokens(self, row: dict) -> int:
        return len(row["chosen_ids"]) + len(row["rejected_ids"])

    def items(self, row: dict) -> int:
        return 1

    def collate(self, rows, layout):
        seqs = [(r["chosen_ids"], r["chosen_mask"]) for r in rows] + [(r["rejected_ids"], r["rejected_mask"]) for r in rows]
        return collate_sequences(seqs, layout)

    @staticmethod
    def pair_sums(losses: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                  chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> dict[str, Any]:
        """Metric sums of one pass (summed over passes by the loop, read once per log step)."""
        cr, rr = chosen_rewards.detach(), rejected_rewards.detach()
        return {
            "loss_sum": losses.detach().sum(), "pairs": int(losses.shape[0]),
            "chosen_reward_sum": cr.sum(), "rejected_reward_sum": rr.sum(), "correct": (cr > rr).sum(),
            "chosen_logp_sum": chosen_logps.detach().sum(), "rejected_logp_sum": rejected_logps.detach().sum(),
        }

    def summarize(self, sums):
        n = max(sums.get("pairs", 0.0), 1.0)
        c, r = sums["chosen_reward_sum"] / n, sums["rejected_reward_sum"] / n
        return {
            "loss": sums["loss_sum"] / n, "rewards/chosen": c, "rewards/rejected": r, "rewards/margins": c - r,
            "rewards/accuracies": sums["correct"] / n, "logps/chosen": sums["chosen_logp_sum"] / n,
            "logps/rejected": sums["rejected_logp_sum"] / n, "pairs": int(sums.get("pairs", 0)),
        }
