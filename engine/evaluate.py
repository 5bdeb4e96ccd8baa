"""Evaluate a run: answer held-out rows, score the answers, compare with the base model.

    results = evaluate_run("demo-identity", n=20)              # the run's validation rows, tuned and base
    results = evaluate_run(run_id, data="test.jsonl", base=False)
    results[0].scores       # {"exact_match": 0.85, "rouge_l": 0.91, "bleu": 78.2, "perplexity": 1.9}
    results[0].predictions  # [Prediction(row, prompt, reference, prediction, exact, rouge_l), ...]

For each test row the conversation up to its last assistant turn is the prompt
and that turn is the reference. Replies are greedy (the same question gets the
same answer), so two evaluations of the same run agree. Scores:
- exact match: the reply equals the reference after trimming, case and spaces folded
- ROUGE-L F1 (rouge-score), with a tokenizer that also splits Chinese characters
- BLEU (sacrebleu, its "zh" tokenizer, which handles mixed Chinese/English text)
- perplexity of the reference under the model (exp of the mean token loss): lower is better

The test rows are, in order of preference: `data` (a registered name or a
file), the run's data.val_file, or the rows its data.val_size split held out
(the same seeded split training used). Results are written under
$TUNESMITH_HOME/evals/<run-id>/<time>/ as predictions.jsonl and scores.json
(temporary name, then rename); the run folder belongs to the worker.

What it does not know: whether a reply is *right* when it is worded differently
from the reference; the word-overlap scores only estimate that.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import atomic, jobs, paths
from .errors import DataError, RunError

Progress = Callable[[float, str], None]
DEFAULT_ROWS = 20  # enough to tell a better model from a worse one; a minute on the demo model on a CPU
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+", re.UNICODE)  # one token per CJK character, else words


@dataclass
class Prediction:
    row: int
    prompt: str
    reference: str
    prediction: str
    exact: bool
    rouge_l: float


@dataclass
class EvalResult:
    target: str  # the run id, or the base model's name
    label: str  # "tuned" or "base"
    test_set: str
    scores: dict[str, float | None]
    predictions: list[Prediction] = field(default_factory=list)
    path: Path | None = None  # the predictions.jsonl written

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d


# ---------------------------------------------------------------------------
# Scores (pure: unit tested without a model)
# ---------------------------------------------------------------------------


class _WordsAndCharacters:
    """rouge-score tokenizer: words, plus one token per Chinese/Japanese/Korean character
    (its default tokenizer drops every non-ASCII character, so Chinese would score 0)."""

    def tokenize(self, text: str) -> list[str]:
        return [t.lower() for t in _TOKEN.findall(text or "")]


def normalize(text: str) -> str:
    return " ".join((text or "").lower().split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize(prediction) == normalize(reference)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1]."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordsAndCharacters())
    return float(scorer.score(reference or "", prediction or "")["rougeL"].fmeasure)


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU in [0, 100] (sacrebleu, "zh" tokenization: Chinese by character, the rest as 13a)."""
    import sacrebleu

    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_bleu(predictions, [references], tokenize="zh").score)


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """exact_match (fraction), rouge_l (mean F1), bleu (0-100) of paired predictions and references."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    n = max(1, len(predictions))
    return {
        "exact_match": sum(exact_match(p, r) for p, r in zip(predictions, references)) / n,
        "rouge_l": sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n,
        "bleu": corpus_bleu(predictions, references),
    }


# ---------------------------------------------------------------------------
# Test rows
# ---------------------------------------------------------------------------


def split_turns(example: dict) -> tuple[list[dict], str] | None:
    """(prompt messages, reference reply) of a normalised example; None when it has no reply to score."""
    msgs = [{"role": m["role"], "content": m.get("content") or ""} for m in example.get("messages") or []
            if m.get("role") in ("system", "user", "assistant")]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None or not any(m["role"] == "user" for m in msgs[:last]):
        return None
    return msgs[:last], msgs[last]["content"]


def held_out_rows(run_ref: str, data: str | None = None, n: int | None = DEFAULT_ROWS) -> tuple[str, list[dict]]:
    """(test set name, examples): `data`, else the run's val_file, else the rows its val_size split held out.

    Raises DataError when the run held out nothing and no `data` is given.
    """
    from .data.examples import load_examples

    run = jobs.find_run(run_ref)
    cfg = jobs.load_config(run)
    d = cfg.data
    fmt = None if d.format == "auto" else d.format
    if data:
        name, examples = data, load_examples(data, format=fmt).usable(drop_invalid=True)
    elif d.val_file:
        name, examples = d.val_file, load_examples(d.val_file, format=fmt).usable(drop_invalid=True)
    elif d.val_size > 0:
        import datasets

        rows: list[dict] = []
        for ref in d.datasets:
            usable = load_examples(ref, format=fmt).usable(drop_invalid=d.drop_invalid)
            rows += usable[: d.max_samples] if d.max_samples is not None else usable
        n_val = max(1, round(len(rows) * d.val_size))
        # The same seeded split as engine.data.prepare (over the same row count) picks the same rows.
        idx = datasets.Dataset.from_dict({"i": list(range(len(rows)))}).train_test_split(
            test_size=n_val, seed=cfg.training.seed, shuffle=True)["test"]["i"]
        name, examples = "held-out rows (validation split)", [rows[i] for i in idx]
    else:
        raise DataError(f"Run {run.id} held out no rows (data.val_size is 0 and there is no data.val_file): "
                        "pick a test file, or train with a validation fraction.")
    examples = [ex for ex in examples if split_turns(ex) is not None]
    if not examples:
        raise DataError(f"{name}: no row has a user message followed by a reply to compare against.")
    return name, examples[:n] if n else examples


# ---------------------------------------------------------------------------
# Generation and perplexity
# ---------------------------------------------------------------------------


def _reference_loss(model, tok, prompt_ids, reference: str) -> tuple[float, int]:
    """(summed loss, token count) of the reference reply after the prompt."""
    import torch

    ref_ids = tok(reference, add_special_tokens=False, return_tensors="pt")["input_ids"].to(prompt_ids.device)
    if tok.eos_token_id is not None:
        ref_ids = torch.cat([ref_ids, torch.tensor([[tok.eos_token_id]], device=ref_ids.device)], dim=1)
    if ref_ids.shape[1] == 0:
        return 0.0, 0
    ids = torch.cat([prompt_ids, ref_ids], dim=1)
    labels = ids.clone()
    labels[:, : prompt_ids.shape[1]] = -100
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
    n = int(ref_ids.shape[1])
    return float(out.loss) * n, n


def evaluate_target(target: str, examples: list[dict], label: str, test_set: str, max_new_tokens: int = 128,
                    progress: Progress | None = None) -> EvalResult:
    """Answer every example with `target` (a run id or a model), greedily, and score the answers."""
    import torch

    from . import infer

    model, tok = infer.get_model(target)
    preds: list[Prediction] = []
    loss_sum, loss_tokens = 0.0, 0
    for i, ex in enumerate(examples):
        prompt_msgs, reference = split_turns(ex)
        prompt_ids = infer.build_prompt_ids(tok, prompt_msgs).to(model.device)
        with torch.inference_mode():
            out = model.generate(input_ids=prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                                 max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                 top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        reply = tok.decode(out[0, prompt_ids.shape[1]:], skip_special_tokens=True).strip()
        s, n = _reference_loss(model, tok, prompt_ids, reference)
        loss_sum, loss_tokens = loss_sum + s, loss_tokens + n
        user = next((m["content"] for m in reversed(prompt_msgs) if m["role"] == "user"), "")
        preds.append(Prediction(row=i + 1, prompt=user, reference=reference, prediction=reply,
                                exact=exact_match(reply, reference), rouge_l=round(rouge_l(reply, reference), 4)))
        if progress:
            progress((i + 1) / len(examples), f"{label}: {i + 1}/{len(examples)} rows")
    scores: dict[str, float | None] = score([p.prediction for p in preds], [p.reference for p in preds])
    scores["perplexity"] = math.exp(loss_sum / loss_tokens) if loss_tokens else None
    return EvalResult(target=target, label=label, test_set=test_set, scores=scores, predictions=preds)


def _write(run_id: str, results: list[EvalResult]) -> Path:
    folder = paths.home() / "evals" / run_id / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in results:
        lines += [json.dumps({"model": r.label, "target": r.target, **asdict(p)}, ensure_ascii=False)
                  for p in r.predictions]
    atomic.write_text(folder / "predictions.jsonl", "\n".join(lines) + "\n")
    atomic.write_text(folder / "scores.json", json.dumps(
        {r.label: {"target": r.target, "test_set": r.test_set, "rows": len(r.predictions), **r.scores}
         for r in results}, indent=2, ensure_ascii=False))
    for r in results:
        r.path = folder / "predictions.jsonl"
    return folder


def evaluate_run(run_ref: str, data: str | None = None, n: int | None = DEFAULT_ROWS, base: bool = True,
                 max_new_tokens: int = 128, progress: Progress | None = None) -> list[EvalResult]:
    """Score a finished run (and, with `base`, its base model) on the same test rows.

    Returns [tuned, base] (or [tuned]). Raises RunError for a run with nothing
    to load yet, DataError for a test set with no usable row.
    """
    run = jobs.find_run(run_ref)
    if not (run.has_adapter or run.has_full_model):
        raise RunError(f"Run {run.id} has no adapter or model yet ({run.status}); evaluate it when it has finished.")
    test_set, examples = held_out_rows(run.id, data, n)
    targets = [(run.id, "tuned")]
    if base:
        targets.append((jobs.load_config(run).model.name_or_path, "base"))
    results = []
    for k, (target, label) in enumerate(targets):
        def part(frac: float, msg: str, _k=k) -> None:
            if progress:
                progress((_k + frac) / len(targets), msg)

        results.append(evaluate_target(target, examples, label, test_set, max_new_tokens, part))
    _write(run.id, results)
    return results
