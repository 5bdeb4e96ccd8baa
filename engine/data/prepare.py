"""prepare_datasets: a RunConfig's data section -> tokenized train (and eval) datasets.

    train_ds, eval_ds = prepare_datasets(cfg, tokenizer)

Steps, per entry of cfg.data.datasets (bundled names, registered names, file
or folder paths, hub ids; concatenated, or mixed by data.mix weights):

    load + check rows (examples.py)  -> rows with errors stop here unless data.drop_invalid
    max_samples                      -> the first N usable rows of each dataset
    cut long texts (bounds.py)       -> at most what cutoff_len tokens can reach, before rendering
    render + tokenize + mask         -> input_ids, assistant_masks (cached by content, tokenize.py)
    truncate to cutoff_len           -> rows left with no trained token are dropped, with a warning
    val_file or val_size split       -> seeded by training.seed
    packing                          -> rows of up to cutoff_len tokens, best-fit-decreasing (packing.py),
                                        + position_ids, seq_lengths

Preference rows train on the chosen reply (SFT), said in a warning; rows a KTO
label marks undesirable are left out (never learnt as good answers), also said;
text rows train on every token. The preference objectives read the same sources
through pairs.py instead. Raises DataError naming the dataset, file and rows, with the fix.
"""

from __future__ import annotations

import logging
from typing import Callable

from ..config import RunConfig
from ..errors import DataError
from .bounds import bound_examples
from .examples import load_examples
from .packing import pack_best_fit
from .registry import get_dataset, rows_for_training
from .templates import ChatTemplate, resolve_template
from .tokenize import encode_cached

log = logging.getLogger(__name__)


def _examples_for(refs: list[str], cfg: RunConfig, apply_max: bool) -> list[tuple[str, list[dict]]]:
    fmt = None if cfg.data.format == "auto" else cfg.data.format
    out = []
    for ref in refs:
        es = load_examples(ref, format=fmt)
        usable = es.usable(drop_invalid=cfg.data.drop_invalid)
        dropped = es.n_rows - len(usable)
        if dropped:
            log.warning("dataset %s: skipping %d of %d rows with problems (data.drop_invalid is on)", es.name, dropped, es.n_rows)
        if es.format == "preference":
            log.warning("dataset %s: preference pairs; supervised training learns the chosen replies only and never "
                        "sees the rejected ones (pick objective dpo, orpo or simpo to learn from both)", es.name)
        bad = sum(1 for ex in usable if ex.get("kto_label") is False)
        if bad:
            # an undesirable reply must never be learnt as a good answer
            usable = [ex for ex in usable if ex.get("kto_label") is not False]
            if not usable:
                raise DataError(f"dataset {es.name!r}: every row is labelled undesirable (KTO), so supervised "
                                "training has nothing to learn. Pick objective kto.")
            log.warning("dataset %s: KTO labels: %d of %d rows are marked undesirable and are left out; supervised "
                        "training learns the %d desirable replies only (pick objective kto to learn from both)",
                        es.name, bad, bad + len(usable), len(usable))
        # [issue 15] a registered entry's kto_tag / media columns / num_samples (LLaMA-Factory keys)
        usable = rows_for_training(get_dataset(ref), usable, cfg.training.seed, getattr(cfg, "objective", "sft"))
        if apply_max and cfg.data.max_samples is not None:
            usable = usable[: cfg.data.max_samples]
        out.append((es.name, usable))
    return out


def _template_for(cfg: RunConfig, tokenizer, examples: list[dict], enable_thinking: bool | None) -> ChatTemplate | None:
    if all("text" in ex for ex in examples):
        return None
    return resolve_template(tokenizer, cfg.model.chat_template, enable_thinking)


def _tokenize(named: list[tuple[str, list[dict]]], cfg: RunConfig, tokenizer, enable_thinking: bool | None,
              use_cache: bool, progress: Callable[[int, int], None] | None):
    import datasets

    parts = []
    cutoff = cfg.data.cutoff_len
    for name, examples in named:
        template = _template_for(cfg, tokenizer, examples, enable_thinking)
        # Cut over-long texts before rendering and tokenizing: memory stays bounded by cutoff_len.
        examples = bound_examples(examples, cutoff, tokenizer)
        ds, hit = encode_cached(tokenizer, template, examples, cfg.data.train_on_responses_only, use_cache, progress)
        log.info("dataset %s: %d rows %s", name, len(ds), "(tokenization cache hit)" if hit else "tokenized")
        ids_col, mask_col = ds["input_ids"], ds["assistant_masks"]
        longer = sum(1 for ids in ids_col if len(ids) > cutoff)
        if longer:
            log.warning("dataset %s: %d rows are longer than cutoff_len=%d and are truncated", name, longer, cutoff)
        keep_ids, keep_mask = [], []
        for ids, mask in zip(ids_col, mask_col):
            mask = mask[:cutoff]
            if any(mask):
                keep_ids.append(ids[:cutoff])
                keep_mask.append(mask)
        if len(keep_ids) < len(ids_col):
            log.warning("dataset %s: %d rows have no trained token left after truncation to %d tokens (the reply "
                        "starts past the cutoff); they are left out. Raise data.cutoff_len to keep them.",
                        name, len(ids_col) - len(keep_ids), cutoff)
            if not keep_ids:
                raise DataError(f"dataset {name!r}: every row's reply starts after cutoff_len={cutoff} tokens, so "
                                "nothing would be trained. Raise data.cutoff_len.")
        if longer or len(keep_ids) < len(ids_col):
            ds = datasets.Dataset.from_dict({"input_ids": keep_ids, "assistant_masks": keep_mask})
        parts.append(ds)
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _pack(ds, cutoff: int, seed: int):
    import datasets

    cols = pack_best_fit(zip(ds["input_ids"], ds["assistant_masks"]), cutoff)
    n, rows = len(ds), len(cols["input_ids"])
    fill = sum(len(r) for r in cols["input_ids"]) / max(1, rows * cutoff)
    log.info("packing: %d examples into %d rows of up to %d tokens (%.1f%% full)", n, rows, cutoff, 100 * fill)
    return datasets.Dataset.from_dict(cols).shuffle(seed=seed)


def prepare_datasets(cfg: RunConfig, tokenizer, enable_thinking: bool | None = None, use_cache: bool = True,
                     progress: Callable[[int, int], None] | None = None):
    """Tokenized (train, eval-or-None) datasets with input_ids and assistant_masks (1 = trained).

    With data.packing, rows also carry position_ids (restarting per example)
    and seq_lengths; pass position_ids to the model and no attention_mask.
    Raises DataError for unknown names, missing or unreadable files, rows with
    problems (unless data.drop_invalid), and empty results.
    """
    d = cfg.data
    named = _examples_for(d.datasets, cfg, True)
    if d.mix is not None:  # [issue 15] mixing ratios across datasets
        from .mix import mix_examples

        named = mix_examples(named, d.mix, cfg.training.seed)
    train = _tokenize(named, cfg, tokenizer, enable_thinking, use_cache, progress)
    val = None
    if d.val_file:
        if d.val_size:
            log.info("data.val_file is set; data.val_size=%s is ignored", d.val_size)
        val = _tokenize(_examples_for([d.val_file], cfg, False), cfg, tokenizer, enable_thinking, use_cache, None)
    elif d.val_size > 0:
        n_val = max(1, round(len(train) * d.val_size))
        if len(train) - n_val < 1:
            raise DataError(f"data.val_size={d.val_size}: {len(train)} rows are too few to hold out {n_val} for "
                            "evaluation and still train. Lower val_size or add rows.")
        split = train.train_test_split(test_size=n_val, seed=cfg.training.seed, shuffle=True)
        train, val = split["train"], split["test"]
    if d.packing:
        train = _pack(train, d.cutoff_len, cfg.training.seed)
        if val is not None:
            val = _pack(val, d.cutoff_len, cfg.training.seed)
    return train, val
