"""Evaluate a preference run on held-out pairs: preference accuracy and rewards, tuned vs base.

    result = evaluate_preference_run("my-dpo", n=20)           # the pairs training held out, tuned and base
    result = evaluate_preference_run(run_id, data="pairs.jsonl", base=False)
    result.metrics        # {"accuracy": 0.75, "reward_chosen": 0.21, "reward_rejected": -0.12, "margin": 0.33, ...}
    result.base_metrics   # the base model's, where meaningful (see below); None without `base`
    result.pairs          # [PairScore(row, prompt, chosen, rejected, chosen_reward, ...), ...]

A DPO / ORPO / SimPO / KTO / reward run learnt to prefer one reply over another, so it is
scored on pairs, not on generated answers: each held-out pair goes through the run's own
objective (`Objective.loss` on a batch of that one pair, the same code that computed the
training-time eval), and its logged sums are that pair's rewards. So the rewards are the
objective's: DPO and KTO beta * (log p_policy - log p_ref) with the reference = the base
model with the adapter off; ORPO and SimPO beta * mean token log-prob; a reward model its
score. Metrics:

- accuracy: the share of pairs whose chosen reply gets the higher reward (KTO: of rows whose
  reward has the sign of their label, desirable > 0 > undesirable)
- reward_chosen / reward_rejected / margin: mean rewards and their difference
- logp_accuracy: the share of pairs whose chosen reply is the more likely one (summed reply
  log-probs); defined for every language-model objective, so it compares tuned and base
- loss: the objective's mean loss per pair (not KTO: its loss needs a batch's KL estimate)

The base model (`base`): DPO's and KTO's implicit rewards are 0 for it by definition (it is
the reference), so only its logp_accuracy is reported; ORPO's and SimPO's rewards need no
reference, so the base gets them all; a reward model's base has no score head, so there is
nothing to compare (`base_note` says which of these applied).

The test pairs are `data` (a registered name or a file), else the run's validation rows:
data.val_file or the data.val_size split, made by the objective's own `prepare`, so they are
the very pairs training held out. Results are written under
$TUNESMITH_HOME/evals/<run-id>/<time>/ as pairs.jsonl and scores.json (temporary name, then
rename).

What it does not know: whether the preferred replies are good ones; it measures agreement with
the pairs' labels only. The run is loaded as the Chat tab loads it (engine.infer: a QLoRA run's
base in 16 bits), so its numbers can differ slightly from the 4-bit training-time eval. The
reference passes switch the adapter off on the model the chat caches, as training does (no
second copy of the weights), holding engine.infer.exclusive on it meanwhile: a chat with the
same run waits for them rather than getting tokens from the base model.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import atomic, jobs, paths
from .errors import DataError, RunError

Progress = Callable[[float, str], None]
OBJECTIVES = ("dpo", "orpo", "simpo", "kto", "reward")
DEFAULT_ROWS = 20


@dataclass
class PairScore:
    """One held-out pair (KTO: one labelled reply, in `chosen` when desirable, else `rejected`)."""

    row: int
    prompt: str
    chosen: str
    rejected: str
    chosen_reward: float | None
    rejected_reward: float | None
    margin: float | None
    correct: bool
    base_correct: bool | None = None  # the base model's log-prob preference (None when not measured)


@dataclass
class PreferenceResult:
    run_id: str
    objective: str
    test_set: str
    metrics: dict[str, float | None]
    base_metrics: dict[str, float | None] | None
    base_note: str | None
    pairs: list[PairScore] = field(default_factory=list)
    unit: str = "pairs"  # "rows" for KTO
    path: Path | None = None  # the pairs.jsonl written

    def to_json(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d


def is_preference_run(run_ref: str) -> bool:
    """Was this run trained with a preference objective (dpo, orpo, simpo, kto, reward)?"""
    return jobs.load_config(jobs.find_run(run_ref)).objective in OBJECTIVES


# ---------------------------------------------------------------------------
# Test rows (token rows made by the objective's own data code)


def _rows(objective, cfg, tok, data: str | None) -> tuple[str, list[dict]]:
    from .data.examples import load_examples
    from .data.pairs import pair_rows, unpaired_rows

    if data:
        es = load_examples(data, format=None if cfg.data.format == "auto" else cfg.data.format)
        named = [(es.name, es.format, es.usable(drop_invalid=True))]
        # the run is fixed here, only the test set can change: the rows' own check ends in this advice
        fix = "Pick a preference dataset or file, or the run's held-out pairs."
        rows = (unpaired_rows(cfg, tok, named, fix) if cfg.objective == "kto"
                else pair_rows(cfg, tok, named, cfg.objective, fix))
        return data, rows
    _, held = objective.prepare(tok)
    if not held:
        raise DataError("This run held out no pairs (data.val_size is 0 and there is no data.val_file): pick a test "
                        "set of preference pairs, or train with a validation fraction.")
    return "held-out pairs (validation split)", held


def _key(text: str) -> str:
    return " ".join((text or "").split())


def _questions(cfg, data: str | None) -> dict[tuple[str, ...], str]:
    """The last user message of each source pair (or KTO row), keyed by its replies' text, so the table shows
    the question a person wrote rather than the chat template's rendering of the whole prompt."""
    from .data.examples import load_examples

    fmt = None if cfg.data.format == "auto" else cfg.data.format
    refs = [data] if data else [*cfg.data.datasets, *([cfg.data.val_file] if cfg.data.val_file else [])]
    out: dict[tuple[str, ...], str] = {}
    for ref in refs:
        try:
            examples = load_examples(ref, format=fmt).usable(drop_invalid=True)
        except DataError:
            continue  # the rows were read once already; a table without questions is still right
        for ex in examples:
            msgs = ex.get("messages") or []
            user = next((m.get("content") or "" for m in reversed(msgs[:-1]) if m.get("role") == "user"), None)
            if user is None or not msgs:
                continue
            chosen = _key(msgs[-1].get("content"))
            if "rejected" in ex:
                rejected = _key(ex["rejected"].get("content"))
                out[(chosen, rejected)] = out[(chosen,)] = out[(rejected,)] = user
            else:
                out[(chosen,)] = user
    return out


def _decode(tok, ids: list[int], mask: list[int]) -> tuple[str, str]:
    """(the conversation before the reply, the reply) as text, special tokens left out."""
    start = next((i for i, m in enumerate(mask) if m), len(mask))
    reply = [t for t, m in zip(ids, mask) if m]
    return (tok.decode(ids[:start], skip_special_tokens=True).strip(),
            tok.decode(reply, skip_special_tokens=True).strip())


# ---------------------------------------------------------------------------
# Scoring


def _as_floats(sums: dict) -> dict[str, float]:
    return {k: float(v) for k, v in sums.items() if v is not None}


@contextlib.contextmanager
def _base_ctx(ctx, cfg):
    """A StepContext whose model is the base: the adapter switched off, or (a full fine-tune) the base
    model loaded on its own."""
    from . import infer
    from .training.lm import CausalLM, StepContext

    if getattr(ctx.model, "disable_adapter", None) is not None:
        # the objective's own switch (no grad), on the model the Chat tab may be answering from: held
        # exclusively, so no chat reply is generated while the adapter is off
        with infer.exclusive(ctx.model), ctx.reference():
            yield ctx
        return
    model, _ = infer.get_model(cfg.model.name_or_path)
    yield StepContext(model, CausalLM(model), ctx.device, contextlib.nullcontext)


def _summary(scores: list[PairScore], loss: float | None, logp_right: list[bool] | None) -> dict[str, float | None]:
    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    c = mean([p.chosen_reward for p in scores if p.chosen_reward is not None])
    r = mean([p.rejected_reward for p in scores if p.rejected_reward is not None])
    return {"accuracy": mean([float(p.correct) for p in scores]), "reward_chosen": c, "reward_rejected": r,
            "margin": c - r if c is not None and r is not None else None, "loss": loss,
            "logp_accuracy": mean([float(x) for x in logp_right]) if logp_right else None}


def _score_rows(run, cfg, rows: list[dict], base: bool, questions: dict, progress: Progress | None):
    """(pair scores, tuned metrics, base metrics or None, base note or None)."""
    import torch

    from . import infer
    from .objectives import get_objective
    from .objectives._pairs import sequence_logps, split
    from .training.batching import Layout
    from .training.lm import CausalLM, StepContext

    objective = get_objective(cfg.objective)(cfg)
    if cfg.objective == "kto" and objective.settings.kl != "none":
        # KTO's KL estimate shifts its loss, never its rewards (all that is reported): skip its two passes.
        objective.settings = objective.settings.model_copy(update={"kl": "none"})
    model, tok = infer.get_model(run.id)
    device = next(model.parameters()).device
    if cfg.objective == "reward" and getattr(model, "reward_head", None) is None:
        from .objectives.reward import load_head

        hidden_cfg = model.config if hasattr(model, "config") else model.get_base_model().config
        hidden = getattr(hidden_cfg, "hidden_size", None) or hidden_cfg.get_text_config().hidden_size
        # Reward.scores reads ctx.model.reward_head, as in training, where the head is part of the model.
        model.reward_head = load_head(run.run_dir / "adapter", hidden, device)
    ctx = StepContext(model, CausalLM(model), device, contextlib.nullcontext)
    # Padded, one pair per pass: each pass's sums are that pair's values; sequences never see each other.
    layout = Layout(padding_free=False, pad_id=tok.pad_token_id or 0)
    kto = cfg.objective == "kto"
    uses_reference = objective.needs_reference and getattr(objective.settings, "reference", "base") != "none"
    base_runs_loss = base and cfg.objective in ("orpo", "simpo", "dpo") and not uses_reference
    base_logps = base and cfg.objective != "reward" and not kto

    scores: list[PairScore] = []
    loss_sum, base_loss_sum = 0.0, 0.0
    logp_right, base_logp_right, base_scores = [], [], []
    for i, row in enumerate(rows):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in objective.collate([row], layout).items()}
        with torch.no_grad():
            s = _as_floats(objective.loss(ctx, batch, 1.0)[1])
        if kto:
            good = bool(row["label"])
            context, reply = _decode(tok, row["input_ids"], row["assistant_masks"])
            reward = s["chosen_reward_sum"] if good else s["rejected_reward_sum"]
            prompt = questions.get((_key(reply),), context)
            scores.append(PairScore(i + 1, prompt, reply if good else "", "" if good else reply,
                                    reward if good else None, None if good else reward, None,
                                    correct=reward > 0 if good else reward < 0))
        else:
            context, chosen = _decode(tok, row["chosen_ids"], row["chosen_mask"])
            _, rejected = _decode(tok, row["rejected_ids"], row["rejected_mask"])
            prompt = questions.get((_key(chosen), _key(rejected)), context)
            c, r = s["chosen_reward_sum"], s["rejected_reward_sum"]
            scores.append(PairScore(i + 1, prompt, chosen, rejected, c, r, c - r, correct=bool(s["correct"])))
            loss_sum += s["loss_sum"]
            if cfg.objective != "reward":
                logp_right.append(s["chosen_logp_sum"] > s["rejected_logp_sum"])
        if base_logps or base_runs_loss:
            with _base_ctx(ctx, cfg) as bctx, torch.no_grad():
                if base_runs_loss:  # reference-free: the base's own rewards are meaningful
                    bs = _as_floats(objective.loss(bctx, batch, 1.0)[1])
                    base_loss_sum += bs["loss_sum"]
                    bc, br = bs["chosen_reward_sum"], bs["rejected_reward_sum"]
                    base_scores.append(PairScore(i + 1, "", "", "", bc, br, bc - br, bool(bs["correct"])))
                    pc, pr = bs["chosen_logp_sum"], bs["rejected_logp_sum"]
                else:
                    pc, pr = (float(x) for x in split(sequence_logps(bctx, batch)[0]))
            base_logp_right.append(pc > pr)
            scores[-1].base_correct = pc > pr
        if progress:
            progress((i + 1) / len(rows), f"{i + 1}/{len(rows)} {'rows' if kto else 'pairs'}")

    metrics = _summary(scores, None if kto else loss_sum / len(rows), logp_right)
    if not base:
        return scores, metrics, None, None
    if cfg.objective == "reward":
        return scores, metrics, None, "A reward model's base has no score head: there is no base score to compare."
    if kto:
        return scores, metrics, None, ("KTO's rewards are log-prob ratios against the base model, so the base's are 0 "
                                       "by definition; unpaired rows give no log-prob preference to compare.")
    if base_runs_loss:
        return scores, metrics, _summary(base_scores, base_loss_sum / len(rows), base_logp_right), None
    base_metrics = {"accuracy": None, "reward_chosen": 0.0, "reward_rejected": 0.0, "margin": 0.0, "loss": None,
                    "logp_accuracy": sum(base_logp_right) / len(base_logp_right)}
    return scores, metrics, base_metrics, ("DPO's rewards are log-prob ratios against the base model, so the base's "
                                           "are 0 by definition; compare the log-prob accuracy instead.")


def _write(result: PreferenceResult) -> Path:
    folder = paths.home() / "evals" / result.run_id / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(asdict(p), ensure_ascii=False) for p in result.pairs]
    atomic.write_text(folder / "pairs.jsonl", "\n".join(lines) + "\n")
    atomic.write_text(folder / "scores.json", json.dumps(
        {"objective": result.objective, "test_set": result.test_set, result.unit: len(result.pairs),
         "tuned": result.metrics, "base": result.base_metrics, "base_note": result.base_note},
        indent=2, ensure_ascii=False))
    result.path = folder / "pairs.jsonl"
    return folder


def evaluate_preference_run(run_ref: str, data: str | None = None, n: int | None = DEFAULT_ROWS, base: bool = True,
                            progress: Progress | None = None) -> PreferenceResult:
    """Score a finished preference run on held-out pairs (or `data`), and with `base` its base model.

    Raises RunError for a run that is not a preference run or has nothing to load yet, DataError
    for a test set with no usable pair (or rows of the wrong kind).
    """
    from . import infer

    run = jobs.find_run(run_ref)
    cfg = jobs.load_config(run)
    if cfg.objective not in OBJECTIVES:
        raise RunError(f"Run {run.id} trained with objective {cfg.objective}, not on preferences: evaluate it by its "
                       "answers instead.")
    if not (run.has_adapter or run.has_full_model):
        raise RunError(f"Run {run.id} has no adapter or model yet ({run.status}); evaluate it when it has finished.")
    from .objectives import get_objective

    _, tok = infer.get_model(run.id)
    test_set, rows = _rows(get_objective(cfg.objective)(cfg), cfg, tok, data)
    rows = rows[:n] if n else rows
    scores, metrics, base_metrics, note = _score_rows(run, cfg, rows, base, _questions(cfg, data), progress)
    result = PreferenceResult(run.id, cfg.objective, test_set, metrics, base_metrics, note, scores,
                              unit="rows" if cfg.objective == "kto" else "pairs")
    _write(result)
    return result
