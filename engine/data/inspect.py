"""The dataset check report: what `tunesmith data inspect` prints and the Data tab shows.

    report = inspect_dataset("chats.jsonl", model="tunesmith/demo", cutoff_len=1024)
    report.to_json()                      # the stable schema below
    fig = length_histogram_figure(report) # plotly
    rows = preview_rows("chats.jsonl", tokenizer=tok, n=3)
    html = render_masked_html(rows[0].spans, rows[0].cut_spans)
    peek = peek_dataset("chats.jsonl")    # the first rows as the file holds them + the mapping in use

It reads the rows, detects the format (or takes the one given), lists every
row with a problem, and computes statistics: without a model from characters
only (fast: ~100 MB of JSONL in a few seconds), with a model (or tokenizer)
exactly, by rendering each row through the chat template and tokenizing it
(cached by content hash, so a second run is quick). Nothing is dropped unless
`drop_invalid` is set, and the report says how many rows that excludes.

JSON schema ("schema": "tunesmith.data.inspect/1"; fields are only ever added):

    schema            "tunesmith.data.inspect/1"
    source            what was inspected (path, name or hub id), name, files [str],
                      encodings {file: encoding}, size_bytes
    format            alpaca | sharegpt | openai | text | preference
    format_overridden true when the caller named the format or gave a mapping
    mapping           {field: key} used, e.g. {"prompt": "instruction", "response": "output"}
    evidence          [str] why this format (keys seen, per-row votes)
    row_formats       {format: rows} per-row guesses over the detection sample
    rows              {total, ok, with_errors, with_warnings, dropped, used}
    problem_counts    {kind: rows}; kinds: formats.PROBLEM_KINDS
    problems          [{file, row, line_number, kind, severity, message}] (the first
                      max_problems; `row` is a JSONL line number when line_number is true)
    problems_truncated true when more problems exist than are listed
    text_stats        {chars: {min, mean, median, p95, max}, turns: {...}, approx_tokens_total,
                      histogram: {bin_edges, counts}} over approximate tokens (utf-8 bytes / 4)
    token_stats       null without a model, else {model, template, cutoff_len,
                      lengths: {min, mean, median, p95, max}, histogram: {bin_edges, counts},
                      rows_over_cutoff, tokens_lost_to_cutoff, rows_without_trained_tokens,
                      total_tokens, trained_tokens, cache_hit}
                      (total/trained count the tokens kept after the cutoff)
    estimate          null without a model, else {hardware, device, parameters, tokens_per_epoch,
                      seconds_per_epoch, assumptions}
    preference_stats  null unless the rows are preference pairs or KTO rows, else {kind: "pairs" | "kto",
                      pairs, identical_pairs, desirable, undesirable,
                      chars: {prompt, chosen, rejected: {min, mean, median, p95, max}} (pairs),
                      tokens: null without a model, else {chosen, rejected: {...} (whole conversation),
                      prompt_cut_by_cutoff: rows whose prompt leaves no reply token within cutoff_len}}
    warnings          [str] notes such as a legacy encoding or a missing chat template
    ok                true when no row with an error is left in the rows used

What it does not know: whether the answers are right, and the real speed of
training (the estimate assumes a typical utilisation; see `estimate_seconds`).
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..units import human_size
from .examples import ExampleSet, load_examples, resolve_ref
from .formats import ColumnMapping, detect_format
from .readers import read_source
from .templates import resolve_template
from .tokenize import Encoded, encode_cached, encode_examples, mask_spans

log = logging.getLogger(__name__)

SCHEMA = "tunesmith.data.inspect/1"
HISTOGRAM_BINS = 30


@dataclass
class InspectReport:
    """The check report; `to_json()` gives the documented schema."""

    data: dict[str, Any]
    lengths: list[int] = field(default_factory=list, repr=False)  # token (or approx) length per used row

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def ok(self) -> bool:
        return bool(self.data["ok"])

    def to_json(self) -> dict[str, Any]:
        return self.data

    def to_text(self) -> str:
        """A human-readable summary (the CLI without --json)."""
        d = self.data
        r = d["rows"]
        lines = [
            f"{d['source']}: {d['format']} ({'given' if d['format_overridden'] else 'detected'}), "
            f"{r['total']} rows, {human_size(d['size_bytes'])}",
        ]
        if d["mapping"]:
            lines.append("  mapping: " + ", ".join(f"{k}={v}" for k, v in d["mapping"].items()))
        lines += [f"  evidence: {e}" for e in d["evidence"]]
        for f, enc in d["encodings"].items():
            if enc not in ("utf-8",):
                lines.append(f"  encoding: {Path(f).name}: {enc}")
        lines.append(f"  rows: {r['ok']} ok, {r['with_errors']} with errors, {r['with_warnings']} with warnings"
                     + (f", {r['dropped']} dropped" if r["dropped"] else "") + f"; {r['used']} used")
        if d["problem_counts"]:
            lines.append("  problems: " + ", ".join(f"{k} {n}" for k, n in sorted(d["problem_counts"].items())))
            ordered = sorted(d["problems"], key=lambda p: p["severity"] != "error")  # errors first, stable
            for p in ordered[:20]:
                where = f"{Path(p['file']).name} {'line' if p['line_number'] else 'row'} {p['row']}"
                lines.append(f"    {where}: {p['kind']}: {p['message']}")
            more = sum(d["problem_counts"].values()) - min(20, len(d["problems"]))
            if more > 0:
                lines.append(f"    ... {more} more (use --json for all)")
        t = d["text_stats"]
        lines.append(f"  characters per row: median {t['chars']['median']:.0f}, p95 {t['chars']['p95']:.0f}, "
                     f"max {t['chars']['max']:.0f}; ~{t['approx_tokens_total']:,} tokens (approx.)")
        ts = d["token_stats"]
        if ts:
            lines.append(f"  tokens ({ts['model']}, template {ts['template']}): median {ts['lengths']['median']:.0f}, "
                         f"p95 {ts['lengths']['p95']:.0f}, max {ts['lengths']['max']:.0f}")
            lines.append(f"  cutoff {ts['cutoff_len']}: {ts['rows_over_cutoff']} rows longer, "
                         f"{ts['tokens_lost_to_cutoff']:,} tokens cut"
                         + (f", {ts['rows_without_trained_tokens']} rows left with nothing to train"
                            if ts["rows_without_trained_tokens"] else ""))
            lines.append(f"  trained tokens: {ts['trained_tokens']:,} of {ts['total_tokens']:,}")
        ps = d.get("preference_stats")
        if ps and ps["kind"] == "pairs":
            c = ps["chars"]
            lines.append(f"  preference pairs: {ps['pairs']}" + (f", {ps['identical_pairs']} with identical replies"
                                                                  if ps["identical_pairs"] else "")
                         + f"; median characters: prompt {c['prompt']['median']:.0f}, chosen "
                         f"{c['chosen']['median']:.0f}, rejected {c['rejected']['median']:.0f}")
        elif ps:
            lines.append(f"  KTO rows: {ps['desirable']} desirable, {ps['undesirable']} undesirable")
        if ps and ps.get("tokens"):
            t = ps["tokens"]
            sides = ", ".join(f"{k} median {t[k]['median']:.0f} / max {t[k]['max']:.0f}" for k in ("chosen", "rejected")
                              if t.get(k))
            lines.append(f"  tokens per side: {sides}; prompt cut by the cutoff: {t['prompt_cut_by_cutoff']} rows")
        est = d["estimate"]
        if est:
            lines.append(f"  estimate: ~{_duration(est['seconds_per_epoch'])} per epoch on {est['hardware']} "
                         f"({est['assumptions']})")
        lines += [f"  warning: {w}" for w in d["warnings"]]
        lines.append("  OK" if d["ok"] else "  NOT OK: rows with errors; fix them or pass --drop-invalid")
        return "\n".join(lines)


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _summary(values) -> dict[str, float]:
    import numpy as np

    if len(values) == 0:
        return {"min": 0, "mean": 0, "median": 0, "p95": 0, "max": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"min": float(a.min()), "mean": round(float(a.mean()), 2), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def _histogram(values, bins: int = HISTOGRAM_BINS) -> dict[str, list]:
    import numpy as np

    if len(values) == 0:
        return {"bin_edges": [], "counts": []}
    a = np.asarray(values)
    hi = max(int(a.max()), 1)
    counts, edges = np.histogram(a, bins=min(bins, hi), range=(0, hi))
    return {"bin_edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _example_text_size(ex: dict) -> tuple[int, int, int]:
    """(characters, utf-8 bytes, turns) of one example."""
    if "text" in ex:
        t = ex["text"]
        return len(t), len(t) if t.isascii() else len(t.encode("utf-8")), 1
    chars = nbytes = 0
    for m in ex["messages"]:
        c = m["content"]
        chars += len(c)
        nbytes += len(c) if c.isascii() else len(c.encode("utf-8"))  # isascii is O(1) in CPython
    return chars, nbytes, len(ex["messages"])


def _check_allowed(ref: str, allowed_roots: list[str | Path] | None) -> None:
    if allowed_roots is None:
        return
    _, src, entry = resolve_ref(ref)
    if entry is not None or src is None or not Path(src).exists():
        return  # registered names and hub ids are fine
    real = Path(src).resolve()
    for root in allowed_roots:
        r = Path(root).resolve()
        if real == r or r in real.parents:
            return
    raise DataError(f"{ref}: this path is outside the folders the studio may read "
                    f"({', '.join(str(Path(r)) for r in allowed_roots)}). Upload the file instead.")


def _load_tokenizer(model: str | None, tokenizer):
    if tokenizer is not None:
        return tokenizer, getattr(tokenizer, "name_or_path", "") or "tokenizer"
    if model is None:
        return None, None
    from ..config import ModelConfig
    from ..models import load_tokenizer

    return load_tokenizer(ModelConfig(name_or_path=model)), model


def inspect_dataset(path_or_name: str, format: str | None = None, model: str | None = None, cutoff_len: int = 1024,
                    drop_invalid: bool = False, *, tokenizer=None, mapping: dict | str | None = None,
                    chat_template: str | None = None, train_on_responses_only: bool = True,
                    enable_thinking: bool | None = None, allowed_roots: list[str | Path] | None = None,
                    max_problems: int = 1000, estimate: bool = True) -> InspectReport:
    """Check one dataset (file, folder, registered name or hub id) and return the report.

    `model` (a name or path, loaded with engine.models) or `tokenizer` turns on
    token statistics and the training-time estimate. `allowed_roots` limits
    file paths to those folders (the studio passes uploads and data dirs).
    Raises DataError when the source cannot be read at all.
    """
    _check_allowed(path_or_name, allowed_roots)
    es = load_examples(path_or_name, format=format, mapping=mapping)
    warnings: list[str] = []
    for f, enc in es.loaded.encodings.items():
        if not enc.startswith("utf-"):
            warnings.append(f"{Path(f).name} is {enc}, not UTF-8; it was decoded as {enc} (re-save as UTF-8 to be sure)")
    error_rows = set(es.error_rows())
    warn_rows = {i for i in es.problem_rows if i not in error_rows}
    used = [ex for i, ex in enumerate(es.examples) if ex is not None and (not drop_invalid or i not in error_rows)]
    dropped = es.n_rows - len(used) if drop_invalid else 0

    sizes = [_example_text_size(ex) for ex in used]
    approx = [b // 4 + 1 for _, b, _ in sizes]
    counts: dict[str, int] = {}
    for p in es.problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    d: dict[str, Any] = {
        "schema": SCHEMA,
        "source": path_or_name,
        "name": es.name,
        "files": es.loaded.files,
        "encodings": es.loaded.encodings,
        "size_bytes": es.loaded.size_bytes,
        "format": es.format,
        "format_overridden": es.detection.overridden,
        "mapping": es.detection.mapping.describe(),
        "evidence": es.detection.evidence,
        "row_formats": es.detection.row_formats,
        "rows": {"total": es.n_rows, "ok": es.n_rows - len(es.problem_rows), "with_errors": len(error_rows),
                 "with_warnings": len(warn_rows), "dropped": dropped, "used": len(used)},
        "problem_counts": counts,
        "problems": [p.to_dict() for p in es.problems[:max_problems]],
        "problems_truncated": len(es.problems) > max_problems,
        "text_stats": {
            "chars": _summary([c for c, _, _ in sizes]),
            "turns": _summary([t for _, _, t in sizes]),
            "approx_tokens_total": int(sum(approx)),
            "histogram": _histogram(approx),
        },
        "token_stats": None,
        "preference_stats": _preference_stats(used),
        "estimate": None,
        "warnings": warnings,
        "ok": not error_rows or drop_invalid,
    }
    report = InspectReport(d, approx)
    tok, model_name = _load_tokenizer(model, tokenizer)
    if tok is not None and used:
        template = None
        if any("text" not in ex for ex in used):
            try:
                template = resolve_template(tok, chat_template, enable_thinking)
            except DataError as e:
                warnings.append(f"no token statistics: {e}")
                return report
        ds, hit = encode_cached(tok, template, used, train_on_responses_only)
        lengths, over, lost, empty, total, trained = _token_counts(ds, cutoff_len)
        d["token_stats"] = {
            "model": model_name, "template": template.name if template else "none (text)", "cutoff_len": cutoff_len,
            "lengths": _summary(lengths), "histogram": _histogram(lengths), "rows_over_cutoff": over,
            "tokens_lost_to_cutoff": lost, "rows_without_trained_tokens": empty, "total_tokens": total,
            "trained_tokens": trained, "cache_hit": hit,
        }
        report.lengths = lengths
        if d["preference_stats"] is not None:
            from .pairs import token_stats

            d["preference_stats"]["tokens"] = token_stats(tok, template, used, cutoff_len)
            cut = d["preference_stats"]["tokens"]["prompt_cut_by_cutoff"]
            if cut:
                warnings.append(f"{cut} rows have a prompt of cutoff_len={cutoff_len} tokens or more: no reply token "
                                "is left, so preference training skips them")
        if over:
            warnings.append(f"{over} rows are longer than cutoff_len={cutoff_len}; {lost:,} tokens are cut off")
        if estimate and model is not None:
            try:
                d["estimate"] = estimate_seconds(model, total)
            except Exception as e:  # an estimate is a nicety; never fail the report for it
                log.info("no time estimate for %s: %s", model, e)
    return report


def _preference_stats(used: list[dict]) -> dict[str, Any] | None:
    """Counts and per-side character lengths of preference pairs / KTO rows (None for other data)."""
    pairs = [ex for ex in used if "rejected" in ex]
    labelled = [ex for ex in used if "kto_label" in ex]
    if not pairs and not labelled:
        return None
    good = sum(1 for ex in labelled if ex["kto_label"])
    out: dict[str, Any] = {"kind": "pairs" if pairs else "kto", "pairs": len(pairs), "identical_pairs": 0,
                           "desirable": good, "undesirable": len(labelled) - good, "chars": None, "tokens": None}
    if pairs:
        prompt = [sum(len(m.get("content") or "") for m in ex["messages"][:-1]) for ex in pairs]
        chosen = [len(ex["messages"][-1].get("content") or "") for ex in pairs]
        rejected = [len(ex["rejected"].get("content") or "") for ex in pairs]
        out["identical_pairs"] = sum(1 for ex in pairs
                                     if ex["rejected"]["content"].strip() == ex["messages"][-1]["content"].strip())
        out["chars"] = {"prompt": _summary(prompt), "chosen": _summary(chosen), "rejected": _summary(rejected)}
    return out


def _token_counts(ds, cutoff: int):
    """(lengths, rows over cutoff, tokens lost, rows with nothing trained, kept tokens, trained kept tokens).

    Vectorised over the Arrow columns: a cached 100k-row dataset is counted in
    well under a second instead of materialising millions of Python ints.
    """
    import numpy as np
    import pyarrow as pa

    def flat(name):
        col = ds.data.column(name)
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        return np.asarray(col.offsets), np.asarray(col.values)

    offsets, _ = flat("input_ids")
    moff, mvals = flat("assistant_masks")
    lengths = np.diff(offsets)
    kept = np.minimum(lengths, cutoff)
    cs = np.concatenate([[0], np.cumsum(mvals, dtype=np.int64)])
    trained_rows = cs[moff[:-1] + kept] - cs[moff[:-1]]
    over = lengths > cutoff
    return (lengths.tolist(), int(over.sum()), int((lengths - kept).sum()), int((trained_rows == 0).sum()),
            int(kept.sum()), int(trained_rows.sum()))


# ---------------------------------------------------------------------------
# Training-time estimate

# Peak dense bf16/fp16 tensor throughput (FLOP/s), matched by substring of the device name.
_GPU_PEAK = (
    ("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40", 181e12), ("4090", 165e12), ("A10", 125e12),
    ("V100", 125e12), ("L4", 121e12), ("3090", 71e12), ("T4", 65e12),
)
_GPU_UTILISATION = 0.35  # typical model-FLOP utilisation of LoRA fine-tuning on one GPU
_CPU_FLOPS_PER_CORE = 20e9  # what PyTorch fp32 matmuls of small models reach per core, roughly


def model_parameters(model: str) -> int:
    """Parameter count from the model config, without loading weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..models import resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path(model))
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in m.parameters())


def estimate_seconds(model: str, tokens: int) -> dict[str, Any]:
    """Seconds per epoch ~= 6 x parameters x tokens / (peak x utilisation). Rough by design."""
    import os

    from ..models import detect_hardware

    hw = detect_hardware()
    params = model_parameters(model)
    if hw.device == "cuda":
        peak = next((p for key, p in _GPU_PEAK if key in hw.name), 100e12)
        rate = peak * _GPU_UTILISATION
        assumption = f"6 x {params / 1e6:.1f}M params x tokens at {_GPU_UTILISATION:.0%} of {peak / 1e12:.0f} TFLOP/s"
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        rate = cores * _CPU_FLOPS_PER_CORE
        assumption = f"6 x {params / 1e6:.1f}M params x tokens at ~{rate / 1e9:.0f} GFLOP/s on {cores} CPU cores"
    seconds = 6 * params * tokens / rate
    return {"hardware": hw.name, "device": hw.device, "parameters": int(params), "tokens_per_epoch": int(tokens),
            "seconds_per_epoch": round(seconds, 1), "assumptions": assumption}


# ---------------------------------------------------------------------------
# Preview and plots


@dataclass
class PreviewRow:
    """One row as the model sees it: (text, trained) runs up to the cutoff, and what the cutoff removes."""

    file: str
    row: int  # row number (or JSONL line number)
    spans: list[tuple[str, bool]]
    cut_spans: list[tuple[str, bool]]
    n_tokens: int
    n_trained: int
    truncated_tokens: int


def preview_rows(path_or_name: str | ExampleSet, tokenizer=None, model: str | None = None, n: int = 5,
                 rows: list[int] | None = None, format: str | None = None, chat_template: str | None = None,
                 cutoff_len: int = 1024, train_on_responses_only: bool = True,
                 enable_thinking: bool | None = None) -> list[PreviewRow]:
    """Render rows through the real chat template and mark trained vs masked text.

    `rows` picks 0-based row indices; default the first `n` rows without errors.
    """
    es = path_or_name if isinstance(path_or_name, ExampleSet) else load_examples(path_or_name, format=format)
    tok, _ = _load_tokenizer(model, tokenizer)
    if tok is None:
        raise DataError("preview needs a model or tokenizer to render rows with (e.g. --model tunesmith/demo).")
    idx = rows if rows is not None else [i for i, ex in enumerate(es.examples) if ex is not None][:n]
    picked = []
    for i in idx:
        if not 0 <= i < es.n_rows:
            raise DataError(f"preview: row index {i} is out of range (0..{es.n_rows - 1}).")
        if es.examples[i] is None:
            reasons = "; ".join(p.message for p in es.problem_rows.get(i, []))
            raise DataError(f"preview: row {es.loaded.numbers[i]} cannot be rendered: {reasons}")
        picked.append(i)
    examples = [es.examples[i] for i in picked]
    template = None
    if any("text" not in ex for ex in examples):
        template = resolve_template(tok, chat_template, enable_thinking)
    encs = encode_examples(tok, template, examples, train_on_responses_only, keep_text=True)
    out = []
    for i, enc in zip(picked, encs):
        if enc.offsets is None:  # text rows and slow tokenizers: decode tokens instead
            enc = _with_offsets(tok, enc)
        spans = mask_spans(enc, cutoff_len)
        full = mask_spans(enc)
        shown = sum(len(s) for s, _ in spans)
        cut = _slice_runs(full, shown)
        f, num, _ = es.loaded.where(i)
        kept = enc.assistant_masks[:cutoff_len]
        out.append(PreviewRow(f, num, spans, cut, len(enc.input_ids), sum(kept), max(0, len(enc.input_ids) - cutoff_len)))
    return out


def _with_offsets(tok, enc: Encoded) -> Encoded:
    pieces = [tok.decode([t]) for t in enc.input_ids]
    offs, pos = [], 0
    for p in pieces:
        offs.append((pos, pos + len(p)))
        pos += len(p)
    return Encoded(enc.input_ids, enc.assistant_masks, "".join(pieces), offs)


def _slice_runs(runs: list[tuple[str, bool]], skip: int) -> list[tuple[str, bool]]:
    out = []
    for text, flag in runs:
        if skip >= len(text):
            skip -= len(text)
            continue
        out.append((text[skip:], flag))
        skip = 0
    return out


TRAINED_STYLE = "background:#c8f0d0;color:#0b3d17;"
MASKED_STYLE = "background:#eeeeee;color:#666666;"
CUT_STYLE = "background:#fbe3e3;color:#999999;text-decoration:line-through;"


def render_masked_html(spans: list[tuple[str, bool]] | PreviewRow, cut_spans: list[tuple[str, bool]] | None = None) -> str:
    """HTML for (text, trained) runs: trained text green, masked grey, cut-off text struck through in red.

    Self-contained (inline styles), escaped, whitespace and special tokens shown as they are.
    """
    if isinstance(spans, PreviewRow):
        spans, cut_spans = spans.spans, spans.cut_spans
    parts = ['<div class="ts-masked" style="font-family:monospace;white-space:pre-wrap;word-break:break-word;'
             'line-height:1.5">']
    for text, trained in spans:
        cls, style = ("ts-trained", TRAINED_STYLE) if trained else ("ts-prompt", MASKED_STYLE)
        parts.append(f'<span class="{cls}" style="{style}" title="{"trained" if trained else "masked"}">'
                     f"{html.escape(text)}</span>")
    for text, _ in cut_spans or []:
        parts.append(f'<span class="ts-cut" style="{CUT_STYLE}" title="cut off by cutoff_len">{html.escape(text)}</span>')
    parts.append("</div>")
    legend = (f'<div style="font-size:0.85em;margin-top:4px"><span style="{TRAINED_STYLE}">trained</span> '
              f'<span style="{MASKED_STYLE}">masked</span>' + (f' <span style="{CUT_STYLE}">cut off</span>' if cut_spans else "")
              + "</div>")
    return "".join(parts) + legend


def length_histogram_figure(report: InspectReport):
    """A plotly bar chart of row lengths (tokens with a model, approximate tokens without), cutoff marked."""
    import plotly.graph_objects as go

    d = report.data
    ts = d["token_stats"]
    hist = ts["histogram"] if ts else d["text_stats"]["histogram"]
    edges, counts = hist["bin_edges"], hist["counts"]
    centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    widths = [b - a for a, b in zip(edges, edges[1:])]
    fig = go.Figure(go.Bar(x=centers, y=counts, width=widths, marker_color="#4c78a8", name="rows"))
    if ts:
        fig.add_vline(x=ts["cutoff_len"], line_dash="dash", line_color="#e45756",
                      annotation_text=f"cutoff {ts['cutoff_len']}", annotation_position="top right")
    fig.update_layout(
        title=f"Row length ({'tokens, ' + ts['model'] if ts else 'approx. tokens, no model'})",
        xaxis_title="tokens per row", yaxis_title="rows", bargap=0.05, height=320, margin=dict(l=40, r=20, t=50, b=40),
    )
    return fig


def estimate_note(report: InspectReport, assumptions: bool = True) -> str:
    """One line for the UI: the time estimate (with how it was reckoned unless `assumptions` is False:
    the studio keeps that arithmetic out of plain view), or why there is none."""
    est = report.data["estimate"]
    if not est:
        return "Pick a model to estimate the training time."
    how = f" ({est['assumptions']})" if assumptions else ""
    return f"~{_duration(est['seconds_per_epoch'])} per epoch on {est['hardware']}{how}."


# ---------------------------------------------------------------------------
# Raw look at a file (before any mapping)


@dataclass
class Peek:
    """A dataset's rows as the file holds them, and the mapping Tunesmith would read them with."""

    ref: str  # what was given (path or name)
    name: str  # registry name or file name
    files: list[str]
    n_rows: int
    rows: list  # the first `sample` rows, raw; parse_errors marks the ones that did not parse
    numbers: list[int]  # their JSONL line numbers or 1-based row numbers
    line_numbered: bool  # numbers are JSONL lines
    parse_errors: dict[int, str]  # index into rows -> why the row did not parse
    mapping: ColumnMapping | None  # registered or detected; None when the rows fit no format
    evidence: list[str]  # why that mapping, or why none
    registered: bool  # the mapping comes from dataset_info.json


def peek_dataset(path_or_name: str, sample: int = 200, allowed_roots: list[str | Path] | None = None) -> Peek:
    """Read a file or registered dataset and return its first rows untouched, with the mapping in use.

    A file whose rows fit no format still comes back (mapping None, the reason in
    `evidence`), so a person can map its columns by hand. Raises DataError for an
    unreadable file, a path outside `allowed_roots`, and hub datasets (which
    need a network; they are read when checked or trained).
    """
    _check_allowed(path_or_name, allowed_roots)
    name, src, entry = resolve_ref(path_or_name)
    if (entry is not None and entry.path is None) or (entry is None and not Path(str(src)).exists()):
        raise DataError(f"{name} is a Hugging Face dataset; it is downloaded when you check the data or train, "
                        "so there is no quick look at it here.")
    loaded = read_source(src)
    mapping, evidence, registered = None, [], False
    if entry is not None and entry.mapping is not None:
        mapping, registered = entry.mapping, True
        evidence = [f"registered in dataset_info.json as {entry.format}"]
    else:
        try:
            det = detect_format(loaded.rows, loaded.files[0])
            mapping, evidence = det.mapping, det.evidence
        except DataError as e:
            evidence = [str(e)]
    one_jsonl = len(loaded.files) == 1 and bool(loaded.line_numbered and loaded.line_numbered[0])
    return Peek(
        ref=path_or_name, name=name, files=loaded.files, n_rows=len(loaded.rows), rows=loaded.rows[:sample],
        numbers=loaded.numbers[:sample], line_numbered=one_jsonl,
        parse_errors={i: r for i, r in loaded.parse_errors.items() if i < sample}, mapping=mapping,
        evidence=evidence, registered=registered,
    )
