"""Preference objectives train end to end on the CPU: the demo model, the bundled sets,
Tunesmith's loop (engine.trainer.Recipe in this process), LoRA.

- dpo raises the reward margin and the preference accuracy over 30 steps (eval on the pairs it
  trained on at steps 15 and 30: the margin starts at exactly 0, since the adapter starts as
  the identity, and grows), its
  reference is the base model's log-probs, and no second copy of the model exists;
- kto's rewards separate desirable from undesirable replies;
- orpo and simpo run and log their metrics;
- a reward model ranks the better reply of held-out pairs first more often than chance, and
  its head is saved and scores a reply.
"""

from __future__ import annotations

import contextlib
import gc
import math
from pathlib import Path

import pytest
import torch

from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig
from tunesmith.engine.events import EventWriter, read_events
from tunesmith.engine.trainer import Recipe



DATA = Path(__file__).resolve().parents[2] / "data"


def _train(tmp_path, objective: str, dataset: str, steps: int, *extra: str, keep: bool = False):
    cfg = RunConfig().with_overrides(demo_overrides_list() + [
        f"objective={objective}", f"data.datasets=[{dataset}]", "method=lora", f"training.max_steps={steps}",
        "training.logging_steps=1", "training.save_steps=1000", "training.batch_size=8", *extra])
    run_dir = tmp_path / objective
    run_dir.mkdir()
    recipe = Recipe(cfg, run_dir, EventWriter(run_dir), lambda: False)
    recipe.setup()
    assert recipe.train() == "completed"
    recipe.save()
    evs = read_events(run_dir)
    if not keep:
        recipe.cleanup()
    return evs, recipe, run_dir


def _last(evs, type_):
    return [e for e in evs if e["type"] == type_][-1]


def test_dpo_raises_margin_and_accuracy_with_the_base_as_reference(tmp_path, tunesmith_home):
    from transformers import AutoModelForCausalLM, PreTrainedModel

    from tunesmith.engine.models import resolve_model_path
    from tunesmith.engine.objectives._pairs import sequence_logps
    from tunesmith.engine.training.lm import StepContext

    def causal_lms():
        gc.collect()
        return [o for o in gc.get_objects() if isinstance(o, PreTrainedModel) and type(o).__name__.endswith("ForCausalLM")]

    earlier = {id(o) for o in causal_lms()}  # models other tests of this session still hold
    evs, recipe, _ = _train(tmp_path, "dpo", "preference_pairs", 30, "training.learning_rate=1e-3",
                            f"data.val_file={DATA / 'preference_pairs.json'}", "training.eval_steps=15", keep=True)
    train = [e for e in evs if e["type"] == "train"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"):
        assert all(math.isfinite(e[key]) for e in train), key
    assert train[0]["rewards/margins"] == pytest.approx(0, abs=1e-5)  # step 1: policy == reference
    mid, ev = [e for e in evs if e["type"] == "eval"]
    assert ev["eval_rewards/margins"] > mid["eval_rewards/margins"] > 0, (mid, ev)  # the margin grows
    assert ev["eval_rewards/accuracies"] > 0.6, ev

    # one model in memory: the reference is the same weights with the adapter off
    models = [o for o in causal_lms() if id(o) not in earlier]
    assert len(models) == 1, [type(m).__name__ for m in models]
    assert not any(p.requires_grad for n, p in models[0].named_parameters() if "lora_" not in n)
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("tunesmith/demo"),
                                                dtype=next(recipe.model.parameters()).dtype).eval()
    batch = recipe.objective.collate(recipe.train_rows[:3], recipe.layout)
    ctx = StepContext(recipe.model, recipe.lm, torch.device("cpu"), contextlib.nullcontext)
    ref, _ = sequence_logps(ctx, batch, reference=True)
    policy, _ = sequence_logps(ctx, batch)
    with torch.no_grad():
        z = base(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0].float().log_softmax(-1)
    tgt = batch["targets"][0]
    tok = z.gather(1, tgt.clamp(min=0)[:, None])[:, 0] * (tgt != -100)
    want = torch.zeros(batch["n_seq"] + 1).index_add(0, batch["seq_index"], tok)[:-1]
    torch.testing.assert_close(ref, want, atol=1e-4, rtol=1e-5)
    assert (policy.detach() - ref).abs().max() > 1e-3  # the trained adapter does change the policy
    recipe.cleanup()


def test_kto_rewards_separate_desirable_from_undesirable(tmp_path, tunesmith_home):
    evs, _, _ = _train(tmp_path, "kto", "kto_feedback", 8, "training.learning_rate=2e-3",
                       f"data.val_file={DATA / 'kto_feedback.json'}", "training.eval_steps=8")
    train = [e for e in evs if e["type"] == "train"]
    assert train[0]["loss"] == pytest.approx(0.5, abs=1e-4)  # 1 - sigmoid(0) before any step
    assert all("kl" in e for e in train)
    ev = _last(evs, "eval")
    assert ev["eval_rewards/chosen"] > ev["eval_rewards/rejected"], ev
    assert ev["eval_loss"] < 0.5, ev


@pytest.mark.parametrize("objective", ["orpo", "simpo"])
def test_reference_free_objectives_run(tmp_path, tunesmith_home, objective):
    evs, _, run_dir = _train(tmp_path, objective, "preference_pairs", 2)
    train = [e for e in evs if e["type"] == "train"]
    assert len(train) == 2 and all(math.isfinite(e["loss"]) for e in train)
    assert {"rewards/margins", "rewards/accuracies"} <= set(train[-1])
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_reward_model_ranks_held_out_pairs(tmp_path, tunesmith_home):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.engine.models import resolve_model_path
    from tunesmith.engine.objectives.reward import load_head, score

    # held out: instructions the training pairs never ask, each answered vs refused
    import json
    import random

    seen = {m["value"] for r in json.loads((DATA / "preference_extended.json").read_text(encoding="utf-8"))
            for m in r["conversations"]}
    rows = [r for r in json.loads((DATA / "instruct_en_zh.json").read_text(encoding="utf-8"))
            if not r["input"] and r["instruction"] not in seen]
    rng = random.Random(0)
    held = [{"prompt": r["instruction"], "chosen": r["output"], "rejected": rng.choice(["No.", "I don't know.", "不知道。"])}
            for r in rng.sample(rows, 24)]
    (tmp_path / "held_out.json").write_text(json.dumps(held, ensure_ascii=False), encoding="utf-8")
    evs, _, run_dir = _train(tmp_path, "reward", "preference_extended", 24, "training.learning_rate=1e-2",
                             f"data.val_file={tmp_path / 'held_out.json'}", "training.eval_steps=24")
    ev = _last(evs, "eval")
    assert ev["eval_rewards/accuracies"] > 0.6, ev
    adapter = run_dir / "adapter"
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("tunesmith/demo"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter)).eval()
    tok = AutoTokenizer.from_pretrained(str(adapter))
    head = load_head(adapter, base.config.hidden_size)
    q = [{"role": "user", "content": "How do I make a cup of tea?"}]
    good = score(model, tok, head, q + [{"role": "assistant", "content": "Pour freshly boiled water over a tea bag, "
                                          "wait three to five minutes, then remove the bag."}])
    assert math.isfinite(good)
