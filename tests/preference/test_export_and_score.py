"""Finished preference runs leave the studio like any other: a DPO policy exports as an adapter, a
merged model and a checked GGUF file; a reward model exports as an adapter or merged (with its score
head) and says why not GGUF; the Chat tab scores a reply with a reward model.

Two short runs through the job manager (the worker, as the studio starts them) on the demo model.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from tunesmith.engine.catalog import demo_overrides_list
from tunesmith.engine.config import RunConfig


def _run(objective: str, name: str, steps: int):
    from tunesmith.engine import jobs

    cfg = RunConfig().with_overrides(demo_overrides_list() + [
        f"objective={objective}", "data.datasets=[preference_pairs]", "method=lora", f"training.max_steps={steps}",
        "training.learning_rate=0.005", f"output.run_name={name}"])
    run = jobs.wait(jobs.submit(cfg), timeout=600)
    assert run.status == "completed", run.error
    return run


@pytest.fixture(scope="module")
def runs(tunesmith_home):
    return _run("dpo", "pref-dpo", 2), _run("reward", "pref-reward", 4)


def test_dpo_policy_exports_as_adapter_merged_and_gguf(runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunesmith.engine import export

    dpo, _ = runs
    adapter = export.export_run(dpo.id, "adapter", tmp_path / "adapter")
    assert (adapter.path / "adapter_model.safetensors").exists()
    merged = export.export_run(dpo.id, "merged", tmp_path / "merged")
    assert AutoModelForCausalLM.from_pretrained(str(merged.path)) is not None
    assert not (merged.path / "reward_head.safetensors").exists()
    if os.environ.get("CI"):  # CI installs llama.cpp support: a missing one must fail, not skip
        import llama_cpp  # noqa: F401
    else:
        pytest.importorskip("llama_cpp", reason="llama.cpp support is not installed (`tunesmith setup gguf`)")
    gguf = export.export_run(dpo.id, "gguf", tmp_path / "gguf", quants=["f16"])
    f16 = gguf.files[0]
    assert f16["tokenization_ok"] and f16["top1_agreement"] >= 0.99, f16


def test_reward_model_exports_with_its_head_and_refuses_gguf(runs, tmp_path):
    from tunesmith.engine import export
    from tunesmith.engine.errors import ExportError

    _, reward = runs
    adapter = export.export_run(reward.id, "adapter", tmp_path / "adapter")
    assert (adapter.path / "reward_head.safetensors").exists()
    merged = export.export_run(reward.id, "merged", tmp_path / "merged")
    assert (merged.path / "reward_head.safetensors").exists() and any("score head" in n for n in merged.notes)
    with pytest.raises(ExportError, match="reward model.*adapter or merged"):
        export.export_run(reward.id, "gguf", tmp_path / "gguf")
    assert not (tmp_path / "gguf").exists()


def test_chat_tab_scores_the_last_reply_with_a_reward_model(runs):
    import gradio as gr

    from tunesmith.engine.errors import RunError
    from tunesmith.studio.chat_tab import reward_model_choices, score_text

    dpo, reward = runs
    offered = [v for _, v in reward_model_choices()["choices"]]
    assert offered == [reward.id]  # only runs that saved a score head

    q = {"role": "user", "content": "What is the capital of France?"}
    good = [q, {"role": "assistant", "content": "Paris is the capital of France."}]
    bad = [q, {"role": "assistant", "content": "No."}]
    text = score_text(reward.id, good, bad, True)
    lines = [ln for ln in text.split("\n\n") if ln.startswith("**")]
    assert [ln.split("**")[1] for ln in lines] == ["Reply", "Compared reply"]
    scores = [float(ln.rsplit(" ", 1)[1]) for ln in lines]
    assert all(math.isfinite(s) for s in scores) and scores[0] != scores[1]
    # the same reply scores the same (the model and head are cached, nothing is sampled)
    assert score_text(reward.id, good, None, False).split("\n\n")[0] == lines[0]

    with pytest.raises(gr.Error, match="no reply to score"):
        score_text(reward.id, [q], None, False)
    with pytest.raises(RunError, match="not a reward model"):
        score_text(dpo.id, good, None, False)
    with pytest.raises(gr.Error, match="Pick a reward model"):
        score_text(None, good, None, False)
    json.dumps(text)  # plain text for the page
