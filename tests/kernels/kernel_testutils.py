"""Shared by the kernel tests: device, dtype tolerance cases, comparisons."""
import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ON_GPU = DEVICE == "cuda"


def gpu_param(*values, id=None):
    """A parametrize case that runs only with CUDA (bf16/fp16 and large shapes)."""
    return pytest.param(*values, id=id, marks=[pytest.mark.gpu, pytest.mark.skipif(not ON_GPU, reason="needs CUDA")])


# (dtype, atol, rtol): fp32 on CPU; 16-bit cases are real on the GPU. bf16 also
# runs under the interpreter (it is emulated with numpy), so it is kept on CPU
# for the kernels where the cast rules matter.
FP32 = (torch.float32, 1e-5, 1e-5)
BF16 = (torch.bfloat16, 2e-2, 2e-2)
FP16 = (torch.float16, 2e-3, 2e-3)


def assert_close(actual, expected, atol, rtol, name=""):
    assert actual is not None, f"{name}: missing"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: NaN in output (an element was not written?)"
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def assert_close_norm(actual, expected, rel: float, name=""):
    """For long 16-bit reductions (GEMMs over thousands of rows), where single elements near
    zero carry large relative error: compare the error's norm to the reference's norm."""
    assert actual is not None and actual.shape == expected.shape, name
    assert not torch.isnan(actual).any(), f"{name}: NaN in output"
    err = (actual.float() - expected.float()).norm() / expected.float().norm().clamp_min(1e-12)
    assert err <= rel, f"{name}: relative error norm {float(err):.3e} > {rel}"


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def nf4_llama(layers: int = 4, targets=("q_proj", "down_proj"), random_lora: bool = False,
              quant_storage: torch.dtype = torch.uint8):
    """(PEFT model, NF4 base parameter count): a tiny random Llama whose decoder projections are all
    NF4 bitsandbytes layers (double quant, blocksize 64), with LoRA on `targets` (random_lora: B
    non-zero too, so every adapter gradient is). The same weights on every call. quant_storage:
    the dtype the packed bytes are stored as (FSDP shards them as the compute dtype)."""
    bnb = pytest.importorskip("bitsandbytes")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    base = transformers.AutoModelForCausalLM.from_config(cfg)
    n = 0
    for layer in base.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False, compute_dtype=torch.float32,
                                      compress_statistics=True, quant_type="nf4", quant_storage=quant_storage)
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", blocksize=64, quant_storage=quant_storage,
                                             module=q)  # as Linear4bit.__init__ does: the state lands on q too
                q = q.to(DEVICE)
                if not q.weight.bnb_quantized:
                    q.weight = q.weight._quantize(DEVICE)
                setattr(parent, name, q)
                n += lin.in_features * lin.out_features
    lora = peft.LoraConfig(r=4, target_modules=list(targets), init_lora_weights=not random_lora, lora_dropout=0.0)
    return peft.get_peft_model(base.to(DEVICE), lora), n
