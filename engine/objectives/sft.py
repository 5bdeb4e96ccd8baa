"""sft: supervised fine-tuning, next-token cross-entropy on the trained tokens.

Data: engine.data.prepare_datasets (chat, instruction, text and preference rows; with
data.train_on_responses_only only the assistant's replies are trained; preference rows
train on the chosen reply). Loss: sum of token losses over the optimizer step / trained
tokens of the step, the same as TRL's SFTTrainer with gradient accumulation. Metrics:
loss, token_accuracy (share of trained tokens whose target was the argmax) and
trained_tokens.
"""

from __future__ import annotations

from . import Objective, register


@register
class SFT(Objective):
    name = "sft"
    description = ("Teach by example (SFT): learn the replies (or the text) token by token; start here when you have "
                   "good example answers.")
    # prompts masked from the loss by data.train_on_responses_only
    train_every_token = False

    def prepare(self, tokenizer):
        from ..data import prepare_datasets

        cfg = self.cfg
        if self.train_every_token and cfg.data.train_on_responses_only:
            cfg = cfg.model_copy(deep=True)
            cfg.data.train_on_responses_only = False
        train, val = prepare_datasets(cfg, tokenizer)
        return _rows(train), _rows(val) if val is not None and len(val) else None

    def items(self, row: dict) -> int:
        from ..training.batching import trained_tokens

        return trained_tokens(row)

    def collate(self, rows, layout):
        from ..training.batching import collate_causal

        return collate_causal(rows, layout)

    def loss(self, ctx, batch, denom):
        with ctx.autocast():
            hidden = ctx.lm.hidden(batch)
        loss, loss_sum, correct = ctx.lm.token_loss(hidden, batch["targets"], denom)
        return loss, {"loss_sum": loss_sum, "correct": correct, "targets": batch["n_targets"]}

    def summarize(self, sums):
        n = max(sums.get("targets", 0.0), 1.0)
        out = {"loss": sums["loss_sum"] / n, "trained_tokens": int(sums.get("targets", 0))}
        if sums.get("correct") is not None:
            out["token_accuracy"] = sums["correct"] / n
        return out


def _rows(ds) -> list[dict]:
    """A datasets.Dataset -> plain dict rows with the columns the loop needs."""
    if ds is None:
        return []
    cols = [c for c in ("input_ids", "assistant_masks", "seq_lengths") if c in ds.column_names]
    data = {c: ds[c] for c in cols}
    return [{c: data[c][i] for c in cols} for i in range(len(ds))]
