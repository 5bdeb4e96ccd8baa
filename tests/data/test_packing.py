"""Packing keeps examples apart: the loss of a packed row equals the unpacked loss.

transformers turns restarting position_ids into a block-diagonal causal mask
when no attention_mask is given (sdpa and eager, on the CPU too) -- but only
with use_cache=False (a KV cache disables the detection); the explicit 4-D
mask from block_diagonal_mask works either way.
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from tunesmith.engine.data.tokenize import block_diagonal_mask, pack


@lru_cache(maxsize=None)
def _build(attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, attn_implementation=attn)
    return LlamaForCausalLM(cfg)


def tiny_llama(attn: str):
    """A cached tiny random Llama in eval mode with the config's default use_cache."""
    m = _build(attn).eval()
    m.config.use_cache = True
    return m


def examples(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in (5, 9, 3, 12, 7):
        ids = torch.randint(0, 61, (n,), generator=g).tolist()
        mask = [0] * (n // 2) + [1] * (n - n // 2)  # prompt then reply
        out.append((ids, mask))
    out.append((torch.randint(0, 61, (6,), generator=g).tolist(), [1] * 6))  # a text row: all trained
    return out


def token_losses(logits: torch.Tensor, ids: list[int], mask: list[int]) -> torch.Tensor:
    labels = torch.tensor(ids[1:])
    keep = torch.tensor(mask[1:], dtype=torch.bool)
    ce = torch.nn.functional.cross_entropy(logits[0, :-1].float(), labels, reduction="none")
    return ce[keep]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked(attn):
    model = tiny_llama(attn)
    rows = examples()
    with torch.no_grad():
        unpacked = torch.cat([token_losses(model(torch.tensor([ids])).logits, ids, m) for ids, m in rows])
        packed_cols = pack(rows, max_len=64)
        assert len(packed_cols["input_ids"]) == 1
        ids, m, pos = packed_cols["input_ids"][0], packed_cols["assistant_masks"][0], packed_cols["position_ids"][0]
        logits = model(torch.tensor([ids]), position_ids=torch.tensor([pos]), use_cache=False).logits  # no attention_mask
        packed = token_losses(logits, ids, m)
        # the same via an explicit 4-D block-diagonal mask, even with the cache on
        mask4d = block_diagonal_mask(packed_cols["seq_lengths"][0])
        logits4d = model(torch.tensor([ids]), position_ids=torch.tensor([pos]), attention_mask=mask4d).logits
        packed4d = token_losses(logits4d, ids, m)
    assert packed.shape == unpacked.shape
    torch.testing.assert_close(packed, unpacked, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed4d, unpacked, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.mean(), unpacked.mean())


def test_without_position_ids_examples_would_leak():
    """Guard: the test above is meaningful (a plain causal mask gives a different loss)."""
    model = tiny_llama("sdpa")
    rows = examples()
    cols = pack(rows, max_len=64)
    ids, m = cols["input_ids"][0], cols["assistant_masks"][0]
    with torch.no_grad():
        unpacked = torch.cat([token_losses(model(torch.tensor([i])).logits, i, k) for i, k in rows])
        leaky = token_losses(model(torch.tensor([ids])).logits, ids, m)
    assert not torch.allclose(leaky, unpacked, atol=1e-4)


def test_pack_splits_rows_and_masks_first_tokens():
    rows = [([1, 2, 3], [1, 1, 1]), ([4, 5], [0, 1]), ([6, 7, 8, 9], [1, 1, 1, 1]), ([1] * 12, [1] * 12)]
    cols = pack(rows, max_len=6)
    assert cols["input_ids"] == [[1, 2, 3, 4, 5], [6, 7, 8, 9], [1] * 6]
    assert cols["position_ids"][0] == [0, 1, 2, 0, 1]
    assert cols["assistant_masks"][0] == [0, 1, 1, 0, 1]
    assert cols["seq_lengths"] == [[3, 2], [4], [6]]


def test_use_cache_defeats_position_id_packing():
    """Documents the trap: with the default use_cache, position_ids alone do not keep examples apart."""
    model = tiny_llama("sdpa").train()
    rows = examples()
    cols = pack(rows, max_len=64)
    ids, m, pos = cols["input_ids"][0], cols["assistant_masks"][0], cols["position_ids"][0]
    with torch.no_grad():
        unpacked = torch.cat([token_losses(model(torch.tensor([i])).logits, i, k) for i, k in rows])
        cached = token_losses(model(torch.tensor([ids]), position_ids=torch.tensor([pos])).logits, ids, m)
        model.config.use_cache = False
        fixed = token_losses(model(torch.tensor([ids]), position_ids=torch.tensor([pos])).logits, ids, m)
    torch.testing.assert_close(fixed, unpacked, atol=1e-5, rtol=1e-5)
    if torch.allclose(cached, unpacked, atol=1e-5):
        pytest.skip("this transformers version keeps packed examples apart even with a cache")


@pytest.mark.parametrize("explicit", [False, True])
def test_collate_packed_batch_loss(explicit):
    """Two packed rows of different widths in one batch, through the model's own loss."""
    from tunesmith.engine.data.tokenize import collate_packed

    model = tiny_llama("sdpa")
    model.config.use_cache = False
    rows = examples()
    cols = pack(rows, max_len=24)
    batch_rows = [{k: cols[k][i] for k in cols} for i in range(len(cols["input_ids"]))]
    batch = collate_packed(batch_rows, pad_token_id=0, explicit_mask=explicit)
    with torch.no_grad():
        unpacked = torch.cat([token_losses(model(torch.tensor([i])).logits, i, k) for i, k in rows])
        out = model(**batch)
    torch.testing.assert_close(out.loss, unpacked.mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # imports TRL (several seconds on 2 cores)
def test_trl_padding_free_keeps_packed_examples_apart(tokenizer, tmp_path):
    """Packed rows stay usable by TRL: prepare_datasets(packing=True) -> SFTTrainer(padding_free=True).
    (Tunesmith's own loop takes them through engine.training.batching; tests/training checks that.)

    TRL rebuilds position_ids from our seq_lengths column and sends no
    attention_mask, so the loss equals the unpacked loss. (With
    padding_free=False TRL adds an all-ones attention_mask and examples leak.)
    """
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tunesmith.engine.config import RunConfig
    from tunesmith.engine.data import prepare_datasets

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, attn_implementation="sdpa"))
    model.config.use_cache = False
    data = {"datasets": ["sharegpt_multiturn"], "cutoff_len": 512, "max_samples": 12}
    packed, _ = prepare_datasets(RunConfig.from_dict({"data": {**data, "packing": True}}), tokenizer)
    plain, _ = prepare_datasets(RunConfig.from_dict({"data": data}), tokenizer)
    args = SFTConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_length=None, padding_free=True,
                     remove_unused_columns=False, report_to="none", use_cpu=True, max_steps=1, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=packed, processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed_loss = model(**batch).loss
        losses = torch.cat([token_losses(model(torch.tensor([r["input_ids"]])).logits, r["input_ids"], r["assistant_masks"])
                            for r in plain])
    torch.testing.assert_close(packed_loss, losses.mean(), atol=1e-5, rtol=1e-5)
