"""reward: a reward model, a scalar score per (prompt, reply), trained on preference pairs.

A linear head (hidden size -> 1, fp32) reads the decoder's last hidden state at each
sequence's final token; the adapter and the head learn together with the Bradley-Terry loss

    loss = -log sigmoid(s(chosen) - s(rejected)) + center_rewards * (s(chosen) + s(rejected))^2

as TRL's RewardTrainer (center_rewards is its center_rewards_coefficient). The LM head is not
used. The head is part of the model's trainable parameters (checkpoints and resume include
it) and is written next to the adapter as reward_head.safetensors; `score` reads both back.

Metrics: rewards/chosen, rewards/rejected (mean scores), rewards/margins and
rewards/accuracies (share of pairs scored the right way round), on eval pairs too.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from . import register
from ._pairs import PairObjective, split

HEAD_FILE = "reward_head.safetensors"


class RewardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    center_rewards: float = Field(0.0, ge=0, description="Pull scores towards zero so they stay comparable across runs "
                                  "(0.01 is common); 0 = off.")


def reward_losses(sc: torch.Tensor, sr: torch.Tensor, center_rewards: float = 0.0) -> torch.Tensor:
    """Per-pair Bradley-Terry losses from chosen / rejected scores."""
    losses = -F.logsigmoid(sc - sr)
    if center_rewards:
        losses = losses + center_rewards * (sc + sr) ** 2
    return losses


def last_token_index(batch: dict) -> torch.Tensor:
    """Flat index of each sequence's last token in a collate_sequences batch."""
    idx = batch["seq_index"]
    n = batch["n_seq"]
    pos = torch.arange(idx.shape[0], device=idx.device)
    last = torch.full((n + 1,), -1, dtype=torch.long, device=idx.device)
    last.scatter_reduce_(0, idx, pos, reduce="amax")
    return last[:n]


@register
class Reward(PairObjective):
    name = "reward"
    description = ("Score replies (reward model): learn a score that ranks the better reply of each pair higher; "
                   "to judge or rank replies (the Chat tab scores with it).")
    Settings = RewardSettings

    def attach(self, model: torch.nn.Module) -> None:
        """Add the score head as a trainable submodule (before the optimizer is built)."""
        if getattr(model, "reward_head", None) is not None:
            return
        cfg = model.config if hasattr(model, "config") else model.get_base_model().config
        hidden = getattr(cfg, "hidden_size", None) or cfg.get_text_config().hidden_size
        device = next(model.parameters()).device
        head = torch.nn.Linear(hidden, 1, device=device, dtype=torch.float32)
        torch.nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
        torch.nn.init.zeros_(head.bias)
        model.reward_head = head

    def save_extra(self, model: torch.nn.Module, folder: Path) -> None:
        from safetensors.torch import save_file

        head = model.reward_head
        save_file({"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()},
                  str(Path(folder) / HEAD_FILE))

    def scores(self, ctx, batch) -> torch.Tensor:
        if not ctx.lm.direct:
            raise RuntimeError("objective reward needs a decoder-only model with a plain output layer")
        with ctx.autocast():
            hidden = ctx.lm.hidden(batch)
        h = hidden.reshape(-1, hidden.shape[-1])[last_token_index(batch)]
        return ctx.model.reward_head(h.float()).squeeze(-1)

    def loss(self, ctx, batch, denom):
        sc, sr = split(self.scores(ctx, batch))
        losses = reward_losses(sc, sr, self.settings.center_rewards)
        zero = torch.zeros_like(sc)
        return losses.sum() / denom, self.pair_sums(losses, sc, sr, zero, zero)

    def summarize(self, sums):
        out = super().summarize(sums)
        out.pop("logps/chosen", None)
        out.pop("logps/rejected", None)
        return out


def load_head(adapter_dir: str | Path, hidden: int, device="cpu") -> torch.nn.Linear:
    """The trained score head of a reward run (adapter_dir = the run's adapter/)."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / HEAD_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not a reward model run (no {HEAD_FILE})")
    st = load_file(str(path))
    head = torch.nn.Linear(hidden, 1, dtype=torch.float32)
    head.load_state_dict(st)
    return head.to(device)


@torch.no_grad()
def score(model, tokenizer, head: torch.nn.Linear, messages: list[dict], chat_template: str | None = None) -> float:
    """The reward of a conversation whose last message is the reply to score (model: the base with the
    reward run's adapter loaded)."""
    from ..data.pairs import final_reply_mask
    from ..data.templates import resolve_template
    from ..data.tokenize import encode_examples
    from ..training.batching import Layout
    from ..training.lm import CausalLM
    from ._pairs import collate_sequences

    enc = encode_examples(tokenizer, resolve_template(tokenizer, chat_template, None), [{"messages": messages}])[0]
    batch = collate_sequences([(enc.input_ids, final_reply_mask(enc.assistant_masks))], Layout(padding_free=False))
    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    lm = CausalLM(model)
    hidden = lm.hidden(batch)
    h = hidden.reshape(-1, hidden.shape[-1])[last_token_index(batch)]
    return float(head.to(device)(h.float()).squeeze())


# ---------------------------------------------------------------------------
# Scoring with a finished reward run (the Chat tab, scripts)

_HEADS: dict[tuple[str, float], torch.nn.Linear] = {}  # (head file, mtime) -> head


def is_reward_run(run) -> bool:
    """Did this run save a reward model (its adapter and the score head)?"""
    return bool(run.has_adapter) and (run.run_dir / "adapter" / HEAD_FILE).exists()


def reward_runs() -> list[tuple[str, str]]:
    """(label, run id) of the runs that can score replies, in the run list's order."""
    from .. import jobs

    return [(f"{r.name} ({r.id})", r.id) for r in jobs.list_runs() if is_reward_run(r)]


def score_reply(run_ref: str, messages: list[dict]) -> float:
    """The reward run's score of the conversation's last reply (messages: [{"role", "content"}],
    the last one the assistant's). The run's base model and adapter are loaded through
    engine.infer (cached with the chat's models); the head is cached while its file is unchanged.

    Raises RunError when the run is not a reward model, DataError when there is no reply."""
    from .. import infer, jobs
    from ..errors import DataError, RunError

    run = jobs.get_run(run_ref)
    if not is_reward_run(run):
        raise RunError(f"Run {run.id} is not a reward model: train one with objective reward (Score replies) on "
                       "preference pairs, then pick it here.")
    if not messages or messages[-1].get("role") != "assistant" or not str(messages[-1].get("content", "")).strip():
        raise DataError("There is no reply to score: the conversation must end with the assistant's reply.")
    model, tok = infer.get_model(run.id)
    path = run.run_dir / "adapter" / HEAD_FILE
    key = (str(path), path.stat().st_mtime)
    head = _HEADS.get(key)
    if head is None:
        cfg = model.config if hasattr(model, "config") else model.get_base_model().config
        hidden = getattr(cfg, "hidden_size", None) or cfg.get_text_config().hidden_size
        _HEADS.clear()
        head = _HEADS[key] = load_head(path.parent, hidden, next(model.parameters()).device)
    return score(model, tok, head, messages, jobs.load_config(run).model.chat_template)
