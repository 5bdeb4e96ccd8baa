"""LoRA variants and options change what trains: DoRA, rsLoRA, PiSSA, freeze, NEFTune, RoPE scaling,
attention implementation, dataset mixing (engine.adapters, engine.models, engine.data.mix)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tunesmith.engine import adapters, models
from tunesmith.engine.config import RunConfig
from tunesmith.engine.errors import ConfigError


def _load(*overrides: str):
    cfg = RunConfig().with_overrides(["method=lora", *overrides])
    model, tok, _ = models.load_for_training(cfg)
    return cfg, model, tok


def _batch(tok):
    ids = tok(["Who are you? I am Smith, an assistant."], return_tensors="pt")["input_ids"]
    return ids


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_dora_adds_magnitude_vectors_and_rslora_changes_the_scale():
    cfg, model, _ = _load()
    plain = adapters.build_adapter(model, cfg)
    plain_names = _trainable(plain)
    assert not any("magnitude" in n for n in plain_names)
    cfg, model, _ = _load("lora.use_dora=true", "lora.use_rslora=true", "lora.r=16", "lora.alpha=16")
    dora = adapters.build_adapter(model, cfg)
    mags = [n for n in _trainable(dora) if "lora_magnitude_vector" in n]
    assert len(mags) == sum("lora_A" in n for n in plain_names)  # one per adapted projection
    q = dora.base_model.model.model.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(16 / math.sqrt(16))  # rsLoRA: alpha / sqrt(r), not alpha / r


def test_pissa_starts_at_the_base_output_and_saves_a_plain_lora(tmp_path):
    from peft import PeftModel

    cfg, model, tok = _load("lora.init=pissa", "lora.r=4", "lora.alpha=4")
    ids = _batch(tok)
    with torch.no_grad():
        base_logits = model(ids).logits.clone()
    pm = adapters.build_adapter(model, cfg)
    pm.eval()
    with torch.no_grad():
        start = pm(ids).logits
        # PiSSA moves the top singular part into the adapter: the sum is unchanged...
        assert torch.allclose(start, base_logits, atol=1e-3)
        # ...and the adapter is not zero (unlike the default init, where B = 0)
        assert pm.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight.abs().sum() > 0
        for p in pm.parameters():  # stand-in for training: move every adapter weight
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
        trained = pm(ids).logits.clone()
    adapters.save_adapter(pm, tmp_path / "adapter", cfg)
    acfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert acfg["r"] == 8  # converted to rank 2r for the original base
    assert acfg["base_model_name_or_path"] == "tunesmith/demo"
    _, fresh, _ = _load()  # the ORIGINAL base weights
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, trained, atol=1e-3)


def test_freeze_trains_only_the_last_layers():
    cfg, model, tok = _load("method=freeze", "freeze.trainable_layers=1")
    n = model.config.num_hidden_layers
    out = adapters.build_adapter(model, cfg)
    assert out is model
    names = _trainable(model)
    assert names and all(name.startswith(f"model.layers.{n - 1}.") for name in names)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = _batch(tok)
    model(ids, labels=ids).loss.backward()
    opt.step()
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and changed <= names
    cfg2, model2, _ = _load("method=freeze", "freeze.trainable_layers=2", "freeze.trainable_modules=mlp",
                            "freeze.extra_modules=lm_head")
    adapters.build_adapter(model2, cfg2)
    names2 = _trainable(model2)
    assert {x.split(".")[2] for x in names2 if x.startswith("model.layers.")} == {str(n - 2), str(n - 1)}
    assert all(".mlp." in x for x in names2 if x.startswith("model.layers."))
    # lm_head (tied to the embeddings in the demo model, so those train too)
    assert any(x.startswith(("lm_head", "model.embed_tokens")) for x in names2)
    cfg3, model3, _ = _load("method=freeze", "freeze.trainable_modules=attention_typo")
    with pytest.raises(ConfigError, match="freeze.trainable_modules.*attention_typo"):
        adapters.build_adapter(model3, cfg3)


def test_neftune_noises_embeddings_only_while_training():
    cfg, model, tok = _load()
    ids = _batch(tok)
    emb = model.get_input_embeddings()
    clean = emb(ids).detach()
    handle = adapters.enable_neftune(model, 5.0)
    model.train()
    noisy = emb(ids).detach()
    bound = 5.0 / math.sqrt(ids.shape[1] * clean.shape[-1])
    diff = (noisy - clean).abs()
    assert diff.max() > 0 and diff.max() <= bound + 1e-6
    model.eval()
    assert torch.equal(emb(ids), clean)
    handle.remove()
    model.train()
    assert torch.equal(emb(ids), clean)


def test_rope_scaling_and_attention_implementation_reach_the_model():
    _, model, _ = _load("model.rope_scaling=linear", "model.rope_factor=2.0", "model.attn_implementation=eager")
    c = model.config
    params = getattr(c, "rope_parameters", None) or c.rope_scaling
    assert params["rope_type"] == "linear" and params["factor"] == 2.0
    _, base, _ = _load()
    assert c.max_position_embeddings == 2 * base.config.max_position_embeddings
    assert c._attn_implementation == "eager"
    # positions are really scaled: the rotary frequencies are halved
    rot, rot0 = model.model.rotary_emb, base.model.rotary_emb
    assert torch.allclose(rot.inv_freq * rot.attention_scaling, rot0.inv_freq / 2 * rot.attention_scaling)


def test_mixing_weights_set_the_proportions():
    from tunesmith.engine.data.mix import mix_counts, mix_examples

    assert mix_counts([100, 100], [0.75, 0.25]) == [100, 33]
    assert mix_counts([10, 100], [0.5, 0.5]) == [10, 10]
    assert mix_counts([10, 100], [0, 1]) == [0, 100]
    named = mix_examples([("a", [{"i": i} for i in range(100)]), ("b", [{"j": j} for j in range(40)])], [0.5, 0.5], seed=1)
    assert [len(rows) for _, rows in named] == [40, 40]
    with pytest.raises(ConfigError, match="data.mix has 1 weights for 2 datasets"):
        RunConfig().with_overrides(["data.datasets=[identity,instruct_en_zh]", "data.mix=[1.0]"])
    assert RunConfig().with_overrides(["data.datasets=[identity,instruct_en_zh]", "data.mix=0.7, 0.3"]).data.mix == [0.7, 0.3]


def test_mixing_in_prepare_datasets():
    from tunesmith.engine.data import prepare_datasets

    cfg = RunConfig().with_overrides(["data.datasets=[identity,instruct_en_zh]", "data.cutoff_len=256"])
    tok = models.load_tokenizer(cfg.model)
    full, _ = prepare_datasets(cfg, tok, use_cache=False)
    mixed, _ = prepare_datasets(cfg.with_overrides(["data.mix=[1.0, 0.0]"]), tok, use_cache=False)
    only_identity, _ = prepare_datasets(cfg.with_overrides(["data.datasets=[identity]"]), tok, use_cache=False)
    assert len(mixed) == len(only_identity) < len(full)
