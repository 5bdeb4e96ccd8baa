"""Dataset mixing ratios: data.mix weights -> how many rows each dataset gives.

    named = mix_examples([("a", rows_a), ("b", rows_b)], [0.7, 0.3], seed=42)

The mixed set takes rows in the given proportions without repeating a row, so
its size is set by the dataset that runs out first (LLaMA-Factory calls this
interleave_under). Rows are drawn at random (seeded by training.seed); the
order inside each dataset is kept. A weight of 0 leaves that dataset out.

What it does not know: oversampling. To repeat a small dataset, list it twice.
"""

from __future__ import annotations

import logging
import random

from ..errors import DataError

log = logging.getLogger(__name__)


def mix_counts(sizes: list[int], weights: list[float]) -> list[int]:
    """Rows to take from each dataset: proportional to `weights`, none repeated."""
    total_w = sum(weights)
    shares = [w / total_w for w in weights]
    # largest mixed size N with share_i * N <= size_i for every dataset that has a weight
    limits = [size / share for size, share in zip(sizes, shares) if share > 0]
    n = min(limits)
    return [min(size, round(share * n)) for size, share in zip(sizes, shares)]


def mix_examples(named: list[tuple[str, list[dict]]], weights: list[float], seed: int) -> list[tuple[str, list[dict]]]:
    counts = mix_counts([len(rows) for _, rows in named], weights)
    rng = random.Random(seed)
    out = []
    for (name, rows), k, w in zip(named, counts, weights):
        if w > 0 and k == 0:
            raise DataError(f"data.mix: dataset {name!r} would give no rows at weight {w}; raise its weight or add rows.")
        keep = sorted(rng.sample(range(len(rows)), k))
        out.append((name, [rows[i] for i in keep]))
    log.info("data.mix: %s", ", ".join(f"{name} {k} of {len(rows)} rows" for (name, rows), k in zip(named, counts)))
    return [(name, rows) for name, rows in out if rows]
