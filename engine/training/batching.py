"""From dataset rows to forward passes.

A row is a dict with `input_ids`, `assistant_masks` (1 = trained token) and, for packed
rows, `seq_lengths` (the examples inside it). Targets are made per example: token t is
trained to predict token t+1 of the same example when that token is trained, so no example
ever learns from its neighbour, in either layout:

- padding-free (default): every row of a forward pass is laid end to end in ONE sequence of
  shape (1, T) with position_ids restarting at 0 for each example and no attention_mask.
  transformers turns restarting position ids into a block-diagonal causal mask (sdpa,
  eager) or cu_seqlens (flash-attention varlen), so examples do not attend to each other and
  no compute is spent on padding. `pad_to` pads the sequence to a fixed length with a
  padding "example" of its own (never trained): a few fixed shapes let the kernels' CUDA
  graphs replay on real data (kernels/layer_graphs.py re-captures on every new shape).
- padded: (B, longest row) with an attention mask; packed rows get a 4-D block-diagonal
  mask. For attention code that ignores position ids. Same targets, same loss.

`best_fit_decreasing` fills bins of a token capacity: data.packing uses it to build rows of
up to cutoff_len tokens (>= 98% full on chat-like length distributions, where greedy
in-order packing fills 81-88%), and the trainer uses it to form the forward passes of one
optimizer step.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass
from typing import Sequence

IGNORE = -100


@dataclass(frozen=True)
class Layout:
    padding_free: bool = True
    pad_to: int | None = None  # padding-free only: pad the flat sequence to exactly this many tokens
    pad_id: int = 0
    # padding-free only: cu_seq_lens (cumulative example lengths, for varlen attention) padded with
    # empty examples to this many entries + 1, so its shape stays fixed for CUDA graphs
    cu_slots: int | None = None


def segments(row: dict) -> list[int]:
    lens = row.get("seq_lengths")
    return list(lens) if lens else [len(row["input_ids"])]


def targets(ids: Sequence[int], mask: Sequence[int], lens: Sequence[int]) -> list[int]:
    """Next-token targets per example (IGNORE where untrained and at each example's last token)."""
    out: list[int] = []
    start = 0
    for n in lens:
        for t in range(start, start + n - 1):
            out.append(ids[t + 1] if mask[t + 1] else IGNORE)
        out.append(IGNORE)
        start += n
    return out


def trained_tokens(row: dict) -> int:
    """How many targets the row has (the SFT loss denominator), from host lists."""
    mask, start, n_tr = row["assistant_masks"], 0, 0
    for n in segments(row):
        n_tr += sum(mask[start + 1:start + n])
        start += n
    return n_tr


def collate_causal(rows: list[dict], layout: Layout) -> dict:
    """CPU tensors for one forward pass: input_ids, position_ids, targets (already shifted),
    attention_mask in the padded layout; plus host ints n_tokens (real input tokens) and
    n_targets (trained targets)."""
    import torch

    n_tokens = sum(len(r["input_ids"]) for r in rows)
    if layout.padding_free:
        ids: list[int] = []
        pos: list[int] = []
        tgt: list[int] = []
        for r in rows:
            lens = segments(r)
            ids.extend(r["input_ids"])
            tgt.extend(targets(r["input_ids"], r["assistant_masks"], lens))
            for n in lens:
                pos.extend(range(n))
        if layout.pad_to is not None:
            if layout.pad_to < len(ids):
                raise ValueError(f"{len(ids)} tokens do not fit the {layout.pad_to}-token bucket")
            pad = layout.pad_to - len(ids)
            ids.extend([layout.pad_id] * pad)
            pos.extend(range(pad))
            tgt.extend([IGNORE] * pad)
        seg = [n for r in rows for n in segments(r)]
        if layout.pad_to is not None and layout.pad_to > sum(seg):
            seg.append(layout.pad_to - sum(seg))
        cu = [0]
        for n in seg:
            cu.append(cu[-1] + n)
        if layout.cu_slots is not None and len(cu) < layout.cu_slots + 1:
            cu += [cu[-1]] * (layout.cu_slots + 1 - len(cu))
        batch = {"input_ids": torch.tensor([ids]), "position_ids": torch.tensor([pos]),
                 "targets": torch.tensor([tgt]), "cu_seq_lens": torch.tensor(cu, dtype=torch.int32),
                 "max_length": layout.pad_to or max(seg)}
    else:
        width = max(len(r["input_ids"]) for r in rows)
        ids2, tgt2, att2, pos2, masks4 = [], [], [], [], []
        packed = any(len(segments(r)) > 1 for r in rows)
        for r in rows:
            n, pad = len(r["input_ids"]), width - len(r["input_ids"])
            lens = segments(r)
            ids2.append(list(r["input_ids"]) + [layout.pad_id] * pad)
            tgt2.append(targets(r["input_ids"], r["assistant_masks"], lens) + [IGNORE] * pad)
            att2.append([1] * n + [0] * pad)
            pos2.append([p for k in lens for p in range(k)] + list(range(pad)))
            if packed:
                from ..data.tokenize import block_diagonal_mask

                masks4.append(block_diagonal_mask(lens + ([pad] if pad else []))[0])
        batch = {"input_ids": torch.tensor(ids2), "position_ids": torch.tensor(pos2), "targets": torch.tensor(tgt2)}
        batch["attention_mask"] = torch.stack(masks4) if packed else torch.tensor(att2)
    batch["n_tokens"] = n_tokens
    batch["n_targets"] = int((batch["targets"] != IGNORE).sum())
    return batch


# ---------------------------------------------------------------------------
# Bins


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `capacity` tokens, longest first, each
    into the fullest bin it still fits (an item longer than capacity gets a bin of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, b = free.pop(k)
            bins[b].append(i)
            if space - n > 0:
                bisect.insort(free, (space - n, b))
        else:
            bins.append([i])
            if capacity - n > 0:
                bisect.insort(free, (capacity - n, len(bins) - 1))
    return bins


def fill_ratio(lengths: Sequence[int], bins: list[list[int]], capacity: int) -> float:
    return sum(lengths) / max(1, len(bins) * capacity)


def forward_groups(lengths: Sequence[int], capacity: int | None, rows_per_forward: int) -> list[list[int]]:
    """The forward passes of one optimizer step: bins of `capacity` tokens, or runs of
    `rows_per_forward` rows in order when capacity is None (the configured micro-batches)."""
    if capacity is None:
        return [list(range(i, min(i + rows_per_forward, len(lengths)))) for i in range(0, len(lengths), rows_per_forward)]
    return [sorted(b) for b in best_fit_decreasing(lengths, capacity)]


# ---------------------------------------------------------------------------
# Order


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True, lengths: Sequence[int] | None = None,
                group: int = 0) -> list[int]:
    """Row order for one epoch: a permutation seeded by (seed, epoch), so a resumed run sees the
    same order. With `lengths` and `group`, rows are sorted by length within consecutive
    windows of `group` rows (length-grouped sampling: less padding, similar-size steps)."""
    order = list(range(n))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    if lengths is not None and group > 1:
        order = [i for s in range(0, n, group) for i in sorted(order[s:s + group], key=lambda i: -lengths[i])]
    return order


def steps_per_epoch(n_rows: int, rows_per_step: int) -> int:
    return max(1, math.ceil(n_rows / rows_per_step))
