"""GGUF export pieces and bad input: rope factors, Q/K permutation, tokenizer identification,
file contents, fallbacks, unsupported input, full disk, interruption, Modelfiles."""

from __future__ import annotations

import errno
import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from tinymodels import (
    BPE_PATTERNS,
    CHATML,
    GEMMA_TEMPLATE,
    LLAMA3_TEMPLATE,
    MISTRAL_TEMPLATE,
    byte_level_bpe,
    needs_llama,
    sentencepiece_bpe,
)
from tunesmith.engine.errors import ExportError
from tunesmith.engine.gguf import export_gguf, write_modelfile
from tunesmith.engine.gguf import export as export_mod
from tunesmith.engine.gguf import vocab as vocab_mod
from tunesmith.engine.gguf import writer as writer_mod
from tunesmith.engine.gguf.arch import _permute_qk, llama3_rope_factors
from tunesmith.engine.gguf.modelfile import detect_chat_format
from tunesmith.engine.gguf.vocab import build_vocab, identify_pre_tokenizer


def _listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _tensors(path: Path) -> dict[str, object]:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def _field(path: Path, key: str):
    f = gguf.GGUFReader(str(path)).fields[key]
    return f.parts[f.data[0]]


# --------------------------------------------------------------------------- math


def test_llama3_rope_factors_match_transformers():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    cfg = LlamaConfig(hidden_size=4096, num_attention_heads=32, rope_parameters=rope, max_position_embeddings=131072)
    hf_inv, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    base_inv = 1.0 / (500000.0 ** (torch.arange(0, 128, 2, dtype=torch.float64) / 128))
    ours = base_inv / llama3_rope_factors(rope, 128).double()
    torch.testing.assert_close(ours.float(), hf_inv.float(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("n_head,head_dim", [(4, 64), (2, 128), (3, 8)])
def test_qk_permutation_turns_rotate_half_into_adjacent_pairs(n_head, head_dim):
    """HF ropes (x_i, x_{i+d/2}) pairs; llama.cpp's llama graph ropes (x_2i, x_2i+1). Permuting
    the rows of W must make llama.cpp's rope of (P W) x equal to P (HF rope of W x)."""
    torch.manual_seed(0)
    w = torch.randn(n_head * head_dim, 16)
    x = torch.randn(16)
    pos, half = 5.0, head_dim // 2
    theta = pos / (10000 ** (torch.arange(half) * 2 / head_dim))
    cos, sin = torch.cos(theta), torch.sin(theta)

    q = (w @ x).view(n_head, head_dim)  # HF: rotate_half
    a, b = q[:, :half], q[:, half:]
    hf = torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    qp = (_permute_qk(n_head)(w) @ x).view(n_head, half, 2)  # llama.cpp: adjacent pairs
    e, o = qp[..., 0], qp[..., 1]
    ll = torch.stack([e * cos - o * sin, o * cos + e * sin], dim=-1).view(n_head, head_dim)
    torch.testing.assert_close(ll, _permute_qk(n_head)(hf.reshape(-1, 1)).view(n_head, head_dim))


# --------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("kind,name", [("gpt2", "gpt-2"), ("llama3", "llama-bpe"), ("qwen2", "qwen2")])
def test_pre_tokenizer_identified_by_behaviour(kind, name):
    assert identify_pre_tokenizer(byte_level_bpe(kind).backend_tokenizer) == name


def _edit_tokenizer(src_dir: Path, dst: Path, edit) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src_dir.iterdir():
        if f.is_file():
            shutil.copy(f, dst / f.name)
    tj = json.loads((dst / "tokenizer.json").read_text())
    edit(tj)
    (dst / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    return dst


def _split(pattern: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


UNKNOWN_PRE = {
    "whitespace split": {"type": "Whitespace"},
    "byte-level with prefix space": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "digits in pairs": _split(BPE_PATTERNS["llama3"].replace(r"\p{N}{1,3}", r"\p{N}{1,2}")),
}


@pytest.mark.parametrize("variant", list(UNKNOWN_PRE))
def test_unknown_pre_tokenizer_refused(tmp_path, variant):
    base = tmp_path / "tok"
    byte_level_bpe("llama3").save_pretrained(base)
    d = _edit_tokenizer(base, tmp_path / "edited", lambda tj: tj.__setitem__("pre_tokenizer", UNKNOWN_PRE[variant]))
    with pytest.raises(ExportError, match="Unknown tokenizer"):
        build_vocab(d, 1280, {})


def test_unknown_tokenizer_stops_export_before_writing(tiny_model, tmp_path):
    src = tiny_model("demo", steps=0)
    d = _edit_tokenizer(src, tmp_path / "model", lambda tj: tj.__setitem__("pre_tokenizer", UNKNOWN_PRE["whitespace split"]))
    with pytest.raises(ExportError, match="Unknown tokenizer"):
        export_gguf(d, tmp_path / "out", ["f16"], check=False)
    assert _listing(tmp_path / "out") == []


def test_both_merge_formats_give_the_same_gguf_merges(tmp_path):
    tok = byte_level_bpe("qwen2")
    tok.save_pretrained(tmp_path / "lists")
    tj = json.loads((tmp_path / "lists" / "tokenizer.json").read_text())
    as_lists = [m if isinstance(m, list) else m.split(" ") for m in tj["model"]["merges"]]
    d1 = _edit_tokenizer(tmp_path / "lists", tmp_path / "a", lambda t: t["model"].__setitem__("merges", as_lists))
    d2 = _edit_tokenizer(tmp_path / "lists", tmp_path / "b", lambda t: t["model"].__setitem__("merges", [" ".join(m) for m in as_lists]))
    v1, v2 = build_vocab(d1, 1280, {}), build_vocab(d2, 1280, {})
    assert v1.merges == v2.merges and len(v1.merges) == len(as_lists) and v1.tokens == v2.tokens


def test_sentencepiece_vocab_types_scores_and_prefix(tmp_path):
    tok, _ = sentencepiece_bpe("gemma")
    tok.save_pretrained(tmp_path)
    v = build_vocab(tmp_path, 1216, {})
    assert v.model == "llama" and v.pre is None and v.add_space_prefix is False and v.add_bos
    assert v.types[v.tokens.index("<0x41>")] == vocab_mod.BYTE
    assert v.types[v.tokens.index("<start_of_turn>")] == vocab_mod.CONTROL
    assert v.tokens[v.eot_id] == "<end_of_turn>" and v.tokens[v.bos_id] == "<bos>"
    assert v.tokens[-1] == "[PAD1215]" and v.types[-1] == vocab_mod.UNUSED
    tok2, _ = sentencepiece_bpe("llama")
    tok2.save_pretrained(tmp_path / "l")
    assert build_vocab(tmp_path / "l", 1216, {}).add_space_prefix is True


# --------------------------------------------------------------------------- file contents


def test_llama3_file_contents(tiny_model, tmp_path):
    """Q/K rows permuted, V untouched, rope_freqs = llama3 factors, untied output, hparams."""
    from safetensors.torch import load_file

    src = tiny_model("llama3", steps=0)
    (r,) = export_gguf(src, tmp_path, ["f32"], check=False)
    t = _tensors(r.path)
    hf = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    q = hf["model.layers.0.self_attn.q_proj.weight"].float()
    k = hf["model.layers.0.self_attn.k_proj.weight"].float()
    np.testing.assert_array_equal(t["blk.0.attn_q.weight"].data, _permute_qk(4)(q).numpy())
    np.testing.assert_array_equal(t["blk.0.attn_k.weight"].data, _permute_qk(2)(k).numpy())
    np.testing.assert_array_equal(t["blk.0.attn_v.weight"].data, hf["model.layers.0.self_attn.v_proj.weight"].float().numpy())
    rope = dict(cfg["rope_parameters"])
    np.testing.assert_allclose(t["rope_freqs.weight"].data, llama3_rope_factors(rope, 64).numpy())
    assert "output.weight" in t
    assert _field(r.path, "llama.context_length")[0] == 131072
    assert _field(r.path, "llama.attention.head_count_kv")[0] == 2
    assert _field(r.path, "llama.rope.freq_base")[0] == 500000.0


def test_gemma2_file_contents(tiny_model, tmp_path):
    """Norms +1, tied (no output), soft-capping and per-layer sliding-window pattern."""
    from safetensors.torch import load_file

    src = tiny_model("gemma2", steps=0)
    (r,) = export_gguf(src, tmp_path, ["f16"], check=False)
    t = _tensors(r.path)
    hf = load_file(str(src / "model.safetensors"))
    np.testing.assert_allclose(t["blk.1.post_ffw_norm.weight"].data, hf["model.layers.1.post_feedforward_layernorm.weight"].float().numpy() + 1)
    assert t["blk.1.post_ffw_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "output.weight" not in t
    assert _field(r.path, "gemma2.final_logit_softcapping")[0] == 30.0
    assert _field(r.path, "gemma2.attention.sliding_window")[0] == 12
    f = gguf.GGUFReader(str(r.path)).fields["gemma2.attention.sliding_window_pattern"]
    assert [bool(f.parts[i][0]) for i in f.data] == [True, False, True, False]


def test_shards_are_streamed(tiny_model, tmp_path, monkeypatch):
    """Several safetensors shards; each tensor is loaded exactly once, one at a time."""
    src = tiny_model("qwen2", steps=0, max_shard_size="1MB")
    assert len(list(src.glob("*.safetensors"))) > 2
    from tunesmith.engine.gguf.arch import TensorPlan

    loads, live, peak = [], [0], [0]
    real = TensorPlan.load

    def counting(self):
        loads.append(self.gguf_name)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        try:
            return real(self)
        finally:
            live[0] -= 1

    monkeypatch.setattr(TensorPlan, "load", counting)
    r1, r2 = export_gguf(src, tmp_path, ["f16", "bf16"], check=False)  # both in one pass
    names = set(_tensors(r1.path))
    assert sorted(loads) == sorted(names) and peak[0] == 1 and "output.weight" not in names
    assert set(_tensors(r2.path)) == names


def test_q8_0_rows_not_multiple_of_32_fall_back_to_f16(tiny_model, tmp_path):
    src = tiny_model("demo", steps=0, overrides={"intermediate_size": 328})
    (r,) = export_gguf(src, tmp_path, ["q8_0"], check=False)
    t = _tensors(r.path)
    assert t["blk.0.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert t["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert r.fallback and "F16" in r.fallback and "blk.0.ffn_down.weight" in r.fallback


@needs_llama
def test_kquant_fallback_is_reported_and_loads(tiny_model, tmp_path):
    """ffn_down rows of 320 values: Q4_K/Q6_K need 256-multiples; llama.cpp falls back per tensor."""
    src = tiny_model("demo", overrides={"intermediate_size": 320})
    q8, q4 = export_gguf(src, tmp_path, ["q8_0", "q4_k_m"])
    assert q8.fallback is None
    assert q4.fallback and "320" in q4.fallback and "blk.0.ffn_down.weight" in q4.fallback
    types = {t.tensor_type.name for n, t in _tensors(q4.path).items() if n.endswith("ffn_down.weight")}
    assert types <= {"Q5_0", "Q5_1", "Q8_0"}
    assert q4.fidelity.tokenization_ok and q4.fidelity.top1_agreement >= 0.9


def test_gemma3_multimodal_checkpoint_exports_its_text_model(tiny_model, tmp_path):
    """Gemma3ForConditionalGeneration: text tensors under model.language_model.*, vision skipped."""
    from safetensors.torch import load_file, save_file

    src = tiny_model("gemma3", steps=0)
    d = tmp_path / "mm"
    d.mkdir()
    for f in src.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            shutil.copy(f, d / f.name)
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
           "text_config": json.loads((src / "config.json").read_text()),
           "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                             "num_attention_heads": 2, "image_size": 28, "patch_size": 14}}
    (d / "config.json").write_text(json.dumps(cfg))
    sd = {("model.language_model." + k[6:] if k.startswith("model.") else k): v for k, v in load_file(str(src / "model.safetensors")).items()}
    sd["model.vision_tower.vision_model.embeddings.patch_embedding.weight"] = torch.zeros(32, 3, 14, 14)
    sd["model.multi_modal_projector.mm_input_projection_weight"] = torch.zeros(32, 256)
    save_file(sd, str(d / "model.safetensors"))
    (mm,) = export_gguf(d, tmp_path / "a", ["f16"], check=False)
    (txt,) = export_gguf(src, tmp_path / "b", ["f16"], check=False)
    a, b = _tensors(mm.path), _tensors(txt.path)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name].data, b[name].data)


@needs_llama
def test_reference_can_be_base_plus_adapter(tiny_model, tmp_path):
    """reference_model_dir = a PEFT adapter folder: the GGUF of the merged model is compared with
    base + adapter (unmerged); the base alone is visibly a different model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_model("demo")
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    torch.manual_seed(1)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(tmp_path / "merged")

    (r,) = export_gguf(tmp_path / "merged", tmp_path / "out", ["f16"], reference_model_dir=tmp_path / "adapter")
    assert r.fidelity.tokenization_ok and r.fidelity.top1_agreement >= 0.99 and r.fidelity.mean_kl < 1e-4
    (wrong,) = export_gguf(base, tmp_path / "base-out", ["f16"], reference_model_dir=tmp_path / "adapter")
    assert wrong.fidelity.mean_kl > 100 * r.fidelity.mean_kl


# --------------------------------------------------------------------------- bad input


def test_unsupported_architecture(tmp_path):
    d = tmp_path / "neox"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"}))
    with pytest.raises(ExportError, match="Unsupported architecture.*GPTNeoXForCausalLM.*Supported: LlamaForCausalLM"):
        export_gguf(d, tmp_path / "out", ["f16"], check=False)
    assert _listing(tmp_path / "out") == []


def test_unknown_quant_type(tiny_model, tmp_path):
    with pytest.raises(ExportError, match="Unknown GGUF type 'q2_k'.*q4_k_m"):
        export_gguf(tiny_model("demo", steps=0), tmp_path, ["f16", "q2_k"], check=False)


def test_missing_weights(tiny_model, tmp_path):
    d = tmp_path / "noweights"
    d.mkdir()
    for f in tiny_model("demo", steps=0).iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d / f.name)
    with pytest.raises(ExportError, match="No \\*.safetensors"):
        export_gguf(d, tmp_path / "out", ["f16"], check=False)


def test_not_enough_disk_space_is_checked_first(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ExportError, match="Not enough disk space.*needs about"):
        export_gguf(tiny_model("demo", steps=0), tmp_path / "out", ["f16", "q8_0"], check=False)
    assert _listing(tmp_path / "out") == []


def test_disk_full_while_writing_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    calls = [0]
    real = writer_mod._write_tensor

    def filling_up(w, a):
        calls[0] += 1
        if calls[0] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(w, a)

    monkeypatch.setattr(writer_mod, "_write_tensor", filling_up)
    with pytest.raises(ExportError, match="disk filled up"):
        export_gguf(tiny_model("demo", steps=0), tmp_path / "out", ["f16", "q8_0"], check=False)
    assert _listing(tmp_path / "out") == []


def test_interrupted_export_leaves_no_partial_file(tiny_model, tmp_path):
    def interrupt(frac, msg):
        if msg.startswith("writing") and frac > 0.2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        export_gguf(tiny_model("demo", steps=0), tmp_path / "out", ["f32", "f16"], progress=interrupt, check=False)
    if sys.version_info >= (3, 11):  # exception notes
        assert any("partial files removed" in n for n in info.value.__notes__)
    assert _listing(tmp_path / "out") == []


@needs_llama
def test_interrupted_quantization_keeps_only_complete_files(tiny_model, tmp_path):
    seen = []

    def interrupt(frac, msg):  # the 2nd report comes from inside the quantizer's wait loop
        if msg.startswith("quantizing"):
            seen.append(frac)
            if len(seen) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_gguf(tiny_model("demo", steps=0), tmp_path, ["f16", "q4_k_m"], progress=interrupt, check=False)
    names = _listing(tmp_path)
    assert not [n for n in names if n.endswith(".partial") or "Q4_K_M" in n or "quant-source" in n]
    assert any(n.endswith("-F16.gguf") for n in names)  # complete before the interruption


@needs_llama
def test_tokenization_mismatch_fails_the_export(tiny_model, tmp_path, monkeypatch):
    """Name the wrong pre-tokenizer (Qwen 2 splits digits one by one, the Llama 3 vocab has merges
    for digit groups): llama.cpp's ids differ from HF's, the export fails and leaves no file."""
    monkeypatch.setattr(vocab_mod, "identify_pre_tokenizer", lambda backend: "qwen2")
    with pytest.raises(ExportError, match="tokenizes differently.*Numbers"):
        export_gguf(tiny_model("llama3", steps=0), tmp_path / "out", ["f16", "q4_k_m"])
    assert [n for n in _listing(tmp_path / "out") if n.endswith(".gguf") or n.endswith(".partial")] == []


# --------------------------------------------------------------------------- Ollama


@pytest.mark.parametrize("template,name", [(CHATML, "chatml"), (LLAMA3_TEMPLATE, "llama3"), (GEMMA_TEMPLATE, "gemma"), (MISTRAL_TEMPLATE, "mistral")])
def test_chat_format_detected_from_template(template, name):
    from transformers import PreTrainedTokenizerFast

    base = byte_level_bpe("gpt2")
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, bos_token="<s>", eos_token="</s>", chat_template=template)
    fmt = detect_chat_format(tok)
    assert fmt is not None and fmt.name == name


def test_modelfile_contents(tiny_model, tmp_path):
    src = tiny_model("demo", steps=0)
    gguf_path = tmp_path / "demo-Q4_K_M.gguf"
    gguf_path.write_bytes(b"")
    mf = write_modelfile(gguf_path, src, stop_tokens=["<|im_end|>"], context_length=1024)
    text = mf.read_text()
    assert mf == tmp_path / "demo-Q4_K_M.Modelfile"
    assert "FROM ./demo-Q4_K_M.gguf" in text and 'TEMPLATE """' in text and "<|im_start|>assistant" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER num_ctx 1024" in text
    assert "ollama create demo-q4_k_m -f" in text


def test_modelfile_without_known_template(tiny_model, tmp_path):
    src = tiny_model("demo", steps=0)
    d = tmp_path / "m"
    shutil.copytree(src, d)
    (d / "chat_template.jinja").write_text("{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    (d / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    gguf_path = d / "x-F16.gguf"
    gguf_path.write_bytes(b"")
    text = write_modelfile(gguf_path, d).read_text()
    # the comment tells the truth: Ollama does not run the GGUF's Jinja template (issue 15)
    assert "TEMPLATE" not in text.replace("No TEMPLATE", "") and "does not run the template stored in the GGUF" in text
    assert "PARAMETER temperature 0" in text


GO_RENDER = r"""package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct{ Role, Content string }

func main() {
	var in struct {
		Template string
		Messages []Message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("m").Parse(in.Template))
	if err := t.Execute(os.Stdout, map[string]any{"Messages": in.Messages}); err != nil {
		panic(err)
	}
}
"""


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go toolchain (Ollama's templates are Go text/template)")
def test_ollama_templates_render_like_the_chat_templates(tmp_path):
    """Run each TEMPLATE through Go's text/template (what Ollama uses) and compare with the
    Python rendering that was matched against the HF chat template."""
    import subprocess

    from tunesmith.engine.gguf.modelfile import FORMATS

    src = tmp_path / "render.go"
    src.write_text(GO_RENDER)
    exe = tmp_path / "render"
    subprocess.run(["go", "build", "-o", str(exe), str(src)], check=True, capture_output=True)
    convs = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
         {"role": "user", "content": "Colour?"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    ]
    for fmt in FORMATS:
        for msgs in convs:
            payload = json.dumps({"Template": fmt.go_template(), "Messages": [{"Role": m["role"], "Content": m["content"]} for m in msgs]})
            out = subprocess.run([str(exe)], input=payload, capture_output=True, text=True, check=True).stdout
            assert out == fmt.render(msgs), (fmt.name, msgs)
