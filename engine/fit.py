"""Will a run fit on its GPU? An estimate of peak GPU memory, before anything loads.

    shape = ModelShape.from_config(hf_config)          # from config.json alone: no weights
    est = estimate(shape, Settings.from_run(cfg, kernels_active=True), free_bytes=80e9)
    est.peak_bytes, est.parts()                        # weights, trainable + optimizer, activations
    line = fit_line(cfg, gpus)                         # "fits on GPU 0: ~9.8 of 24 GB"
    refuse_if_too_big(cfg, gpus)                       # ConfigError naming the setting to change

The estimate is a sum of parts, in bytes (T = batch x cutoff tokens, h hidden,
L the base's linear-layer parameters, O the rest, P the trainable ones):
- weights: NF4 = L/2 + quantization constants (L/64 bytes with double
  quantization, 4L/64 without) + O in 16 bits (in 32 bits on the stock QLoRA
  path, which casts them up); 8-bit = L + O; LoRA = 2(L+O); full = 4(L+O).
- trainable: P x (4 weight + 4 grad + optimizer: 8 AdamW, 2 8-bit AdamW,
  0 SGD, 1 Adafactor); with LoRA, P = r(in + out) summed over the adapted layers.
- activations with Tunesmith's kernels: a layer keeps F = 2T(4h + 3q + 2kv + 2i)
  bytes (kernels.checkpoint.layer_activation_bytes), a checkpointed one 2Th;
  plus one layer recomputed with its gradients and the loss chunk
  (2F + 4Th + 256 MiB; 64 MiB in memory mode). Memory mode offloads every checkpoint; auto/speed
  take the fastest plan that fits the GPU's free memory, as kernels.choose_plan
  does (including the 16-bit copy of the NF4 weights, 2L, when it fits).
- activations on the stock path (kernels off, unsupported models, full
  fine-tuning): a stock layer keeps ~2.6 F, the logits 12 T x vocab (bf16
  logits, their fp32 copy and its gradient); with gradient checkpointing every
  layer keeps only its input plus one layer recomputed.
- tokens per forward pass, as the trainer picks them: batch x cutoff on the
  stock path; with the kernels, memory mode runs one cutoff-long row per pass
  and auto/speed a whole optimizer step (batch x accumulation x cutoff),
  halved down to batch x cutoff until no layer needs checkpointing.
- several GPUs, DDP: each GPU holds all of the above and a gradient bucket
  copy of the trainable gradients. FSDP (engine/training/fsdp.py): the
  decoder layers' weights and the adapter, its gradients and optimizer states
  are divided by the number of GPUs; two layers are whole at a time (the one
  computing and the one being gathered); the embedding and LM head stay whole
  (twice the embedding when they are tied); Tunesmith's kernels run as on one
  GPU (the same activations and plan) except that the plan never keeps the NF4
  weights dequantized. `choose_strategy` picks FSDP for
  resources.strategy auto when DDP's estimate does not fit one GPU.
The 2.6 and 12 come from the H100 peaks in bench/RESULTS.md (1B and 8B shapes,
2 x 2048 tokens: stock 17.9 / 50.8 GiB, stock-gc 8.5 / 16.8 GiB, Tunesmith speed
7.5 / 34.4 GiB, memory 1.66 / 6.94 GiB); this module reproduces those within
5%. They are the points the constants were fitted to, not an independent check;
bench/bench_fit.py is one: it trains through the product path and compares this
estimate with the trainer's recorded peak (bench/results/bench_fit_h200.json,
H200: 1B and 8B shapes, QLoRA auto and memory, LoRA, 1 and 4 rows of 2048
tokens: within 6% on all 12, mean 2.4%).
The stock numbers were measured with transformers' own loss (full logits);
where Tunesmith's training loop computes the loss in chunks the logits term is
smaller, so the estimate errs high there. Peak means
torch.cuda.max_memory_allocated: the CUDA context (~0.5 GB) and allocator slack
are added only when comparing with a GPU's memory.

What it does not know: attention implementations that keep more than SDPA,
memory other programs take on the GPU later, models whose config.json it
cannot read (hub ids without network): then there is no estimate and no refusal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Sequence

from .config import RunConfig
from .errors import ConfigError

GiB = 1024**3
GB = 1e9
MiB = 1024**2
CONTEXT_BYTES = int(0.6 * GiB)  # CUDA context + allocator slack, outside max_memory_allocated
STOCK_LAYER = 2.6               # stock layer activations / Tunesmith kernels' (measured, see docstring)
LOGIT_BYTES = 12                # per token per vocab entry on the stock path
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_8bit": 2, "paged_adamw_8bit": 2, "sgd": 0, "adafactor": 1}
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a decoder-only model's config."""
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, cfg: Any) -> "ModelShape":
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        h, heads = cfg.hidden_size, cfg.num_attention_heads
        return cls(
            hidden=h, intermediate=cfg.intermediate_size, layers=cfg.num_hidden_layers, heads=heads,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or h // heads, vocab=cfg.vocab_size,
            tied=bool(getattr(cfg, "tie_word_embeddings", False)),
        )

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer in one decoder layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.projections().values())

    @property
    def other_params(self) -> int:
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden

    def lora_params(self, r: int, targets: Sequence[str] | str) -> int:
        names = PROJECTIONS if targets == "all-linear" else [t for t in targets if t in PROJECTIONS]
        return self.layers * sum(r * (a + b) for n, (a, b) in self.projections().items() if n in names)

    def layer_bytes(self, tokens: int) -> tuple[int, int]:
        """(activation bytes a layer keeps with Tunesmith's kernels, bytes a checkpointed one keeps), 16-bit."""
        per_token = 4 * self.hidden + 3 * self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim \
            + 2 * self.intermediate
        return tokens * per_token * 2, tokens * self.hidden * 2


@dataclass(frozen=True)
class Settings:
    """The RunConfig fields that move peak memory, flattened."""
    method: str = "qlora"                # qlora | lora | full
    bits: int = 4
    double_quant: bool = True
    lora_r: int = 16
    targets: Sequence[str] | str = "all-linear"
    tokens: int = 2 * 1024               # batch_size x cutoff_len
    memory_mode: str = "auto"            # auto | speed | memory
    kernels: bool = False                # Tunesmith's kernels will patch this model on this GPU
    gradient_checkpointing: bool = True  # the stock path's checkpointing
    optimizer: str = "adamw_torch"
    world: int = 1                       # GPUs
    strategy: str = "ddp"                # ddp: each GPU holds a full copy; fsdp: sharded over `world`
    step_tokens: int = 0                 # auto/speed with kernels: a whole step's tokens, tried first
    adapter_bytes: int = 4               # per adapter weight (and its gradient): lora.precision fp32 | bf16

    @classmethod
    def from_run(cls, cfg: RunConfig, kernels_active: bool, world: int = 1, strategy: str = "ddp") -> "Settings":
        t = cfg.training
        tokens, step = pass_tokens(cfg, kernels_active)
        return cls(
            method=cfg.method, bits=cfg.quantization.bits, double_quant=cfg.quantization.double_quant,
            lora_r=cfg.lora.r, targets=cfg.lora.target_modules, tokens=tokens, step_tokens=step,
            memory_mode=t.memory_mode, kernels=kernels_active,
            gradient_checkpointing=t.gradient_checkpointing, optimizer=t.optimizer, world=world,
            strategy=strategy if world > 1 else "ddp", adapter_bytes=2 if cfg.lora.precision == "bf16" else 4,
        )


def pass_tokens(cfg: RunConfig, kernels_active: bool) -> tuple[int, int]:
    """(tokens per forward pass, a whole step's tokens to try first or 0), as engine.trainer picks them
    for rows that reach the cutoff."""
    t, cutoff = cfg.training, cfg.data.cutoff_len
    micro = t.batch_size * cutoff
    if t.tokens_per_forward:
        return max(t.tokens_per_forward, cutoff), 0
    if kernels_active and t.memory_mode == "memory":
        return cutoff, 0
    if kernels_active:
        whole = micro * t.gradient_accumulation
        return micro, whole if whole > micro else 0
    return micro, 0


@dataclass(frozen=True)
class Estimate:
    weights: int
    trainable: int     # trainable weights, their gradients and optimizer states
    activations: int   # what forward keeps for backward, at the peak, plus transients
    weight_cache: int  # 16-bit copy of the NF4 weights kept by auto/speed plans
    plan: str          # how activations are handled, in words

    @property
    def peak_bytes(self) -> int:
        return self.weights + self.trainable + self.activations + self.weight_cache

    @property
    def needs_bytes(self) -> int:
        """Memory the GPU must have free: the peak plus the CUDA context."""
        return self.peak_bytes + CONTEXT_BYTES

    def parts(self) -> str:
        cache = f" + weight cache {self.weight_cache / GB:.1f}" if self.weight_cache else ""
        return (f"weights {self.weights / GB:.1f} + adapter/optimizer {self.trainable / GB:.1f} + "
                f"activations {self.activations / GB:.1f}{cache} GB ({self.plan})")


def weight_bytes(shape: ModelShape, s: Settings) -> int:
    L, O = shape.linear_params, shape.other_params
    if s.method == "full":
        return 4 * (L + O)
    if s.method == "lora" or s.bits == 16:
        return 2 * (L + O)
    other = O * (2 if s.kernels else 4)  # the stock path's prepare_model_for_kbit_training upcasts them
    if s.bits == 8:
        return L + other
    consts = L // 64 + (L // 64 // 256) * 4 if s.double_quant else 4 * (L // 64)
    return L // 2 + consts + other


def _fsdp_weights(shape: ModelShape, s: Settings, whole: int) -> int:
    """Weights on one GPU under FSDP: the layers' share, two whole layers, the embedding and head whole."""
    other = shape.other_params
    per_other = 4 if s.method == "full" or (s.method == "qlora" and s.bits in (4, 8) and not s.kernels) else 2
    layers = whole - other * per_other
    kept = (other + (shape.vocab * shape.hidden if shape.tied else 0)) * per_other
    return -(-layers // s.world) + 2 * (layers // max(1, shape.layers)) + kept


def trainable_params(shape: ModelShape, s: Settings) -> int:
    if s.method == "full":
        return shape.linear_params + shape.other_params
    return shape.lora_params(s.lora_r, s.targets)


def estimate(shape: ModelShape, s: Settings, free_bytes: int | None = None) -> Estimate:
    """Peak GPU memory (bytes, as torch.cuda.max_memory_allocated counts it) for one training process.

    `free_bytes` is what auto/speed plans may use (the GPU's free memory); None = plenty."""
    if s.kernels and s.method != "full" and s.memory_mode != "memory" and s.step_tokens > s.tokens:
        # the trainer's _fit_capacity: a whole step per pass when no layer then needs checkpointing,
        # else the largest power-of-two share of it that does, down to batch x cutoff
        c = s.step_tokens
        while c > s.tokens:
            est = estimate(shape, replace(s, tokens=c, step_tokens=0), free_bytes)
            if est.plan.startswith("no checkpointing"):
                return est
            c = max(s.tokens, c // 2)
        s = replace(s, step_tokens=0)
    weights = weight_bytes(shape, s)
    p = trainable_params(shape, s)
    a = 4 if s.method == "full" else s.adapter_bytes
    per_param = a + OPTIMIZER_BYTES.get(s.optimizer, 8) + (0 if s.method == "full" else a)
    fsdp = s.world > 1 and s.strategy == "fsdp"
    if fsdp:
        weights = _fsdp_weights(shape, s, weights)
        trainable = -(-p * per_param // s.world)
    else:
        trainable = p * per_param + (p * 4 if s.world > 1 else 0)  # full: its weights are counted above
    if s.method == "full":
        trainable += p * 4  # gradients
    full, ckpt = shape.layer_bytes(s.tokens)
    n = shape.layers
    if s.kernels and s.method != "full":
        # the LM-head/loss chunk: kernels.tune_memory uses 64 MiB in memory mode, 256 MiB otherwise
        chunk = (64 if s.memory_mode == "memory" else 256) * MiB
        transient = 2 * full + s.tokens * shape.hidden * 4 + chunk
        if s.memory_mode == "memory":
            return Estimate(weights, trainable, transient, 0, "every layer checkpointed, offloaded to CPU RAM")
        # mirror kernels.checkpoint.plan_checkpointing + kernels.choose_plan
        budget = (free_bytes if free_bytes is not None else 1 << 62) - GiB - transient - p * 12 - weights
        need = lambda k: int(1.3 * ((n - k) * full + k * ckpt))  # noqa: E731
        # under FSDP the plan keeps no dequantized NF4 weights (every rank would hold every layer whole)
        cache = 2 * shape.linear_params if s.method == "qlora" and s.bits == 4 and not fsdp else 0
        if cache and need(0) <= budget - cache:
            return Estimate(weights, trainable, transient + n * full, cache,
                            "no checkpointing, NF4 weights kept dequantized")
        if need(0) <= budget:
            return Estimate(weights, trainable, transient + n * full, 0, "no checkpointing")
        if full > ckpt:
            k = math.ceil((1.3 * n * full - budget) / (1.3 * (full - ckpt)))
            if k <= n and need(k) <= budget:
                return Estimate(weights, trainable, transient + (n - k) * full + k * ckpt, 0,
                                f"{k} of {n} layers checkpointed")
        return Estimate(weights, trainable, transient, 0, "every layer checkpointed, offloaded to CPU RAM")
    stock_layer = int(STOCK_LAYER * full)
    logits = LOGIT_BYTES * s.tokens * shape.vocab
    if s.gradient_checkpointing:
        return Estimate(weights, trainable, n * ckpt + stock_layer + logits, 0, "every layer checkpointed")
    return Estimate(weights, trainable, n * stock_layer + logits, 0, "no checkpointing")


# ---------------------------------------------------------------------------
# RunConfig + this machine's GPUs
# ---------------------------------------------------------------------------


def model_shape(cfg: RunConfig) -> tuple[ModelShape | None, str | None]:
    """(shape, model_type) from the model's config.json, without weights; (None, None) when unreadable."""
    try:
        from transformers import AutoConfig

        from .models import _hub_kwargs, resolve_model_path

        hf = AutoConfig.from_pretrained(resolve_model_path(cfg.model.name_or_path), **_hub_kwargs(cfg.model))
        return ModelShape.from_config(hf), getattr(hf, "model_type", None)
    except Exception:  # noqa: BLE001 - offline hub id, odd config: no estimate rather than no run
        return None, None


def kernels_apply(cfg: RunConfig, model_type: str | None) -> bool:
    """Will Tunesmith's kernels patch this model on a GPU (the trainer's own test)?"""
    from tunesmith.kernels.patching import ARCHS

    return cfg.kernels != "off" and cfg.method in ("qlora", "lora") and model_type in ARCHS


def choose_strategy(cfg: RunConfig, world: int, gpu_bytes: int | None,
                    shape: ModelShape | None = None, model_type: str | None = None) -> tuple[str, str]:
    """("single" | "ddp" | "fsdp", why, in words) for a run on `world` processes whose GPUs have
    `gpu_bytes` of memory each (None: no GPU). auto picks FSDP only where DDP's estimate does not fit
    one GPU; engine.training.fsdp asks this on rank 0 and every rank follows."""
    req = cfg.resources.strategy
    if world <= 1:
        return "single", "one process"
    if req != "auto":
        return req, f"resources.strategy is {req}"
    if cfg.method not in ("lora", "qlora") or (cfg.method == "qlora" and cfg.quantization.bits == 8) \
            or cfg.objective == "grpo":
        return "ddp", "FSDP here shards LoRA and 4-bit QLoRA runs only (not grpo)"
    if gpu_bytes is None:
        return "ddp", "no GPU: CPU processes have no GPU memory to save by sharding"
    if shape is None:
        shape, model_type = model_shape(cfg)
    if shape is None:
        return "ddp", "no memory estimate (the model's config.json could not be read)"
    kern = kernels_apply(cfg, model_type)
    one = estimate(shape, Settings.from_run(cfg, kern, world=world, strategy="ddp"), free_bytes=gpu_bytes - CONTEXT_BYTES)
    if one.needs_bytes <= gpu_bytes:
        return "ddp", f"the fit check says one GPU holds the whole run (~{one.needs_bytes / GB:.1f} of {gpu_bytes / GB:.0f} GB)"
    shard = estimate(shape, Settings.from_run(cfg, kern, world=world, strategy="fsdp"))
    return "fsdp", (f"one GPU would need ~{one.needs_bytes / GB:.1f} of its {gpu_bytes / GB:.0f} GB; sharded over "
                    f"{world} GPUs ~{shard.needs_bytes / GB:.1f} GB each")


@dataclass(frozen=True)
class Fit:
    gpu: Any                 # engine.gpus.GpuInfo
    estimate: Estimate
    fits: bool               # on this GPU's memory (`of` bytes)
    of: int
    strategy: str = "single"  # single | ddp | fsdp (several GPUs)
    world: int = 1

    def line(self) -> str:
        verb = "fits on" if self.fits else "does not fit on"
        how = f" each ({self.strategy.upper()} over {self.world} GPUs)" if self.world > 1 else ""
        return f"{verb} GPU {self.gpu.index}: ~{self.estimate.needs_bytes / GB:.1f} of {self.of / GB:.0f} GB{how}"


def _world(cfg: RunConfig, gpus: Sequence[Any]) -> int:
    from .gpus import count

    return max(1, count(cfg.resources.gpus, gpus))


def _targets(cfg: RunConfig, gpus: Sequence[Any]) -> list[Any]:
    """The GPUs the run may get: those it names, else all (it gets the ones with most free memory)."""
    req = cfg.resources.gpus
    if isinstance(req, list):
        return [g for g in gpus if g.index in req]
    return sorted(gpus, key=lambda g: -g.free_bytes)[:_world(cfg, gpus)]


def check(cfg: RunConfig, gpus: Sequence[Any], use_free: bool = True) -> list[Fit] | None:
    """The fit of `cfg` on each GPU it may run on (its free memory, or its total with use_free=False);
    None when there is no GPU or no readable model config."""
    if not gpus:
        return None
    shape, model_type = model_shape(cfg)
    if shape is None:
        return None
    world, targets = _world(cfg, gpus), _targets(cfg, gpus)
    strategy = "single"
    if world > 1 and targets:
        # the worker decides on its GPUs' total memory (the same answer on every rank, whatever runs beside)
        strategy, _ = choose_strategy(cfg, world, min(g.total_bytes for g in targets), shape, model_type)
    s = Settings.from_run(cfg, kernels_active=kernels_apply(cfg, model_type), world=world,
                          strategy="fsdp" if strategy == "fsdp" else "ddp")
    out = []
    for g in targets:
        room = g.free_bytes if use_free else g.total_bytes
        est = estimate(shape, s, free_bytes=room - CONTEXT_BYTES)
        out.append(Fit(g, est, est.needs_bytes <= room, room, strategy, world))
    return out


def fit_line(cfg: RunConfig, gpus: Sequence[Any]) -> str:
    """One line for the Model and Train tabs: how much memory the run needs on its GPU(s)."""
    if not gpus:
        return "No CUDA GPU here: the run trains on the CPU (no GPU memory check)."
    try:
        fits = check(cfg, gpus)
    except Exception:  # noqa: BLE001 - a hint, never an error in the browser
        fits = None
    if fits is None:
        return "Memory estimate unavailable (the model's config.json could not be read)."
    worst = min(fits, key=lambda f: f.of - f.estimate.needs_bytes)
    more = f" (and {len(fits) - 1} more GPU{'s' if len(fits) > 2 else ''})" if len(fits) > 1 else ""
    head = worst.line() + more + f" free now: {worst.estimate.parts()}"
    if worst.fits:
        return head
    fix = suggest(cfg, gpus, use_free=True)
    return head + (f". Try {fix}." if fix else ".")


_TWEAKS: list[tuple[str, Any]] = [
    ("resources.strategy", "fsdp"),  # several GPUs only: shard instead of copying
    ("training.memory_mode", "memory"),
    ("training.gradient_checkpointing", True),
    ("method", "qlora"),
    ("training.batch_size", 1),
    ("data.cutoff_len", None),  # halved, down to 256
]


def suggest(cfg: RunConfig, gpus: Sequence[Any], use_free: bool = False) -> str | None:
    """The first single setting change (as `field=value`) that makes the run fit, if any."""
    for path, value in _TWEAKS:
        cur = cfg.model_dump(mode="json")
        node = cur
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        if path == "data.cutoff_len":
            value = node[leaf]
            while value > 256:
                value //= 2
                tried = cfg.with_overrides([f"{path}={value}"])
                fits = check(tried, gpus, use_free=use_free)
                if fits and all(f.fits for f in fits):
                    return f"{path}={value}"
            continue
        if node[leaf] == value or (path == "resources.strategy" and (_world(cfg, gpus) < 2 or node[leaf] == "auto")):
            continue
        try:
            tried = cfg.with_overrides([f"{path}={value}"])
        except ConfigError:  # e.g. fsdp with method full
            continue
        fits = check(tried, gpus, use_free=use_free)
        if fits and all(f.fits for f in fits):
            return f"{path}={str(value).lower() if isinstance(value, bool) else value}"
    return None


def refuse_if_too_big(cfg: RunConfig, gpus: Sequence[Any]) -> None:
    """ConfigError when the run cannot fit even on an otherwise idle GPU (its total memory),
    naming the setting to change. Nothing to check without GPUs or a readable model config."""
    fits = check(cfg, gpus, use_free=False)
    if not fits or all(f.fits for f in fits):
        return
    bad = next(f for f in fits if not f.fits)
    fix = suggest(cfg, gpus)
    hint = f"set {fix}" if fix else "pick a smaller model or more GPUs"
    raise ConfigError(f"This run {bad.line()} even with nothing else on it ({bad.estimate.parts()}); {hint}.")


__all__ = ["ModelShape", "Settings", "Estimate", "estimate", "check", "choose_strategy", "fit_line", "pass_tokens",
           "refuse_if_too_big", "suggest"]
