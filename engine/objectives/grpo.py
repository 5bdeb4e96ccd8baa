"""grpo: reinforcement learning from reward functions with group-relative advantages.

For every prompt of a step the policy (the model with its adapter on) samples `group_size`
completions (HF generate, no grad). Each completion is scored by the chosen reward functions
(engine/rewards.py); their weighted sum is its reward. A completion's advantage is its reward
minus its group's mean reward, divided by the group's standard deviation (`scale_rewards`),
so only differences inside a group teach anything. The loss is the clipped policy gradient
of PPO/GRPO on the completion tokens,

    token loss = -min(r * A, clip(r, 1 - epsilon, 1 + epsilon_high) * A) + beta * KL

with r the ratio of the policy's token probability to the one that sampled it (1 here: one
update per generation, so the clip bounds only matter for loss variants run with several
passes) and KL the k3 estimate against the base model (the adapter switched off through
ctx.reference(): no weight copy). Aggregation (`loss_type`, as TRL names them):

- grpo: each completion's token mean, averaged over completions (the GRPO paper);
- dr_grpo: each completion's token sum / max_completion_length, averaged over completions
  (Dr. GRPO: no length bias; pair it with scale_rewards: false);
- dapo: token sum / token count of the forward pass, weighted by the pass's share of the
  step's completions (DAPO's token-level mean; exact when a step is one forward pass).

Data: any dataset whose rows have a prompt (registered alpaca/prompt columns, or a
`prompt`/`question`/`instruction`/`problem` column, or chat messages whose last turn is the
user's) and optionally an answer column (`answer`/`solution`/registered response column)
that the rewards compare against. Rows are rendered with the chat template and a generation
prompt. The bundled `arithmetic` set is such data.

Metrics (train events): reward (mean total), reward_std (mean in-group std), reward/<name>
(mean per function, unweighted), completion_length (tokens), kl (when beta > 0), clip_ratio,
loss. The last few completions with their scores go to `samples` events (pop_samples()).

Not done here: vLLM generation (HF generate only; on a CUDA machine the run log says
"vLLM not used: <reason>"), several optimizer updates per generation (num_iterations), eval
rows (a GRPO run has no eval loss).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..rewards import RewardChoice, build_rewards, score
from . import Objective, register

_PROMPT_COLUMNS = ("prompt", "question", "instruction", "problem", "query", "input")
_ANSWER_COLUMNS = ("answer", "solution", "target", "output", "response", "ground_truth")
SAMPLES_KEPT = 8  # completions per samples event
log = logging.getLogger(__name__)


class GRPOSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_size: int = Field(4, ge=2, le=64, description="Completions sampled per prompt; they are compared with each other.")
    max_completion_length: int = Field(64, ge=1, le=32768, description="Most tokens a completion may have.")
    # Benchmarks set it to max_completion_length so random-weight models do the same work every step.
    min_completion_length: int = Field(0, ge=0, le=32768,
                                       description="Fewest tokens before a completion may end (0 = any).")
    temperature: float = Field(1.0, gt=0, le=5, description="Sampling temperature: higher = more varied completions.")
    top_p: float = Field(1.0, gt=0, le=1, description="Sample only from the most likely tokens holding this much probability.")
    beta: float = Field(0.0, ge=0, description="Weight of the KL penalty keeping the model near the base (0 = none, faster).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clip range of the probability ratio (lower side).")
    # 0 and "" mean "not set" too: what the studio's number box sends when left empty
    epsilon_high: float | None = Field(None, ge=0, description="Upper clip range (DAPO uses 0.28); 0 or empty = epsilon.")
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = Field(
        "grpo", description="grpo: mean per completion; dr_grpo: no length bias; dapo: mean per token.")
    scale_rewards: bool = Field(True, description="Divide advantages by the group's reward std (Dr. GRPO turns it off).")
    rewards: list[RewardChoice] = Field(
        default_factory=lambda: [RewardChoice(name="numeric_match")],
        description="Reward functions and their weights, e.g. [{name: numeric_match}, {name: format, weight: 0.5}].")
    prompt_column: str | None = Field(None, description="Column with the prompt; empty = detect.")
    answer_column: str | None = Field(None, description="Column with the reference answer; empty = detect.")
    system_prompt: str | None = Field(None, description="A system message put before every prompt (e.g. the answer format).")

    @field_validator("epsilon_high", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v  # an emptied number box

    @model_validator(mode="after")
    def _check(self) -> "GRPOSettings":
        if not self.rewards:
            raise ValueError("rewards: choose at least one reward function")
        if self.min_completion_length > self.max_completion_length:
            raise ValueError("min_completion_length: must not exceed max_completion_length "
                             f"({self.max_completion_length})")
        return self


# ---- pure parts (unit-tested) ---------------------------------------------------------------

def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                     eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, per-group std) for rewards laid out group after group: (r - group mean) /
    (group std + eps) with the sample (n-1) std, as TRL; no division when not `scale`."""
    g = rewards.reshape(-1, group_size).to(torch.float32)
    mean = g.mean(dim=1, keepdim=True)
    std = g.std(dim=1, keepdim=True)
    adv = g - mean
    if scale:
        adv = adv / (std + eps)
    return adv.reshape(-1), std.reshape(-1)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                epsilon: float, epsilon_high: float, beta: float = 0.0,
                ref_logp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Per-token loss (N, L), per-token KL or None, per-token clipped flag; padded tokens 0."""
    ratio = torch.exp(logp - old_logp)
    a = adv.unsqueeze(1)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    per_tok = -torch.min(ratio * a, clipped * a)
    kl = None
    if beta > 0 and ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # k3: unbiased, always >= 0
        per_tok = per_tok + beta * kl
    was_clipped = ((ratio * a) > (clipped * a)).float()
    return per_tok * mask, (kl * mask if kl is not None else None), was_clipped * mask


def aggregate(per_tok: torch.Tensor, mask: torch.Tensor, loss_type: str, max_len: int, denom: float) -> torch.Tensor:
    """This pass's share of the step loss; `denom` is the step's number of completions."""
    n = per_tok.shape[0]
    if loss_type == "grpo":
        return (per_tok.sum(1) / mask.sum(1).clamp(min=1)).sum() / denom
    if loss_type == "dr_grpo":
        return per_tok.sum() / max_len / denom
    # dapo: token-level mean within the pass, weighted by the pass's share of completions
    return per_tok.sum() / mask.sum().clamp(min=1) * (n / denom)


def vllm_unused_reason(device: str) -> str | None:
    """Why generation does not use vLLM on this machine (None off CUDA, where vLLM does not apply).

    Generation is HF generate on the training model itself (adapter on, Tunesmith's kernels
    patched in); a vLLM engine would need the LoRA weights synced into it after every step,
    which is not built.
    """
    if device != "cuda":
        return None
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed; sampling with HF generate"
    return "vLLM generation is not built into Tunesmith yet; sampling with HF generate on the training model"


# ---- the objective ----------------------------------------------------------------------------

@register
class GRPO(Objective):
    name = "grpo"
    description = "Reinforcement learning (GRPO): sample answers, score them with reward functions, learn from the better ones."
    Settings = GRPOSettings
    needs_reference = True

    def __init__(self, cfg, settings=None):
        super().__init__(cfg, settings)
        self.rewards = None
        self._samples: list[dict] = []

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, tokenizer):
        from ..data.examples import resolve_ref
        from ..data.readers import read_source
        from ..data.templates import render, resolve_template
        from ..errors import DataError

        s = self.settings
        if s.beta > 0 and self.cfg.method == "full":
            from ..errors import ConfigError

            raise ConfigError("objective_settings.beta: the KL reference is the base with the adapter off, which "
                              "method full does not keep; use method lora/qlora, or beta: 0.")
        self.tokenizer = tokenizer
        # Sampling draws from torch's global RNG: seed it (before the adapter is made) so a run is
        # repeatable; a resumed run gets the RNG state back from its checkpoint.
        torch.manual_seed(self.cfg.training.seed)
        self.rewards = build_rewards(s.rewards)  # loads python reward files here, in the worker
        if why := vllm_unused_reason("cuda" if torch.cuda.is_available() else "cpu"):
            log.info("vLLM not used: %s", why)
        template = None
        try:
            template = resolve_template(tokenizer, self.cfg.model.chat_template)
        except DataError:
            template = None  # no chat template: the prompt text as it is
        rows: list[dict] = []
        for ref in self.cfg.data.datasets:
            name, src, entry = resolve_ref(ref)
            loaded = read_source(entry.hub_id or ref, entry.subset, entry.split) if entry is not None and entry.path is None \
                else read_source(src)
            mapping = entry.mapping if entry is not None else None
            raw = [r for r in loaded.rows if isinstance(r, dict)]
            if self.cfg.data.max_samples is not None:
                raw = raw[: self.cfg.data.max_samples]
            pcol = s.prompt_column or (mapping.prompt if mapping and mapping.prompt else None)
            acol = s.answer_column or (mapping.response if mapping and mapping.response else None)
            keys = set().union(*(r.keys() for r in raw[:200])) if raw else set()
            pcol = pcol or next((c for c in _PROMPT_COLUMNS if c in keys), None)
            mcol = mapping.messages if mapping and mapping.messages else ("messages" if "messages" in keys else None)
            if pcol is None and mcol is None:
                raise DataError(f"dataset {name!r}: no prompt column (looked for {', '.join(_PROMPT_COLUMNS)}); set "
                                "objective_settings.prompt_column to the column that holds the prompts.")
            acol = acol or next((c for c in _ANSWER_COLUMNS if c in keys and c != pcol), None)
            for i, r in enumerate(raw):
                convo = self._conversation(r, pcol, mcol, mapping)
                if convo is None:
                    raise DataError(f"dataset {name!r} row {i + 1}: no prompt text in column {pcol or mcol!r}; fix "
                                    "the row or set objective_settings.prompt_column.")
                prompt = render(tokenizer, template, [convo], add_generation_prompt=True)[0] if template \
                    else "\n".join(m["content"] for m in convo)
                ids = tokenizer(prompt, add_special_tokens=template is None)["input_ids"]
                ids = ids[-max(1, self.cfg.data.cutoff_len - s.max_completion_length):]  # keep the question's end
                extra = {k: v for k, v in r.items() if isinstance(v, (str, int, float, bool)) or v is None}
                if acol is not None and r.get(acol) is not None:
                    extra["answer"] = r[acol]
                rows.append({"input_ids": ids, "prompt": convo[-1]["content"], "row": extra})
        if not rows:
            raise DataError("no prompts in data.datasets; add a dataset with a prompt column.")
        return rows, None

    def _conversation(self, r: dict, pcol: str | None, mcol: str | None, mapping) -> list[dict] | None:
        sys = [{"role": "system", "content": self.settings.system_prompt}] if self.settings.system_prompt else []
        if pcol is not None and isinstance(r.get(pcol), str) and r[pcol].strip():
            text = r[pcol]
            q = mapping.query if mapping is not None else None
            if q and isinstance(r.get(q), str) and r[q].strip():
                text = f"{text}\n{r[q]}"
            return sys + [{"role": "user", "content": text}]
        msgs = r.get(mcol) if mcol else None
        if isinstance(msgs, list) and msgs:
            role_tag = mapping.role_tag if mapping else "role"
            content_tag = mapping.content_tag if mapping else "content"
            roles = mapping.roles() if mapping else {}
            convo = [{"role": roles.get(m.get(role_tag), m.get(role_tag)), "content": m.get(content_tag)}
                     for m in msgs if isinstance(m, dict)]
            while convo and convo[-1]["role"] == "assistant":
                convo.pop()  # train on the prompt: the reply is what the policy writes
            if convo and convo[-1]["role"] == "user" and isinstance(convo[-1]["content"], str):
                return sys + convo if not any(m["role"] == "system" for m in convo) else convo
        return None

    def row_tokens(self, row: dict) -> int:
        s = self.settings
        return s.group_size * (len(row["input_ids"]) + s.max_completion_length)

    def items(self, row: dict) -> int:
        return self.settings.group_size  # the loss is a mean over the step's completions

    def collate(self, rows, layout):
        # Generation happens inside loss(): the batch is the prompts and the layout to train in.
        return {"rows": rows, "layout": layout, "n_tokens": 0}

    # ---- loss ------------------------------------------------------------------------------
    def loss(self, ctx, batch, denom):
        from ..training.batching import IGNORE, collate_causal

        s = self.settings
        if self.rewards is None:
            self.rewards = build_rewards(s.rewards)
        rows, layout = batch["rows"], batch["layout"]
        G = s.group_size
        prompts, completions = self._generate(ctx, rows, layout.pad_id)
        n = len(completions)

        # rewards on the host
        texts = [self.tokenizer.decode(c, skip_special_tokens=True) for c in completions]
        per_fn = torch.tensor([score(self.rewards, rows[i // G]["prompt"], texts[i], rows[i // G]["row"])
                               for i in range(n)], dtype=torch.float32)
        weights = torch.tensor([r.weight for r in self.rewards], dtype=torch.float32)
        total = per_fn @ weights
        adv, std = group_advantages(total, G, s.scale_rewards)
        self._keep_samples(rows, texts, per_fn, total, G)

        # the training forward: prompt + completion, only completion tokens trained
        seqs = [{"input_ids": list(prompts[i // G]) + list(completions[i]),
                 "assistant_masks": [0] * len(prompts[i // G]) + [1] * len(completions[i])} for i in range(n)]
        if layout.pad_to is not None and sum(len(q["input_ids"]) for q in seqs) > layout.pad_to:
            # a row longer than the fixed pass size (CUDA graphs): this pass goes unpadded
            layout = dataclasses.replace(layout, pad_to=None, cu_slots=None)
        fwd = collate_causal(seqs, layout)
        fwd = {k: v.to(ctx.device) if isinstance(v, torch.Tensor) else v for k, v in fwd.items()}
        batch["n_tokens"] = fwd["n_tokens"]
        tgt = fwd["targets"].reshape(-1)
        sel = (tgt != IGNORE).nonzero(as_tuple=True)[0]
        lens = [len(c) for c in completions]
        with ctx.autocast():
            hidden = ctx.lm.hidden(fwd)
        logp = self._token_logp(ctx, hidden, sel, tgt[sel], s.temperature)
        ref = None
        if s.beta > 0:
            with ctx.reference(), ctx.autocast():
                ref = self._token_logp(ctx, ctx.lm.hidden(fwd), sel, tgt[sel], s.temperature)

        # (N, L) per-completion token grids; completions are the trained targets in order
        L = max(max(lens), 1)
        mask = torch.zeros(n, L, device=ctx.device)
        for i, k in enumerate(lens):
            mask[i, :k] = 1
        flat = mask.bool()

        def grid(v: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(n, L, device=ctx.device, dtype=v.dtype)
            return out.masked_scatter(flat, v)

        lp = grid(logp)
        ref_g = grid(ref) if ref is not None else None
        eps_hi = s.epsilon_high or s.epsilon
        per_tok, kl, clipped = policy_loss(lp, lp.detach(), adv.to(ctx.device), mask, s.epsilon, eps_hi, s.beta, ref_g)
        loss = aggregate(per_tok, mask, s.loss_type, s.max_completion_length, denom)

        tok = mask.sum(1).clamp(min=1)
        sums: dict[str, Any] = {
            "loss_sum": (per_tok.detach().sum(1) / tok).sum(),
            "completions": n, "groups": n // G,
            "reward_sum": float(total.sum()), "reward_std_sum": float(std.sum()),
            "completion_tokens": int(sum(lens)), "clipped": clipped.sum(), "tokens": int(mask.sum()),
        }
        for j, r in enumerate(self.rewards):
            sums[f"reward/{r.label}"] = float(per_fn[:, j].sum())
        if kl is not None:
            sums["kl_sum"] = (kl.detach().sum(1) / tok).sum()
        return loss, sums

    def _generate(self, ctx, rows: list[dict], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
        """Sample group_size completions per prompt (left-padded prompts); completions end at EOS."""
        s = self.settings
        tok = self.tokenizer
        prompts = [r["input_ids"] for r in rows]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=ctx.device)
        att = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=ctx.device)
        eos = tok.eos_token_id
        out = ctx.generate(ids, attention_mask=att, do_sample=True, temperature=s.temperature, top_p=s.top_p,
                           top_k=0, max_new_tokens=s.max_completion_length, num_return_sequences=s.group_size,
                           **({"min_new_tokens": s.min_completion_length} if s.min_completion_length else {}),
                           pad_token_id=pad_id, eos_token_id=eos)
        completions = []
        for row in out[:, width:].tolist():
            if eos is not None and eos in row:
                row = row[: row.index(eos) + 1]  # the EOS is learnt too: it is how a reply ends
            elif pad_id in row and pad_id != eos:
                row = row[: row.index(pad_id)]
            completions.append(row or [eos if eos is not None else pad_id])
        return prompts, completions

    @staticmethod
    def _token_logp(ctx, hidden: torch.Tensor, sel: torch.Tensor, tgt: torch.Tensor, temperature: float) -> torch.Tensor:
        """log p(target) of the selected positions, from the hidden states (or logits) of one pass."""
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, sel)
        lm = ctx.lm
        if lm.direct:
            z = F.linear(h, lm.head.weight, lm.head.bias).float()
            if lm.softcap is not None:
                z = lm.softcap * torch.tanh(z / lm.softcap)
        else:
            z = h.float()
        z = z / temperature  # the distribution the completions were sampled from
        return torch.log_softmax(z, dim=-1).gather(1, tgt.unsqueeze(1)).squeeze(1)

    def _keep_samples(self, rows, texts, per_fn, total, G) -> None:
        for i in range(0, len(texts), max(1, G // 2)):
            self._samples.append({
                "prompt": rows[i // G]["prompt"][:500], "completion": texts[i][:1000],
                "answer": None if rows[i // G]["row"].get("answer") is None else str(rows[i // G]["row"]["answer"])[:200],
                "reward": round(float(total[i]), 4),
                "scores": {r.label: round(float(per_fn[i, j]), 4) for j, r in enumerate(self.rewards)},
            })
        del self._samples[:-SAMPLES_KEPT]

    def pop_samples(self) -> list[dict]:
        """The most recent completions and their scores since the last call (for a samples event)."""
        out, self._samples = self._samples, []
        return out

    # ---- metrics ---------------------------------------------------------------------------
    def summarize(self, sums):
        n = max(sums.get("completions", 0.0), 1.0)
        groups = max(sums.get("groups", 0.0), 1.0)
        out = {"loss": sums.get("loss_sum", 0.0) / n, "reward": sums.get("reward_sum", 0.0) / n,
               "reward_std": sums.get("reward_std_sum", 0.0) / groups,
               "completion_length": sums.get("completion_tokens", 0.0) / n,
               "clip_ratio": sums.get("clipped", 0.0) / max(sums.get("tokens", 0.0), 1.0)}
        for k, v in sums.items():
            if k.startswith("reward/"):
                out[k] = v / n
        if "kl_sum" in sums:
            out["kl"] = sums["kl_sum"] / n
        return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}
