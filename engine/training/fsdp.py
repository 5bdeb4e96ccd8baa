"""FSDP2 for runs one GPU cannot hold: the decoder sharded over the ranks with fully_shard.

    strategy = fsdp.choose(cfg)                       # single | ddp | fsdp, and why (rank 0 decides)
    cfg = fsdp.adjust(cfg, strategy, say)             # what FSDP changes in the run, said in the run log
    model, tok, hw = models.load_for_training(cfg, fsdp=strategy.sharded)
    model = fsdp.shard(model, strategy, hw, precision)  # after PEFT wrapping and sync_from_rank0
    ckpt = fsdp.gather_checkpoint(model, optimizer)   # every rank calls it; rank 0 gets the full tensors
    full = fsdp.gather_trainable(model)               # the adapter's weights, whole, on rank 0

Choice: resources.strategy ddp or fsdp is taken as given; auto asks engine.fit.choose_strategy
(FSDP only when DDP's estimate does not fit one GPU's total memory). Rank 0 decides and every
rank follows, so ranks on GPUs of different sizes cannot disagree.

Wrapping: each decoder layer is one FSDP unit (its frozen base weights, LoRA weights, norms), and
the decoder (embeddings, final norm) is the root one: the trainer's loss calls the decoder and
then the LM head directly, so the decoder's forward is the first an FSDP unit sees. The LM head
stays whole on every rank (frozen with LoRA; with tied embeddings it keeps its own unsharded copy).
Gradients are summed over ranks, not averaged (each rank's loss is already divided by the whole
step's item count, as on the DDP path), so the loss curve equals one process with the same
global batch. On GPUs the all-gathers run in the compute dtype (bf16) and gradients reduce in
fp32; QLoRA loads with bnb_4bit_quant_storage = the compute dtype so the packed NF4 weights
(Params4bit) shard like any bf16 tensor, and bitsandbytes restores each layer's quantization
state from its module when FSDP hands it back an unsharded plain tensor.

Every FSDP forward pass gathers weights from all ranks, so all ranks run as many passes a step
(and an evaluation): a rank whose rows fit in fewer passes runs extra ones that add nothing
(`even_passes`).

Checkpoints and the adapter are gathered whole (torch.distributed.checkpoint.state_dict with
full_state_dict=True, cpu_offload=True): the files are the same as a one-process run's
(trainable.pt by parameter name; optimizer.pt keyed by parameter name), rank 0 writes them, and a
resumed FSDP run loads them on every rank.

What changes under FSDP, said once in the run log: Tunesmith's Triton kernels run (patched after
fully_shard) inside each unit's forward and backward, where FSDP has gathered the unit's weights
whole: the fused LoRA/NF4 projections read the packed NF4 bytes FSDP hands back with the
quantization state bitsandbytes keeps on the module; the patch-time probes look at whole shapes
(a DTensor's) and stand-in weights, never a shard; transformers checkpoints a layer's forward,
inside the unit's hooks, so the kernels' recompute runs after FSDP's pre-backward all-gather and
the adapter's gradients reach its reduce-scatter as on the stock path. What would keep weights
beyond a unit's forward is off: the memory plan keeps no dequantized NF4 weights and captures no
CUDA graphs (kernels.plan_memory sees the DTensors and says so in the run log's memory line). The
fused LM head reads the head FSDP leaves whole. 8-bit optimizers become adamw_torch
(bitsandbytes' kernels do not take sharded tensors).

What it does not know: loading. Every rank reads the whole model before sharding it: LoRA into
CPU memory (then only its shard goes to the GPU), QLoRA quantized on its own GPU (the NF4 weights
must fit one GPU at load time). Full fine-tuning, 8-bit QLoRA and GRPO (whose ranks generate
answers of different lengths) are not sharded (config.py refuses strategy fsdp for them; auto
picks DDP). Tested on CPU with gloo; the GPU path follows
the same code with NCCL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from . import dist

log = logging.getLogger("tunesmith.trainer")


@dataclass(frozen=True)
class Strategy:
    name: str = "single"  # single (one process) | ddp | fsdp
    why: str = "one process"

    @property
    def sharded(self) -> bool:
        return self.name == "fsdp"

    def describe(self) -> str:
        what = {"ddp": "DDP (every process holds the whole model; gradients summed)",
                "fsdp": "FSDP (decoder weights, adapter and optimizer sharded over the processes)"}
        return f"multi-process: {what.get(self.name, self.name)} over {dist.world()} processes: {self.why}"


def is_dtensor(t: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch without DTensor cannot have sharded anything
        return False
    return isinstance(t, DTensor)


def is_sharded(model: torch.nn.Module) -> bool:
    return any(is_dtensor(p) for p in model.parameters())


def choose(cfg) -> Strategy:
    """The strategy for this run on the ranks started; rank 0's answer on every rank."""
    world = dist.world()
    if world <= 1:
        return Strategy()
    choice: list[Any] = [None]
    if dist.is_main():
        from ..fit import choose_strategy

        gpu = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory \
            if torch.cuda.is_available() else None
        try:
            choice[0] = choose_strategy(cfg, world, gpu)
        except Exception as e:  # noqa: BLE001 - an estimate must not stop a run; DDP is what ran before
            choice[0] = ("fsdp" if cfg.resources.strategy == "fsdp" else "ddp", f"no memory estimate ({e})")
    torch.distributed.broadcast_object_list(choice, src=0)
    name, why = choice[0]
    return Strategy(name, why)


def adjust(cfg, strategy: Strategy, say: Callable[[str], None]):
    """The RunConfig this rank trains with under `strategy`; says the strategy and every change once."""
    if strategy.name == "single":
        return cfg
    say(strategy.describe())
    if not strategy.sharded:
        return cfg
    # Tunesmith's kernels stay on: the memory plan's line says what FSDP turns off for them
    changes: dict[str, Any] = {}
    training = cfg.training
    if "8bit" in training.optimizer:
        training = training.model_copy(update={"optimizer": "adamw_torch"})
        changes["training"] = training
        say(f"optimizer: {cfg.training.optimizer} does not take FSDP's sharded tensors; using adamw_torch")
    return cfg.model_copy(update=changes) if changes else cfg


def quant_storage(compute: torch.dtype) -> torch.dtype:
    """bnb_4bit_quant_storage under FSDP: the packed NF4 bytes stored as the compute dtype, so they
    are all-gathered with the layer's other 16-bit tensors."""
    return compute


def _decoder(model: torch.nn.Module) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
    from .lm import _unwrap

    inner = _unwrap(model)
    dec = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    layers = getattr(dec, "layers", None)
    if not isinstance(dec, torch.nn.Module) or not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        from ..errors import ConfigError

        raise ConfigError(f"resources.strategy fsdp: cannot find the decoder layers of {type(inner).__name__}; "
                          "use resources.strategy ddp for this model.")
    return dec, list(layers)


def check_packed_dtype(model: torch.nn.Module, gather: torch.dtype | None) -> None:
    """FSDP casts every parameter it gathers to `gather` (its mixed-precision param dtype): the packed
    NF4 bytes, stored as the quantization's compute dtype, would be converted as numbers and ruined
    if that differs. Refused with the fields to make equal."""
    if gather is None or gather == torch.float32:
        return
    packed = {p.dtype for p in model.parameters() if type(p).__name__ == "Params4bit"}
    if packed - {gather}:
        from ..errors import ConfigError

        names = {torch.bfloat16: "bfloat16 (bf16)", torch.float16: "float16 (fp16)", torch.float32: "float32"}
        raise ConfigError(f"FSDP: quantization.compute_dtype is {names.get(next(iter(packed)), packed)} but "
                          f"training.precision gathers weights as {names.get(gather, gather)}; set both to the same "
                          "dtype (or leave both auto).")


def shard(model: torch.nn.Module, strategy: Strategy, hw, precision: str = "auto") -> torch.nn.Module:
    """Wrap the decoder layers and the decoder with fully_shard (a no-op unless `strategy` is fsdp).
    `precision` (training.precision) sets the dtype layers are gathered and computed in on GPUs."""
    if not strategy.sharded:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}.get(precision, hw.compute_dtype)
    check_packed_dtype(model, dtype if hw.device == "cuda" else None)
    device = torch.device("cuda", torch.cuda.current_device()) if hw.device == "cuda" else torch.device("cpu")
    mesh = init_device_mesh(device.type, (dist.world(),))
    mp = MixedPrecisionPolicy()
    if hw.device == "cuda" and dtype != torch.float32:
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    dec, layers = _decoder(model)
    for m in model.modules():
        if getattr(m, "support_avx512bf16_for_cpu", False):
            # bitsandbytes repacks a CPU NF4 weight in place for inference (eval mode) and marks its
            # module's quantization state so; FSDP gathers the unpacked bytes again for the next pass
            m.support_avx512bf16_for_cpu = False
    units = []
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
        units.append(layer)
    fully_shard(dec, mesh=mesh, mp_policy=mp)
    units.append(dec)
    for u in units:
        # sum over ranks, no division: each rank's loss is already divided by the whole step's items
        # (a plain SUM: gloo has no pre-multiplied sum)
        u.set_gradient_divide_factor(1.0)
        u.set_force_sum_reduction_for_comms(True)
    # what FSDP does not manage (the LM head, a tied head's own copy) goes to this rank's device whole
    with torch.no_grad():
        for mod in model.modules():
            for name, p in list(mod._parameters.items()):
                if p is not None and not is_dtensor(p) and p.device != device:
                    p.data = p.data.to(device)
            for name, b in list(mod._buffers.items()):
                if b is not None and not is_dtensor(b) and b.device != device:
                    mod._buffers[name] = b.to(device)
    n = sum(p.numel() for p in model.parameters() if is_dtensor(p))
    log.info("fsdp: %d decoder layers + the decoder sharded over %d ranks (%d parameters sharded)",
             len(layers), dist.world(), n)
    return model


def even_passes(groups: list, strategy: Strategy, device) -> list:
    """`groups` plus None for each forward pass a peer makes beyond this rank's own: every FSDP
    forward gathers weights from all ranks, so all must run as many (a rank runs a None pass on
    any row and adds nothing from it). Unchanged unless sharded."""
    if not strategy.sharded:
        return groups
    n = torch.tensor([len(groups)], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MAX)
    return list(groups) + [None] * (int(n.item()) - len(groups))


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def gather_trainable(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The trainable weights, whole, on the CPU of rank 0 ({} on the others); None when not sharded.
    A collective: every rank calls it."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(ignore_frozen_params=True))


def gather_checkpoint(model: torch.nn.Module, optimizer) -> dict[str, Any]:
    """save_checkpoint's `trainable` and `optimizer_state`, gathered whole onto rank 0; {} when not
    sharded (save_checkpoint then reads the model and optimizer itself). Every rank calls it."""
    if not is_sharded(model):
        return {}
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return {"trainable": gather_trainable(model),
            "optimizer_state": get_optimizer_state_dict(model, optimizer, options=_options())}


def load_checkpoint(model: torch.nn.Module, optimizer, trainable: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any]) -> None:
    """Put a checkpoint's whole tensors into this rank's shards (every rank read the same files)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, trainable, options=opts)
    if "state" in optimizer_state and any(isinstance(k, int) for k in optimizer_state["state"]):
        from ..errors import ConfigError

        raise ConfigError("this checkpoint was written by a run that was not sharded; resume it with "
                          "resources.strategy ddp (or start a new run)")
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=opts)
