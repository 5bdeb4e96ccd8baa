"""Examples -> token ids and loss masks, packing, and a tokenization cache keyed by content.

Masks are computed without `{% generation %}` support, so any template works:
for each assistant message i the conversation is rendered twice more,

    prefix_i = render(messages[:i], add_generation_prompt=True)   # up to where the reply starts
    upto_i   = render(messages[:i+1])                              # through the reply and its end-of-turn

and the characters between len(prefix_i) and len(upto_i) of the full
rendering are the trained span: the reply plus its end-of-turn marker
("...<|im_end|>"), less the whitespace the template puts after the marker
(the same span a `{% generation %}` block usually marks). The start is the longest common prefix of prefix_i and the
full text, which stays right for templates that rewrite earlier turns (Qwen3
drops past reasoning); when upto_i is not a prefix of the full text the end is
found by locating the reply text and its end-of-turn suffix. Characters map to
tokens through the fast tokenizer's offsets (a token is trained when it starts
inside a span); slow tokenizers tokenize the spans one by one instead, i.e.
the "diff token lengths of prefixes" method.

Text rows (continued pretraining) are `bos? text eos`, all trained.

Cache: `encode_cached` stores input_ids/assistant_masks (untruncated) under
$TUNESMITH_HOME/cache/tokenized/<sha256>/ where the hash covers the examples'
content, the tokenizer (vocab, special tokens), the template and the masking
flag; a second run with the same inputs loads it instead of tokenizing.

Packing (`pack`): greedy, in order; each packed row has `position_ids` that
restart at 0 for every example. transformers (>= 4.53, incl. 5.x) turns
restarting position_ids into a block-diagonal causal mask when no
attention_mask is passed, for sdpa and eager on the CPU as well as
flash-attention varlen on GPUs, so examples never attend to each other; the
collator must pass position_ids and leave attention_mask out.
Caveat, measured on transformers 5.23: the detection is skipped when a KV
cache exists, and `model(...)` creates one whenever use_cache is on (the
config default, even in train mode), so packed training must run with
`model.config.use_cache = False` or the examples leak into each other.
`collate_packed(..., explicit_mask=True)` builds the 4-D block-diagonal mask
instead (`block_diagonal_mask`), which holds regardless of the cache but costs
O(L^2) memory and rules out flash-attention. Tests check both give the
unpacked loss.
data.packing packs best-fit-decreasing instead (engine/data/packing.py); `pack` stays
for callers that want the rows in order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from bisect import bisect_left
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .. import paths
from ..errors import DataError
from .templates import ChatTemplate, render

log = logging.getLogger(__name__)

CACHE_VERSION = "1"  # bump when the encoding below changes


@dataclass
class Encoded:
    input_ids: list[int]
    assistant_masks: list[int]
    text: str  # the rendered text the ids come from
    offsets: list[tuple[int, int]] | None = None  # char span per token (fast tokenizers)


def _lcp(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # binary search on the first differing character
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _render_error(e: Exception) -> DataError:
    return DataError(f"the chat template failed on this conversation ({type(e).__name__}: {e}). The template may "
                     "not support these roles (e.g. system or tool); pick another with model.chat_template.")


def chat_spans(tokenizer, template: ChatTemplate, example: dict) -> tuple[str, list[tuple[int, int]]]:
    """(full text, trained character spans) for one chat example."""
    msgs = example["messages"]
    tools = example.get("tools")
    idx = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    try:
        full, *uptos = render(tokenizer, template, [msgs] + [msgs[: i + 1] for i in idx], tools=tools)
        prefixes = render(tokenizer, template, [msgs[:i] for i in idx], add_generation_prompt=True, tools=tools) if idx else []
    except DataError:
        raise
    except Exception as e:  # jinja2 errors, TemplateError raised by the template itself
        raise _render_error(e) from None
    spans = []
    for i, prefix, upto in zip(idx, prefixes, uptos):
        start = _lcp(full, prefix)
        if full.startswith(upto):
            end = len(upto)
        else:  # the template renders this turn differently once later turns follow it
            content = msgs[i].get("content") or ""
            pos = full.find(content, start) if content else -1
            if pos < 0:
                end = start + _lcp(full[start:], upto[start:])
            else:
                end = pos + len(content)
                cut = upto.rfind(content) if content else -1
                suffix = upto[cut + len(content):] if cut >= 0 else ""
                if suffix and full.startswith(suffix, end):
                    end += len(suffix)
        content = msgs[i].get("content") or ""
        k = full.rfind(content, start, end) if content else -1
        if k >= 0:  # train the end-of-turn marker but not the whitespace the template puts after it
            tail_start = k + len(content)
            tail = full[tail_start:end].rstrip()
            if tail:
                end = tail_start + len(tail)
        if end > start:
            spans.append((start, end))
    return full, spans


def _eos_id(tokenizer) -> int | None:
    return tokenizer.eos_token_id


def encode_examples(tokenizer, template: ChatTemplate | None, examples: list[dict], train_on_responses_only: bool = True,
                    keep_text: bool = False, batch_size: int = 256,
                    progress: Callable[[int, int], None] | None = None) -> list[Encoded]:
    """Tokenize examples (chat or text) to ids and masks; no truncation here."""
    out: list[Encoded] = []
    fast = bool(getattr(tokenizer, "is_fast", False))
    for b in range(0, len(examples), batch_size):
        batch = examples[b: b + batch_size]
        texts, spans_l, is_text = [], [], []
        for ex in batch:
            if "text" in ex:
                texts.append(ex["text"])
                spans_l.append(None)
                is_text.append(True)
                continue
            if template is None:
                raise DataError("chat examples need a chat template; set model.chat_template.")
            full, spans = chat_spans(tokenizer, template, ex)
            texts.append(full)
            spans_l.append(spans)
            is_text.append(False)
        if fast:
            chat_idx = [k for k, t in enumerate(is_text) if not t]
            enc = None
            if chat_idx:
                enc = tokenizer([texts[k] for k in chat_idx], add_special_tokens=False, return_offsets_mapping=True)
            by_k = {k: j for j, k in enumerate(chat_idx)}
        for k in range(len(batch)):
            if is_text[k]:
                ids = list(tokenizer(texts[k], add_special_tokens=True)["input_ids"])
                eos = _eos_id(tokenizer)
                if eos is not None and (not ids or ids[-1] != eos):
                    ids.append(eos)
                out.append(Encoded(ids, [1] * len(ids), texts[k] if keep_text else ""))
                continue
            spans = spans_l[k]
            if fast:
                j = by_k[k]
                ids = list(enc["input_ids"][j])
                offs = [tuple(o) for o in enc["offset_mapping"][j]]
                if train_on_responses_only:
                    # a token is trained when its first character lies inside a span
                    starts = [o[0] for o in offs]
                    mask = [0] * len(ids)
                    for s, e in spans:
                        a, b = bisect_left(starts, s), bisect_left(starts, e)
                        mask[a:b] = [1] * (b - a)
                else:
                    mask = [1] * len(ids)
                out.append(Encoded(ids, mask, texts[k] if keep_text else "", offs if keep_text else None))
            else:
                ids, mask = _encode_by_segments(tokenizer, texts[k], spans)
                if not train_on_responses_only:
                    mask = [1] * len(ids)
                out.append(Encoded(ids, mask, texts[k] if keep_text else ""))
        if progress:
            progress(min(b + batch_size, len(examples)), len(examples))
    return out


def _encode_by_segments(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    cuts = [0]
    for s, e in spans:
        cuts += [s, e]
    cuts.append(len(text))
    ids: list[int] = []
    mask: list[int] = []
    for n, (a, b) in enumerate(zip(cuts, cuts[1:])):
        if b <= a:
            continue
        seg = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
        ids += seg
        mask += [n % 2] * len(seg)  # odd segments are the spans
    return ids, mask


def mask_spans(encoded: Encoded, limit: int | None = None) -> list[tuple[str, bool]]:
    """(text piece, trained) runs of an Encoded made with keep_text=True, up to `limit` tokens.

    With offsets the pieces are cut from the rendered text (every character
    shown); without, tokens are decoded one by one.
    """
    n = len(encoded.input_ids) if limit is None else min(limit, len(encoded.input_ids))
    runs: list[tuple[str, bool]] = []
    if encoded.offsets is not None and encoded.text:
        starts = [encoded.offsets[t][0] for t in range(n)]
        for t in range(n):
            a = starts[t] if t > 0 else 0
            b = starts[t + 1] if t + 1 < n else (encoded.offsets[n - 1][1] if n else 0)
            b = max(b, a)
            piece, flag = encoded.text[a:b], bool(encoded.assistant_masks[t])
            if runs and runs[-1][1] == flag:
                runs[-1] = (runs[-1][0] + piece, flag)
            else:
                runs.append((piece, flag))
        return [r for r in runs if r[0]]
    return runs


# ---------------------------------------------------------------------------
# Cache


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str).encode())
    h.update(str(type(tokenizer).__name__).encode())
    return h.hexdigest()


def cache_key(examples: list[dict], tokenizer, template: ChatTemplate | None, train_on_responses_only: bool,
              tok_fp: str | None = None) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{train_on_responses_only}|".encode())
    h.update((tok_fp or tokenizer_fingerprint(tokenizer)).encode())
    if template is not None:
        jinja = template.jinja if template.jinja is not None else (getattr(tokenizer, "chat_template", "") or "")
        h.update(json.dumps([template.name, jinja, template.kwargs], sort_keys=True, default=str).encode())
    try:
        import orjson

        for ex in examples:
            h.update(orjson.dumps(ex, option=orjson.OPT_SORT_KEYS))
    except ImportError:  # pragma: no cover
        for ex in examples:
            h.update(json.dumps(ex, sort_keys=True).encode())
    return h.hexdigest()


def cache_dir() -> Path:
    return paths.home() / "cache" / "tokenized"


def encode_cached(tokenizer, template: ChatTemplate | None, examples: list[dict], train_on_responses_only: bool = True,
                  use_cache: bool = True, progress: Callable[[int, int], None] | None = None):
    """A datasets.Dataset with input_ids and assistant_masks (untruncated), cached by content hash.

    Returns (dataset, cache_hit).
    """
    import datasets

    from ..atomic import atomic_dir

    key = cache_key(examples, tokenizer, template, train_on_responses_only) if use_cache else None
    folder = cache_dir() / key if key else None
    if folder is not None and (folder / "dataset_info.json").exists():
        try:
            return datasets.load_from_disk(str(folder)), True
        except Exception as e:  # a damaged cache entry: rebuild it
            log.warning("tokenization cache %s unreadable (%s); rebuilding", folder, e)
    enc = encode_examples(tokenizer, template, examples, train_on_responses_only, progress=progress)
    ds = datasets.Dataset.from_dict({
        "input_ids": [e.input_ids for e in enc],
        "assistant_masks": [e.assistant_masks for e in enc],
    })
    if folder is not None:
        try:
            with atomic_dir(folder, overwrite=True) as tmp, _quiet_datasets():
                ds.save_to_disk(str(tmp))
            ds = datasets.load_from_disk(str(folder))
        except OSError as e:  # a full disk should not stop training
            log.warning("could not write the tokenization cache %s: %s", folder, e)
    return ds, False


@contextmanager
def _quiet_datasets():
    """No per-shard progress bars from datasets for our small internal saves."""
    from datasets.utils.tqdm import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    was = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if was:
            enable_progress_bars()


# ---------------------------------------------------------------------------
# Packing


def pack(rows: Iterable[tuple[list[int], list[int]]], max_len: int) -> dict[str, list[list[int]]]:
    """Greedy in-order packing of (input_ids, assistant_masks) into rows of at most max_len tokens.

    Returns columns input_ids, assistant_masks, position_ids (restarting at 0
    per example) and seq_lengths (the example lengths inside each row). The
    first token of every example is masked: unpacked it is never a target, and
    packed it must not be learnt from the previous example's last token. An
    example longer than max_len is truncated to it.
    """
    out: dict[str, list[list[int]]] = {"input_ids": [], "assistant_masks": [], "position_ids": [], "seq_lengths": []}
    cur_ids: list[int] = []
    cur_mask: list[int] = []
    cur_pos: list[int] = []
    cur_lens: list[int] = []

    def flush() -> None:
        if cur_ids:
            out["input_ids"].append(cur_ids.copy())
            out["assistant_masks"].append(cur_mask.copy())
            out["position_ids"].append(cur_pos.copy())
            out["seq_lengths"].append(cur_lens.copy())
            cur_ids.clear(), cur_mask.clear(), cur_pos.clear(), cur_lens.clear()

    for ids, mask in rows:
        ids, mask = ids[:max_len], list(mask[:max_len])
        if mask:
            # The first token of an example is never a target unpacked; packed, it would be
            # "predicted" from the previous example's last token, so it is masked.
            mask[0] = 0
        if len(cur_ids) + len(ids) > max_len:
            flush()
        cur_ids.extend(ids)
        cur_mask.extend(mask)
        cur_pos.extend(range(len(ids)))
        cur_lens.append(len(ids))
    flush()
    return out


def block_diagonal_mask(seq_lengths: list[int], dtype=None):
    """A 4-D (1, 1, L, L) additive causal mask that keeps packed examples apart.

    For attention code that ignores position_ids (0 = attend, -inf = blocked).
    """
    import torch

    dtype = dtype or torch.float32
    total = sum(seq_lengths)
    seg = torch.repeat_interleave(torch.arange(len(seq_lengths)), torch.tensor(seq_lengths))
    same = seg[:, None] == seg[None, :]
    causal = torch.ones(total, total, dtype=torch.bool).tril()
    allowed = same & causal
    mask = torch.zeros(total, total, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def collate_packed(rows: list[dict], pad_token_id: int, explicit_mask: bool = False) -> dict:
    """Batch packed rows for a causal LM: input_ids, labels (-100 where not trained), position_ids.

    Padding is a sequence of its own (positions 0.., labels -100), so no
    attention_mask is needed. With explicit_mask, a 4-D block-diagonal additive
    mask is added (robust to use_cache, not for flash-attention).
    """
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids, labels, pos, masks = [], [], [], []
    for r in rows:
        n, pad = len(r["input_ids"]), width - len(r["input_ids"])
        ids.append(list(r["input_ids"]) + [pad_token_id] * pad)
        labels.append([t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])] + [-100] * pad)
        pos.append(list(r["position_ids"]) + list(range(pad)))
        if explicit_mask:
            lens = list(r.get("seq_lengths") or [n]) + ([pad] if pad else [])
            masks.append(block_diagonal_mask(lens)[0])
    batch = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "position_ids": torch.tensor(pos)}
    if explicit_mask:
        batch["attention_mask"] = torch.stack(masks)
    return batch
