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

What it does not know: LoftQ. Its adapter corrects the rounding of the 4-bit base,
while the merge and GGUF export add adapters to the original 16-bit weights, so
RunConfig refuses `lora.init: loftq` with that reason and points to pissa.
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
    init: Any = {"default": True, "gaussian": "gaussian", "pissa": _PISSA_INIT}[lc.init]
    peft_cfg = LoraConfig(
        r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=lc.target_modules,
        use_dora=lc.use_dora, use_rslora=lc.use_rslora, init_lora_weights=init,
        bias="none", task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, peft_cfg)
    if lc.init == "pissa":
        _remember_pissa_init(model)
    trainable, total = model.get_nb_trainable_parameters()
    variant = ", ".join(n for n, on in (("DoRA", lc.use_dora), ("rsLoRA", lc.use_rslora), (f"{lc.init} init", lc.init != "default")) if on)
    log.info("LoRA%s: %s trainable of %s parameters (%.2f%%)", f" ({variant})" if variant else "",
             f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


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
