"""pretrain: continued pretraining, next-token cross-entropy on every token.

The same data path and loss as sft, but nothing is masked: text rows (`{"text": ...}`) and
chat rows alike are learnt whole (data.train_on_responses_only does not apply). Use it to
teach a model a domain's language before instruction tuning. data.packing is usually on.
"""

from __future__ import annotations

from . import register
from .sft import SFT


@register
class Pretrain(SFT):
    name = "pretrain"
    description = "Continued pretraining: learn every token of the text (no prompt masking)."
    train_every_token = True
