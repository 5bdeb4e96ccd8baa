"""What trains: LoRA and its variants (DoRA, rsLoRA, PiSSA), freeze tuning, NEFTune.

    model = build_adapter(model, cfg)      # PeftModel for lora/qlora, the model itself for full/freeze
    handle = enable_neftune(model, 5.0)    # noisy input embeddings while model.training
    save_adapter(model, out_dir)           # PiSSA adapters are converted to plain LoRA on save

The RunConfig fields that drive it: `method`, `lora.*` (r, alpha, dropout,
target_modules, use_dora, use_rslora, init), `freeze.*` and
`training.neftune_alpha`. Gradient checkpointing and k-bit preparation stay
with the trainer, which calls build_adapter after them.

Tunesmith's kernels need no word from here: kernels.patch runs PEFT's own
layers where a module is a DoRA (or other variant) layer or has a trainable base
weight (freeze), and says so in its report; rsLoRA and PiSSA change only the
scale and the starting values, which the fused path reads as they are.

LoftQ (`lora.init: loftq`, QLoRA 4-bit only): the adapter starts as the best rank-r
fit of each weight's 4-bit rounding error, so base + adapter starts closer to the
original model than the 4-bit base alone. Such an adapter belongs to the 4-bit base:
the adapter folder records which weights were 4-bit and how (tunesmith_loftq.json,
and a line in its README.md), and chat, the merge and GGUF export put the adapter on
those weights rounded through 4-bit (quantized_base_weight) instead of the original
ones, where the correction would count twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

# PEFT's randomized SVD with 16 power iterations: seconds instead of minutes for a full SVD
# of every projection of an 8B model, with the same top singular vectors in practice.
_PISSA_INIT = "pissa_niter_16"


def build_adapter(model, cfg: RunConfig):
    """Make only what cfg says trainable; returns the model to train (a PeftModel for LoRA methods)."""
    if cfg.method == "full":
        return model
    if cfg.method == "freeze":
        freeze_layers(model, cfg)
        return model
    from peft import LoraConfig, get_peft_model

    lc = cfg.lora
    # loftq: PEFT builds a plain adapter, then loftq_init sets its starting values
    init: Any = {"default": True, "gaussian": "gaussian", "pissa": _PISSA_INIT, "loftq": True}[lc.init]
    peft_cfg = LoraConfig(
        r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=lc.target_modules,
        use_dora=lc.use_dora, use_rslora=lc.use_rslora, init_lora_weights=init,
        bias="none", task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_cfg)
    if lc.init == "loftq":
        loftq_init(model, cfg)
    if lc.precision == "bf16":
        adapters_to_bf16(model)
    if lc.init == "pissa":
        _remember_pissa_init(model)
    trainable, total = model.get_nb_trainable_parameters()
    variant = ", ".join(n for n, on in (("DoRA", lc.use_dora), ("rsLoRA", lc.use_rslora), (f"{lc.init} init", lc.init != "default")) if on)
    log.info("LoRA%s: %s trainable of %s parameters (%.2f%%)", f" ({variant})" if variant else "",
             f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def adapters_to_bf16(model) -> None:
    """lora.precision bf16: the LoRA A/B weights (and so their gradients and updates) in bf16, as TRL's
    SFTTrainer stores QLoRA adapters. DoRA's magnitudes stay fp32: their updates are far below bf16's
    step and would never land."""
    for name, p in model.named_parameters():
        if p.requires_grad and ("lora_A" in name or "lora_B" in name) and p.dtype != torch.bfloat16:
            p.data = p.data.to(torch.bfloat16)


# ---- LoftQ --------------------------------------------------------------------

LOFTQ_FILE = "tunesmith_loftq.json"  # in an adapter folder: the 4-bit base it was fitted to
_LOFTQ_ATTR = "_tunesmith_loftq"
_PEFT_PREFIX = "base_model.model."


def _top_singular(m: torch.Tensor, r: int):
    """(U, S, Vh) holding at least the top r singular triplets of m. A full SVD of an 8B model's
    14336 x 4096 projections takes seconds each (minutes over 224 of them); when m is much larger than r,
    a randomized SVD (Halko et al.; 4 power iterations) finds the top r to within float error in
    milliseconds."""
    if min(m.shape) <= 4 * (r + 8):
        return torch.linalg.svd(m, full_matrices=False)
    u, sv, v = torch.svd_lowrank(m, q=r + 8, niter=4)
    return u, sv, v.t()


def loftq_init(model, cfg: RunConfig) -> dict:
    """Start every LoRA pair on a 4-bit layer at the best rank-r fit of that weight's rounding error
    (LoftQ, Li et al. 2023, arXiv:2310.08659): with Q the dequantized NF4 weight and W the original,
    scale * B @ A = the top-r SVD of W - Q, so Q + scale * B @ A starts nearer W than Q does.

    The base stays as it is (already 4-bit), which is PEFT's replace_lora_weights_loftq approach;
    this does the same fit itself because PEFT's runs its SVD on "cuda" only (no CPU runs) and ignores
    the LoRA scale (right only when alpha equals r). The original weights are read one at a time
    from the model's safetensors (the local folder, or the hub cache for a hub id).
    Returns the record save_adapter writes next to the adapter (LOFTQ_FILE)."""
    import time

    import bitsandbytes as bnb

    started = time.monotonic()
    source = _OriginalWeights(original_weights_dir(cfg))
    quantized: list[str] = []
    state = None
    err_before = err_after = norm = 0.0
    fitted = 0
    device = "cpu"  # where bitsandbytes quantized (and so where later roundings should happen)
    for name, mod in model.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            quantized.append(_param_name(name) + ".weight")
            state = state or mod.weight.quant_state
        lora_a = getattr(mod, "lora_A", None)
        if lora_a is None or "default" not in lora_a or not isinstance(mod.get_base_layer(), bnb.nn.Linear4bit):
            continue
        base = mod.get_base_layer()
        q = dequantize_4bit_layer(base).float()
        device = q.device.type
        w = source.get(_param_name(name) + ".weight").to(q.device, torch.float32)
        residual = w - q
        r, scale = mod.r["default"], mod.scaling["default"]
        u, sv, vh = _top_singular(residual, r)
        root = (sv[:r] / scale).sqrt()  # split evenly, so scale * B @ A = U_r S_r Vh_r
        a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
        a.data = (root[:, None] * vh[:r]).to(a.dtype)
        b.data = (u[:, :r] * root[None, :]).to(b.dtype)
        err_before += residual.square().sum().item()
        err_after += (residual - scale * (b.float() @ a.float())).square().sum().item()
        norm += w.square().sum().item()
        fitted += 1
    if not fitted or state is None:
        raise ConfigError("lora.init: loftq found no LoRA layer on a 4-bit weight; it needs method qlora with "
                          "quantization.bits 4.")
    record = {
        "about": "A LoftQ adapter: it corrects the rounding of this 4-bit base, so it belongs on those weights "
                 "(dequantized), not on the original 16-bit ones.",
        # a CPU eval forward repacks the state (keeping what it was in original_*), so cfg says the rest
        "quantization": "bitsandbytes 4-bit", "quant_type": cfg.quantization.quant_type,
        "blocksize": int(state.blocksize), "double_quant": cfg.quantization.double_quant,
        "dtype": str(getattr(state, "original_dtype", state.dtype)).removeprefix("torch."),
        "device": device, "weights": sorted(quantized),
    }
    setattr(model, _LOFTQ_ATTR, record)
    log.info("LoftQ: %d adapters fitted to their weights' 4-bit rounding in %.1f s; weight error vs the original "
             "%.3f%% -> %.3f%% (4-bit base alone -> base + adapter)", fitted, time.monotonic() - started,
             100 * math.sqrt(err_before / norm), 100 * math.sqrt(err_after / norm))
    return record


def _packed_4bit(layer) -> tuple[torch.Tensor, Any]:
    """A bitsandbytes 4-bit layer's packed weight and quant state in the standard layout: on CPUs with
    AVX512-BF16, bitsandbytes repacks them at the first no-grad forward in eval mode, and the
    dequantizer reads only the standard layout."""
    data, state = layer.weight.data, layer.weight.quant_state
    if getattr(state, "packing_format_for_cpu", False):
        import copy

        from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

        # on copies: the inverse edits the state it is given, which the layer keeps using
        data, state = _convert_weight_packed_for_cpu_inverse(data.clone(), copy.deepcopy(state))
    return data, state


def dequantize_4bit_layer(layer) -> torch.Tensor:
    """The weight a bitsandbytes 4-bit layer computes with, dequantized (its compute dtype)."""
    from bitsandbytes.functional import dequantize_4bit

    return dequantize_4bit(*_packed_4bit(layer))


def original_weights_dir(cfg: RunConfig) -> Path:
    """The folder with the base model's safetensors: the local folder, or the hub snapshot (the cache
    from_pretrained just filled; downloaded when missing)."""
    from . import models

    src = Path(models.resolve_model_path(cfg.model.name_or_path))
    if src.is_dir():
        return src
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(cfg.model.name_or_path, revision=cfg.model.revision,
                                      allow_patterns=["*.safetensors", "*.safetensors.index.json", "config.json"]))
    except Exception as e:  # offline and not cached, gated, ...
        raise ConfigError(f"lora.init: loftq needs {cfg.model.name_or_path}'s original safetensors weights and could "
                          f"not get them ({type(e).__name__}); use init default, or a local model folder.") from e


class _OriginalWeights:
    """Tensors by name from a folder of safetensors files, one at a time."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        self.where: dict[str, Path] = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(str(f), framework="pt") as st:
                self.where.update(dict.fromkeys(st.keys(), f))
        if not self.where:
            raise ConfigError(f"lora.init: loftq needs the base model's .safetensors weights; {folder} has none.")

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        key = name if name in self.where else name.split(".", 1)[-1]  # a checkpoint saved without "model."
        if key not in self.where:
            raise ConfigError(f"lora.init: loftq cannot find the original weight {name} in the base model's "
                              "safetensors; use init default.")
        with safe_open(str(self.where[key]), framework="pt") as st:
            return st.get_tensor(key)


def _param_name(module_name: str) -> str:
    """A PEFT module name as the base model names it (what checkpoints and merges use)."""
    name = module_name.removeprefix(_PEFT_PREFIX)
    return name.removesuffix(".base_layer")


def loftq_record(adapter_dir: Path | str) -> dict | None:
    """The LoftQ record of an adapter folder, None for any other adapter."""
    import json

    f = Path(adapter_dir) / LOFTQ_FILE
    return json.loads(f.read_text(encoding="utf-8")) if f.exists() else None


def quantized_base_weight(w: torch.Tensor, record: dict) -> torch.Tensor:
    """What training saw for the original weight `w`: w rounded to 4 bits as bitsandbytes did then
    (same type, block size, double quantization, dtype, and device kind when there is one), in fp32."""
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    device = "cuda" if record.get("device") == "cuda" and torch.cuda.is_available() else "cpu"
    packed, state = quantize_4bit(w.to(device, getattr(torch, record["dtype"])), blocksize=record["blocksize"],
                                  compress_statistics=record["double_quant"], quant_type=record["quant_type"])
    return dequantize_4bit(packed, state).to("cpu", torch.float32)


@torch.no_grad()
def use_loftq_base(model, adapter_dir: Path | str) -> int:
    """Round the weights a LoftQ adapter's base had in 4 bits through 4 bits, in place, on a 16-bit
    model loaded for chat or serving; returns how many (0 for any other adapter)."""
    record = loftq_record(adapter_dir)
    if record is None:
        return 0
    params = dict(model.named_parameters())
    for name in record["weights"]:
        p = params[name]
        p.copy_(quantized_base_weight(p.data, record).to(p.device, p.dtype))
    log.info("LoftQ adapter: %d base weights rounded through 4 bits, as in training", len(record["weights"]))
    return len(record["weights"])


def _write_loftq_record(model, out_dir: Path) -> None:
    import json

    record = getattr(model, _LOFTQ_ATTR, None)
    if record is None:
        return
    (out_dir / LOFTQ_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    card = out_dir / "README.md"
    note = ("\n## LoftQ: load the base in 4 bits\n\nThis adapter was initialised with LoftQ against the "
            f"{record['quant_type'].upper()} 4-bit base (bitsandbytes, block size {record['blocksize']}, double "
            f"quantization {'on' if record['double_quant'] else 'off'}): it corrects that base's rounding. Load "
            "the base with `BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="
            f"\"{record['quant_type']}\", bnb_4bit_use_double_quant={record['double_quant']})` before adding "
            "it; on the original 16-bit weights its correction counts twice. Tunesmith's merged and GGUF "
            f"exports already use the 4-bit base; {LOFTQ_FILE} lists its 4-bit weights.\n")
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    card.write_text(text + note, encoding="utf-8")


# ---- freeze tuning ------------------------------------------------------------


def decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """(dotted name, list) of the transformer blocks: the ModuleList as long as config.num_hidden_layers."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
            return name, mod
    raise ConfigError("method freeze: cannot find this model's list of transformer layers; use lora or full.")


def freeze_layers(model, cfg: RunConfig) -> list[str]:
    """Train only the last freeze.trainable_layers blocks (optionally only some modules in them) and
    freeze.extra_modules; everything else gets requires_grad=False. Returns the trainable names."""
    fc = cfg.freeze
    prefix, layers = decoder_layers(model)
    n_layers = len(layers)
    if fc.trainable_layers > n_layers:
        raise ConfigError(f"freeze.trainable_layers={fc.trainable_layers}: this model has only {n_layers} layers.")
    first = n_layers - fc.trainable_layers
    layer_re = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    trainable: list[str] = []
    matched_modules: set[str] = set()
    matched_extra: set[str] = set()
    chosen: set[int] = set()  # ids of the parameters to train (a tied weight is one parameter)
    # remove_duplicate=False: a tied lm_head is listed under its own name too (and trains embed_tokens)
    for name, p in model.named_parameters(remove_duplicate=False):
        on = False
        m = layer_re.match(name)
        if m and int(m.group(1)) >= first:
            if fc.trainable_modules == "all":
                on = True
            else:
                hits = [t for t in fc.trainable_modules if t in m.group(2)]
                matched_modules.update(hits)
                on = bool(hits)
        elif not m:
            hits = [t for t in fc.extra_modules if t in name]
            matched_extra.update(hits)
            on = bool(hits)
        if on:
            trainable.append(name)
            chosen.add(id(p))
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    if fc.trainable_modules != "all":
        missing = [t for t in fc.trainable_modules if t not in matched_modules]
        if missing:
            raise ConfigError(f"freeze.trainable_modules: no module named like {missing} in the trained layers "
                              f"(e.g. {sorted(_child_names(layers[-1]))}).")
    missing = [t for t in fc.extra_modules if t not in matched_extra]
    if missing:
        raise ConfigError(f"freeze.extra_modules: no module named like {missing} outside the layers.")
    if not trainable:
        raise ConfigError("method freeze: nothing left to train; check freeze.trainable_modules.")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("freeze: training layers %d-%d of %d: %s of %s parameters (%.2f%%)", first, n_layers - 1, n_layers,
             f"{n_train:,}", f"{n_all:,}", 100 * n_train / n_all)
    return trainable


def _child_names(layer: torch.nn.Module) -> set[str]:
    return {n.split(".")[0] for n, _ in layer.named_modules() if n}


# ---- NEFTune ------------------------------------------------------------------


def enable_neftune(model, alpha: float):
    """Add NEFTune noise to the input embeddings while model.training: uniform in
    [-alpha / sqrt(L * d), +alpha / sqrt(L * d)] for L tokens of width d (Jain et al. 2023,
    arXiv:2310.05914). Evaluation and generation (model.eval()) see clean embeddings.
    Returns the hook handle (handle.remove() turns it off)."""
    emb = model.get_input_embeddings()

    def _noise(module, args, output):
        if not module.training:
            return output
        dims = output.size(-2) * output.size(-1)
        mag = alpha / math.sqrt(dims)
        return output + torch.zeros_like(output).uniform_(-mag, mag)

    log.info("NEFTune: noise alpha %s on the input embeddings while training", alpha)
    return emb.register_forward_hook(_noise)


# ---- saving -------------------------------------------------------------------

_PISSA_ATTR = "_tunesmith_pissa_init"


def _remember_pissa_init(model) -> None:
    """Keep the PiSSA starting adapter (as saved files, in memory) for the conversion at save time.

    PiSSA moves the top singular part of each weight into the adapter and leaves the residual
    in the base: the trained adapter only fits that residual base. On save, PEFT turns it into a
    plain LoRA of rank 2r for the ORIGINAL base, given the starting adapter saved with
    init_lora_weights=True (so loading it does not decompose the residual again)."""
    pc = model.peft_config["default"]
    init = pc.init_lora_weights
    pc.init_lora_weights = True
    try:
        with tempfile.TemporaryDirectory() as d:
            model.save_pretrained(d)
            files = {p.name: p.read_bytes() for p in Path(d).iterdir() if p.is_file()}
    finally:
        pc.init_lora_weights = init
    setattr(model, _PISSA_ATTR, files)


def portable_base_id(name_or_path: str) -> str:
    """How an adapter names its base model: the hub id (also for a hub cache folder,
    .../models--org--name/snapshots/...), tunesmith/demo, or a local folder's name, never an
    absolute path of this machine."""
    from .config import DEMO_MODEL

    if name_or_path == DEMO_MODEL:
        return DEMO_MODEL
    p = Path(name_or_path).expanduser()
    if not p.exists():
        return name_or_path  # a hub id
    for part in reversed(p.resolve().parts):
        if part.startswith("models--"):
            return part[len("models--"):].replace("--", "/")
    return p.resolve().name


def _record_base(model, base_id: str) -> None:
    for pc in getattr(model, "peft_config", {}).values():
        pc.base_model_name_or_path = base_id


def save_adapter(model, out_dir: Path | str, cfg: RunConfig | None = None, state_dict: dict | None = None) -> None:
    """model.save_pretrained(out_dir) (safetensors); a PiSSA adapter is written as a plain LoRA
    (rank 2r) that applies to the original base model, so chat, merge and GGUF export use it as is.
    With `cfg`, adapter_config.json names the base model portably (see portable_base_id).
    `state_dict`: the weights to write instead of the model's own (FSDP gathers them whole)."""
    config = getattr(model, "config", None)
    local_name = getattr(config, "_name_or_path", None)
    if cfg is not None:
        base_id = portable_base_id(cfg.model.name_or_path)
        _record_base(model, base_id)
        if config is not None:
            config._name_or_path = base_id  # PEFT's README.md front matter reads it; restored below
    try:
        _save(model, out_dir, state_dict)
    finally:
        if config is not None and local_name is not None:
            config._name_or_path = local_name
    card = Path(out_dir) / "README.md"
    if cfg is not None and local_name and card.exists():  # PEFT's tags name the loaded folder too
        card.write_text(card.read_text(encoding="utf-8").replace(str(local_name), base_id), encoding="utf-8")


def _save(model, out_dir: Path | str, state_dict: dict | None = None) -> None:
    files = getattr(model, _PISSA_ATTR, None)
    given = {"state_dict": state_dict} if state_dict is not None else {}
    if not hasattr(model, "peft_config"):
        model.save_pretrained(str(out_dir), safe_serialization=True, **given)
        return
    # save_embedding_layers=False: adapters never train embeddings here, and PEFT's "auto" would
    # look the base model up on the Hub to find out
    if not files:
        model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False, **given)
        _write_loftq_record(model, Path(out_dir))
        return
    with tempfile.TemporaryDirectory() as d, _no_hub_lookups():
        init_dir = Path(d) / "pissa_init"
        init_dir.mkdir()
        for name, data in files.items():
            (init_dir / name).write_bytes(data)
        model.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False,
                              path_initial_model_for_weight_conversion=str(init_dir), **given)


@contextlib.contextmanager
def _no_hub_lookups():
    """PEFT's PiSSA conversion loads the starting adapter, which asks the Hub whether the base model's
    config.json exists (to guess whether embeddings were resized); the adapter names its base
    portably (tunesmith/demo is no Hub repo) and never trains embeddings, so the answer is not
    needed and a run makes no network call for it. PEFT reads HF_HUB_OFFLINE at call time."""
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        with warnings.catch_warnings():  # "could not find a config file": it was not looked for
            warnings.filterwarnings("ignore", message="Could not find a config file in")
            yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = before
