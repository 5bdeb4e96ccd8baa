"""Reward functions for on-policy objectives (grpo), each with a line of plain-language help.

    from tunesmith.engine.rewards import RewardChoice, build_rewards, REWARDS
    fns = build_rewards([RewardChoice(name="numeric_match"), RewardChoice(name="format", weight=0.5)])
    scores = [f(prompt, completion, row) for f in fns]       # floats, one per reward function

A reward sees the prompt text, the completion text and the dataset row (its `answer`, when
the data has an answer column, plus every other column). Most return 1.0 or 0.0; the length
penalty returns a value in [-1, 0]. `weight` multiplies a reward before the rewards are
summed into the total the advantages are computed from.

`python` loads `def reward(prompt, completion, **row) -> float` from a file the user names.
That file runs inside the training worker with the worker's rights: it is trusted code, like
a training script, and only a person who can already start runs should be able to name it.
"""

from __future__ import annotations

import importlib.util
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RewardFn = Callable[[str, str, dict], float]

ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
THINK_ANSWER = re.compile(r"^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$", re.S | re.I)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


# ---- plain-language help, shown in the studio and the CLI -----------------------------------

HELP: dict[str, str] = {
    "exact_match": "1 when the reply's answer (inside <answer>...</answer> if present, else the whole reply) "
                   "equals the row's answer, ignoring case and spaces; else 0.",
    "numeric_match": "1 when the last number in the reply's answer equals the number in the row's answer "
                     "(GSM8K '#### 42' works); else 0.",
    "format": "1 when the reply is thinking inside <think>...</think> followed by the answer inside "
              "<answer>...</answer>; else 0.",
    "answer_tags": "1 when the reply puts an answer inside <answer>...</answer>; else 0.",
    "regex": "1 when the reply matches your regular expression (option: pattern); else 0.",
    "contains": "1 when the reply contains your text, ignoring case (option: text); else 0.",
    "length_penalty": "Between 0 and -1: minus the reply's length in characters over max_chars (default 200), "
                      "so shorter replies score higher.",
    "python": "Your own Python file with def reward(prompt, completion, **row) -> float (option: path). "
              "Trusted code: it runs inside the training worker.",
}

RewardName = Literal["exact_match", "numeric_match", "format", "answer_tags", "regex", "contains", "length_penalty",
                     "python"]


class RewardChoice(BaseModel):
    """One reward function of a run and its weight (YAML: `rewards: [{name: numeric_match, weight: 1}]`)."""

    model_config = ConfigDict(extra="forbid")

    name: RewardName = Field(description="Which reward function; see tunesmith.engine.rewards.HELP.")
    weight: float = Field(1.0, description="Multiplies this reward before the rewards are added up.")
    pattern: str | None = Field(None, description="regex: the regular expression the reply should match.")
    text: str | None = Field(None, description="contains: the text the reply should contain.")
    max_chars: int | None = Field(None, ge=1, description="length_penalty: the length that costs the whole point.")
    path: str | None = Field(None, description="python: the .py file that defines reward(prompt, completion, **row).")

    @model_validator(mode="after")
    def _options(self) -> "RewardChoice":
        if self.name == "regex":
            if not self.pattern:
                raise ValueError("reward regex needs a pattern (e.g. pattern: '\\\\d+$')")
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"reward regex: pattern {self.pattern!r} is not a valid regular expression ({e})")
        if self.name == "contains" and not self.text:
            raise ValueError("reward contains needs a text (e.g. text: 'therefore')")
        if self.name == "python":
            if not self.path:
                raise ValueError("reward python needs a path to a .py file defining reward(prompt, completion, **row)")
            if not Path(self.path).expanduser().is_file():
                raise ValueError(f"reward python: no such file {self.path!r}; give the path of a .py file")
        if not math.isfinite(self.weight):
            raise ValueError("reward weight must be a finite number")
        return self


# ---- answers ----------------------------------------------------------------------------------

def extract_answer(completion: str) -> str:
    """The text inside the last <answer>...</answer>, or the whole completion."""
    found = ANSWER_TAG.findall(completion)
    return (found[-1] if found else completion).strip()


def _norm(s: str) -> str:
    return " ".join(str(s).split()).lower().rstrip(".")


def last_number(text: str) -> float | None:
    """The last number in `text` (thousands commas allowed), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def reference_answer(row: dict) -> str | None:
    ans = row.get("answer")
    if ans is None:
        return None
    ans = str(ans)
    if "####" in ans:  # GSM8K: the worked solution, then '#### 42'
        ans = ans.rsplit("####", 1)[1]
    return ans.strip()


# ---- the functions ------------------------------------------------------------------------------

def exact_match(prompt: str, completion: str, row: dict) -> float:
    ref = reference_answer(row)
    if ref is None:
        return 0.0
    return 1.0 if _norm(extract_answer(completion)) == _norm(ref) else 0.0


def numeric_match(prompt: str, completion: str, row: dict) -> float:
    ref = reference_answer(row)
    want = last_number(ref) if ref is not None else None
    got = last_number(extract_answer(completion))
    if want is None or got is None:
        return 0.0
    return 1.0 if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6) else 0.0


def format_reward(prompt: str, completion: str, row: dict) -> float:
    return 1.0 if THINK_ANSWER.match(completion) else 0.0


def answer_tags(prompt: str, completion: str, row: dict) -> float:
    return 1.0 if any(s.strip() for s in ANSWER_TAG.findall(completion)) else 0.0


def regex_reward(pattern: str) -> RewardFn:
    rx = re.compile(pattern, re.S)
    return lambda prompt, completion, row: 1.0 if rx.search(completion) else 0.0


def contains_reward(text: str) -> RewardFn:
    want = text.lower()
    return lambda prompt, completion, row: 1.0 if want in completion.lower() else 0.0


def length_penalty(max_chars: int = 200) -> RewardFn:
    return lambda prompt, completion, row: -min(1.0, len(completion) / max_chars)


def load_python_reward(path: str) -> RewardFn:
    """`reward(prompt, completion, **row)` from a user's file (trusted code, run in the worker)."""
    p = Path(path).expanduser().resolve()
    spec = importlib.util.spec_from_file_location(f"tunesmith_user_reward_{abs(hash(str(p)))}", p)
    if spec is None or spec.loader is None:
        raise ValueError(f"reward python: {path!r} is not a Python file")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - the user's code: say which file and why, in one line
        raise ValueError(f"reward python: {path!r} failed to load: {type(e).__name__}: {e}") from None
    fn = getattr(mod, "reward", None)
    if not callable(fn):
        raise ValueError(f"reward python: {path!r} has no function reward(prompt, completion, **row)")

    def call(prompt: str, completion: str, row: dict) -> float:
        kw = {k: v for k, v in row.items() if k not in ("prompt", "completion")}
        try:
            value = float(fn(prompt, completion, **kw))
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"reward python: {p.name} raised {type(e).__name__}: {e}") from None
        if not math.isfinite(value):
            raise ValueError(f"reward python: {p.name} returned {value}; return a finite number")
        return value

    return call


@dataclass(frozen=True)
class Reward:
    label: str
    weight: float
    fn: RewardFn


def build_reward(choice: RewardChoice) -> RewardFn:
    simple: dict[str, RewardFn] = {"exact_match": exact_match, "numeric_match": numeric_match,
                                   "format": format_reward, "answer_tags": answer_tags}
    if choice.name in simple:
        return simple[choice.name]
    if choice.name == "regex":
        return regex_reward(choice.pattern or "")
    if choice.name == "contains":
        return contains_reward(choice.text or "")
    if choice.name == "length_penalty":
        return length_penalty(choice.max_chars or 200)
    return load_python_reward(choice.path or "")


def build_rewards(choices: list[RewardChoice]) -> list[Reward]:
    """The run's reward functions with unique metric labels (a second regex becomes regex_2)."""
    out: list[Reward] = []
    seen: dict[str, int] = {}
    for c in choices:
        seen[c.name] = seen.get(c.name, 0) + 1
        label = c.name if seen[c.name] == 1 else f"{c.name}_{seen[c.name]}"
        out.append(Reward(label, c.weight, build_reward(c)))
    return out


def score(rewards: list[Reward], prompt: str, completion: str, row: dict[str, Any]) -> list[float]:
    """Each reward function's (unweighted) score of one completion."""
    return [float(r.fn(prompt, completion, row)) for r in rewards]
