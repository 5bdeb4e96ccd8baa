"""Preference pairs and KTO rows -> token rows for the preference objectives.

    train, val = prepare_pairs(cfg, tokenizer)      # dpo, orpo, simpo, reward
    train, val = prepare_unpaired(cfg, tokenizer)   # kto

A pair row holds both sides of one preference, each the whole conversation (prompt +
reply) as token ids, with a mask over the final reply only (earlier assistant turns of a
multi-turn prompt are context, never trained):

    {"chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask"}

A KTO row is one conversation, its final reply's mask and its label, plus where the
reply starts (the KL estimate pairs a prompt with another row's reply):

    {"input_ids", "assistant_masks", "label": 1 desirable | 0 undesirable, "prompt_len"}

Sources: preference datasets (prompt + chosen + rejected; LLaMA-Factory `ranking: true`)
for pairs; KTO datasets (a label per row; LLaMA-Factory `kto_tag`) for KTO, where
preference pairs also serve, unpaired (chosen = desirable, rejected = undesirable), as TRL
does. Each side is cut to data.cutoff_len; a pair or row whose prompt leaves no reply
token inside the cutoff is left out, with a warning that says how many. Tokenization
goes through tokenize.encode_cached, so a second run loads it from the cache.

Raises DataError when a dataset has the wrong kind of rows for the objective (e.g. chat
rows for dpo), naming the dataset and what to pick instead.
"""

from __future__ import annotations

import logging
import random

from ..config import RunConfig
from ..errors import DataError
from .examples import load_examples
from .tokenize import encode_cached

log = logging.getLogger(__name__)


def final_reply_mask(mask: list[int]) -> list[int]:
    """Keep only the last run of trained tokens (the final reply and its end-of-turn)."""
    out = [0] * len(mask)
    end = len(mask)
    while end > 0 and not mask[end - 1]:
        end -= 1
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    out[start:end] = [1] * (end - start)
    return out


def reply_start(mask: list[int]) -> int:
    """Index of the first trained token (len(mask) when none)."""
    return next((i for i, m in enumerate(mask) if m), len(mask))


def _load(refs: list[str], cfg: RunConfig, apply_max: bool) -> list[tuple[str, str, list[dict]]]:
    """(dataset name, format, usable examples) per reference."""
    fmt = None if cfg.data.format == "auto" else cfg.data.format
    out = []
    for ref in refs:
        es = load_examples(ref, format=fmt)
        usable = es.usable(drop_invalid=cfg.data.drop_invalid)
        if es.n_rows - len(usable):
            log.warning("dataset %s: skipping %d of %d rows with problems (data.drop_invalid is on)", es.name,
                        es.n_rows - len(usable), es.n_rows)
        if apply_max and cfg.data.max_samples is not None:
            usable = usable[: cfg.data.max_samples]
        out.append((es.name, es.format, usable))
    return out


def _template(cfg: RunConfig, tokenizer):
    from .templates import resolve_template

    return resolve_template(tokenizer, cfg.model.chat_template, None)


def _side(ex: dict, reply: dict) -> dict:
    side = {"messages": ex["messages"][:-1] + [reply]}
    if ex.get("tools"):
        side["tools"] = ex["tools"]
    return side


def _cut(ids: list[int], mask: list[int], cutoff: int) -> tuple[list[int], list[int]]:
    mask = final_reply_mask(mask)
    return list(ids[:cutoff]), mask[:cutoff]


def _encode(cfg: RunConfig, tokenizer, examples: list[dict]):
    ds, hit = encode_cached(tokenizer, _template(cfg, tokenizer), examples, True)
    return ds["input_ids"], ds["assistant_masks"], hit


_PAIR_FIX = "Pick a preference dataset (e.g. preference_pairs), or objective sft / kto for this one."
_LABEL_FIX = "Add the labels, or pick objective sft."


def pair_rows(cfg: RunConfig, tokenizer, named: list[tuple[str, str, list[dict]]], objective: str,
              fix: str = _PAIR_FIX) -> list[dict]:
    """Tokenized pair rows of preference examples; other rows stop with a DataError ending in `fix`
    (training's advice by default; an evaluation, whose run is fixed, gives its own)."""
    cutoff = cfg.data.cutoff_len
    rows: list[dict] = []
    for name, fmt, examples in named:
        if not examples or any("rejected" not in ex for ex in examples):
            raise DataError(f"dataset {name!r} is {fmt}, not preference pairs: objective {objective} needs rows with a "
                            f"prompt, a chosen and a rejected reply. {fix}")
        sides = [_side(ex, ex["messages"][-1]) for ex in examples] + [_side(ex, ex["rejected"]) for ex in examples]
        ids, masks, hit = _encode(cfg, tokenizer, sides)
        n = len(examples)
        cut, same, kept = 0, 0, 0
        for i in range(n):
            c_ids, c_mask = _cut(ids[i], masks[i], cutoff)
            r_ids, r_mask = _cut(ids[n + i], masks[n + i], cutoff)
            if not any(c_mask) or not any(r_mask):
                cut += 1
                continue
            if c_ids == r_ids:
                same += 1  # no preference to learn: both losses and gradients would be zero
                continue
            rows.append({"chosen_ids": c_ids, "chosen_mask": c_mask, "rejected_ids": r_ids, "rejected_mask": r_mask})
            kept += 1
        log.info("dataset %s: %d preference pairs %s", name, kept, "(tokenization cache hit)" if hit else "tokenized")
        if cut:
            log.warning("dataset %s: %d pairs have a prompt that reaches cutoff_len=%d (no reply token left); they are "
                        "left out. Raise data.cutoff_len to keep them.", name, cut, cutoff)
        if same:
            log.warning("dataset %s: %d pairs have identical chosen and rejected replies; they are left out.", name, same)
        if not kept:
            raise DataError(f"dataset {name!r}: no usable preference pair left (prompts past cutoff_len={cutoff}: "
                            f"{cut}, identical pairs: {same}). Raise data.cutoff_len or fix the pairs.")
    return rows


def unpaired_rows(cfg: RunConfig, tokenizer, named: list[tuple[str, str, list[dict]]],
                  fix: str = _LABEL_FIX) -> list[dict]:
    """Tokenized KTO rows: labelled rows as they are, preference pairs split into a desirable and an
    undesirable row; rows with no label stop with a DataError ending in `fix` (nothing is assumed good)."""
    cutoff = cfg.data.cutoff_len
    rows: list[dict] = []
    for name, fmt, examples in named:
        sides: list[dict] = []
        labels: list[int] = []
        for ex in examples:
            if "rejected" in ex:
                sides += [_side(ex, ex["messages"][-1]), _side(ex, ex["rejected"])]
                labels += [1, 0]
            elif "kto_label" in ex:
                sides.append(_side(ex, ex["messages"][-1]))
                labels.append(1 if ex["kto_label"] else 0)
            else:
                raise DataError(f"dataset {name!r} is {fmt} without KTO labels: objective kto needs each reply marked "
                                "desirable or undesirable (a true/false `label` or `kto_tag` column) or preference "
                                f"pairs. {fix}")
        ids, masks, hit = _encode(cfg, tokenizer, sides)
        cut = 0
        for i, label in enumerate(labels):
            r_ids, r_mask = _cut(ids[i], masks[i], cutoff)
            if not any(r_mask):
                cut += 1
                continue
            rows.append({"input_ids": r_ids, "assistant_masks": r_mask, "label": label, "prompt_len": reply_start(r_mask)})
        good = sum(labels)
        log.info("dataset %s: %d KTO rows (%d desirable, %d undesirable) %s", name, len(labels) - cut, good,
                 len(labels) - good, "(tokenization cache hit)" if hit else "tokenized")
        if cut:
            log.warning("dataset %s: %d rows have a prompt that reaches cutoff_len=%d (no reply token left); they are "
                        "left out. Raise data.cutoff_len to keep them.", name, cut, cutoff)
    if not rows:
        raise DataError(f"no usable KTO row left after cutting to cutoff_len={cutoff}. Raise data.cutoff_len.")
    return rows


def _split(cfg: RunConfig, make, tokenizer) -> tuple[list[dict], list[dict] | None]:
    d = cfg.data
    if d.packing:
        log.info("data.packing does not apply to preference objectives (each pair is kept whole); ignored")
    train = make(_load(d.datasets, cfg, True))
    if d.val_file:
        return train, make(_load([d.val_file], cfg, False))
    if d.val_size > 0:
        n_val = max(1, round(len(train) * d.val_size))
        if len(train) - n_val < 1:
            raise DataError(f"data.val_size={d.val_size}: {len(train)} rows are too few to hold out {n_val} for "
                            "evaluation and still train. Lower val_size or add rows.")
        order = list(range(len(train)))
        random.Random(cfg.training.seed).shuffle(order)
        held = set(order[:n_val])
        return [r for i, r in enumerate(train) if i not in held], [train[i] for i in order[:n_val]]
    return train, None


def prepare_pairs(cfg: RunConfig, tokenizer, objective: str = "dpo") -> tuple[list[dict], list[dict] | None]:
    """(train pair rows, eval pair rows or None) for dpo / orpo / simpo / reward."""
    return _split(cfg, lambda named: pair_rows(cfg, tokenizer, named, objective), tokenizer)


def prepare_unpaired(cfg: RunConfig, tokenizer) -> tuple[list[dict], list[dict] | None]:
    """(train KTO rows, eval KTO rows or None)."""
    return _split(cfg, lambda named: unpaired_rows(cfg, tokenizer, named), tokenizer)


def token_stats(tokenizer, template, examples: list[dict], cutoff: int) -> dict:
    """Token lengths of each side (prompt + reply) and how many rows' prompts leave no reply token
    inside the cutoff, for the check report (engine.data.inspect)."""
    from .inspect import _summary

    pairs = [ex for ex in examples if "rejected" in ex]
    sides = ([_side(ex, ex["messages"][-1]) for ex in pairs] + [_side(ex, ex["rejected"]) for ex in pairs]
             if pairs else [_side(ex, ex["messages"][-1]) for ex in examples if "kto_label" in ex])
    if template is None or not sides:
        return {"chosen": None, "rejected": None, "prompt_cut_by_cutoff": 0}
    ds, _ = encode_cached(tokenizer, template, sides, True)
    lengths = [len(x) for x in ds["input_ids"]]
    starts = [reply_start(final_reply_mask(m)) for m in ds["assistant_masks"]]
    n = len(pairs)
    if pairs:
        cut = sum(1 for i in range(n) if starts[i] >= cutoff or starts[n + i] >= cutoff)
        return {"chosen": _summary(lengths[:n]), "rejected": _summary(lengths[n:]), "prompt_cut_by_cutoff": cut}
    return {"chosen": _summary(lengths), "rejected": None, "prompt_cut_by_cutoff": sum(1 for s in starts if s >= cutoff)}


def objective_data_note(cfg: RunConfig) -> str | None:
    """One sentence when the chosen objective uses only part of a registered preference or KTO dataset
    (sft on pairs learns the chosen replies only; on KTO rows it leaves the undesirable ones out), for
    the studio to show before a run starts. Only registered datasets are looked at (no file is read)."""
    from .registry import list_datasets

    if cfg.objective not in ("sft", "pretrain"):
        return None
    entries = {e.name: e for e in list_datasets()}
    pairs = [n for n in cfg.data.datasets if n in entries and entries[n].format == "preference"]
    kto = [n for n in cfg.data.datasets if n in entries and entries[n].mapping is not None
           and entries[n].mapping.kto_tag]
    notes = []
    if pairs:
        notes.append(f"{', '.join(pairs)} holds preference pairs: {cfg.objective} learns the chosen replies only and "
                     "never sees the rejected ones (pick DPO, ORPO or SimPO to learn from both)")
    if kto:
        notes.append(f"{', '.join(kto)} holds KTO labels: {cfg.objective} leaves the undesirable replies out (pick "
                     "KTO to learn from both)")
    return "; ".join(notes) + "." if notes else None
