"""The training recipe: setup -> train -> save -> cleanup, on Tunesmith's own loop.

    recipe = Recipe(cfg, run_dir, events, stop_requested)
    recipe.setup(); status = recipe.train(resume=False); recipe.save(); recipe.cleanup()

Features and the RunConfig fields that drive them:
- method qlora (4-bit NF4 base, double quantization, bf16 compute on GPUs),
  lora (16-bit base) or full (all weights) — `method`, `quantization.*`
- LoRA on all linear layers by default — `lora.*`
- the objective (sft, pretrain, ...) from a registry keyed by name — `objective`,
  `objective_settings` (engine/objectives/: its data, batches, loss and metrics)
- responses-only loss, cutoff, validation split, best-fit-decreasing packing — `data.*`
- padding-free forward passes (examples end to end, kept apart by attention) where the
  model's attention allows, else padded — `training.padding_free`; length-grouped order —
  `training.group_by_length`; tokens per forward pass — `training.tokens_per_forward`
  (default from `training.memory_mode`: auto = a whole optimizer step in one pass when it
  fits, memory = cutoff_len); fixed-size passes when CUDA graphs replay
- Tunesmith's Triton kernels through tunesmith.kernels.patch and its memory plan — `kernels`,
  `training.memory_mode`; the LM head and loss fused (no logits) when they apply
- optimizer (AdamW, 8-bit AdamW on GPUs, SGD, Adafactor), schedule with warmup, gradient
  clipping — `training.*`
- metrics to events.jsonl every `training.logging_steps` (and at step 1): loss, token
  accuracy, lr, grad norm, tokens/s, peak memory, elapsed and ETA; summed on the device and
  read once per logging step; eval loss every `training.eval_steps` with a validation set
- early stopping on the eval loss — `training.early_stopping_patience` (with a validation set):
  the run ends after that many evaluations without improvement, with the best adapter
- checkpoints every `training.save_steps` (written under a temporary name, then renamed)
- graceful stop: `stop_requested()` is polled after every optimizer step; a checkpoint is
  written, the run ends as "stopped" and the worker saves the adapter trained so far
- exact resume: trainable weights, optimizer, schedule, RNG and data position come back, so
  a stopped-and-resumed run's losses equal an uninterrupted run's step for step
- torchrun: with torch.distributed initialized, rows are sharded by rank, gradients summed,
  and rank 0 alone writes events, checkpoints and the adapter (engine/training/dist.py)

Raises:
    ModelError: the model cannot be loaded.
    DataError: the data cannot be read or is empty.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import resource
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import adapters, atomic, models
from .config import RunConfig
from .early_stopping import EarlyStopping
from .events import EventWriter
from .training import dist, fsdp
from .training.batching import Layout, epoch_order, forward_groups, steps_per_epoch
from .training.state import checkpoint_step, latest_checkpoint, load_checkpoint, save_checkpoint

log = logging.getLogger("tunesmith.trainer")

__all__ = ["Recipe", "StopRequested", "checkpoint_step", "latest_checkpoint", "peak_memory_gb"]

# Keys of the logging window's sums the loop itself keeps (beside the objective's own metric sums).
_STEP_LOSS, _STEPS = "_step_loss", "_steps"
# Rows per length-sorted window when training.group_by_length is on (in optimizer steps).
_LENGTH_GROUP_STEPS = 16


class StopRequested(Exception):
    """Raised between loading phases when the user pressed Stop before training began."""


def peak_memory_gb(device: str) -> float:
    """Peak memory since training began: allocated GPU memory, or the worker's resident memory on the CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    # ru_maxrss is KiB on Linux: the worker's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _reserved_fields(device: str) -> dict[str, float]:
    if device != "cuda":
        return {}
    return {"peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 3)}


def supports_padding_free(model) -> bool:
    """Does the model's attention keep examples apart given restarting position ids and no mask?
    transformers' create_causal_mask does that (block-diagonal masks for sdpa/eager, cu_seqlens
    for flash-attention) for decoders whose forward passes position_ids to it."""
    from .training.lm import _unwrap

    inner = _unwrap(model)
    dec = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    if dec is None:
        return False
    try:
        src = inspect.getsource(type(dec).forward)
    except (OSError, TypeError):
        return False
    return "create_causal_mask(" in src and "position_ids=position_ids" in src


def early_stop(stopper: EarlyStopping | None, step: int, eval_loss: float, emit: Callable[..., None]) -> bool:
    """Feed one evaluation to the early-stopping rule; True (and an info event saying why) to stop."""
    if stopper is None or not stopper.update(step, float(eval_loss)):
        return False
    emit("info", message=f"early stopping: {stopper.reason}", early_stop=True, best_step=stopper.best_step,
         best_eval_loss=stopper.best_loss)
    return True


class Recipe:
    def __init__(self, cfg: RunConfig, run_dir: Path, events: EventWriter, stop_requested: Callable[[], bool]):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.events = events
        self.stop_requested = stop_requested
        self.model = None
        self.stopped = False

    def _emit(self, type_: str, **fields: Any) -> None:
        if dist.is_main():
            self.events.write(type_, **fields)

    def _info(self, msg: str) -> None:
        log.info(msg)
        self._emit("info", message=msg)

    # ---- setup ----------------------------------------------------------

    def _check_stop(self) -> None:
        if self.stop_requested():
            raise StopRequested()

    def setup(self) -> None:
        from .objectives import get_objective

        # several processes: DDP or FSDP (engine/training/fsdp.py), and why, in the run log
        self.strategy = fsdp.choose(self.cfg)
        cfg = self.cfg = fsdp.adjust(self.cfg, self.strategy, self._info)
        if dist.is_main():
            self.events.status("running", "loading model")
        self.model, self.tokenizer, self.hw = models.load_for_training(cfg, fsdp=self.strategy.sharded)
        log.info("loaded %s on %s (%s)", cfg.model.name_or_path, self.hw.name, cfg.method)
        self._check_stop()

        if dist.is_main():
            self.events.status("running", "preparing data")
        self.objective = get_objective(cfg.objective)(cfg)
        self.train_rows, self.eval_rows = self.objective.prepare(self.tokenizer)
        log.info("data (%s): %d training rows, %d eval rows", cfg.objective, len(self.train_rows),
                 len(self.eval_rows or []))
        self._check_stop()

        from transformers import set_seed

        set_seed(cfg.training.seed)  # the adapter's initial weights follow training.seed
        self.model = self._wrap(self.model)
        self.objective.attach(self.model)  # e.g. a reward model's score head, before the optimizer sees the params
        from .distributed import sync_from_rank0

        sync_from_rank0(self.model)  # several processes: every rank starts from rank 0's adapter
        self.model = fsdp.shard(self.model, self.strategy, self.hw, cfg.training.precision)
        if cfg.training.neftune_alpha:  # [issue 15]
            adapters.enable_neftune(self.model, cfg.training.neftune_alpha)
        self.fused = False
        self.plan = None
        self._plan_batches()

    def _kernels_expected(self, model) -> bool:
        """Will tunesmith.kernels patch this model on this machine? Then the kernels' memory plan
        (kernels.tune_memory) decides checkpointing, and the 16-bit weights stay 16-bit."""
        from tunesmith.kernels.patching import ARCHS
        from tunesmith.kernels.utils import interpreting

        cfg = getattr(model, "config", None)
        # on the CPU only kernels=on under the Triton interpreter (TRITON_INTERPRET=1: tests, slow)
        device_ok = self.hw.device == "cuda" or (self.cfg.kernels == "on" and interpreting())
        return (self.cfg.kernels != "off" and self.cfg.method in ("qlora", "lora") and device_ok
                and getattr(cfg, "model_type", None) in ARCHS)

    def _wrap(self, model):
        cfg = self.cfg
        if cfg.lora.precision == "bf16" and self.hw.device == "cuda" and not self.hw.bf16 \
                and cfg.method in ("lora", "qlora"):
            from .errors import ConfigError

            raise ConfigError("lora.precision: bf16 needs a GPU with bf16 arithmetic (Ampere or newer); "
                              f"{self.hw.name} has none: use lora.precision fp32.")
        gc = cfg.training.gradient_checkpointing
        self._kernel_memory_plan = self._kernels_expected(model)
        if self._kernel_memory_plan:
            gc = False  # the plan applies per-layer checkpointing after patch()
        if cfg.method in ("full", "freeze"):
            if gc:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return adapters.build_adapter(model, cfg)  # [issue 15] freeze: only the last N layers train
        from peft import prepare_model_for_kbit_training

        if cfg.method == "qlora" and cfg.quantization.bits in (4, 8) and self._kernel_memory_plan:
            # prepare_model_for_kbit_training would copy norms, embeddings and the head to fp32 (GiBs
            # on 8B models); the kernels compute norms in fp32 from 16-bit weights instead
            for p in model.parameters():
                p.requires_grad_(False)
        elif cfg.method == "qlora" and cfg.quantization.bits in (4, 8):
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        elif gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return adapters.build_adapter(model, cfg)  # [issue 15] LoRA / DoRA / rsLoRA / PiSSA

    def _plan_batches(self) -> None:
        """Kernels, memory plan and batch shapes, decided together and said in the run log."""
        from .training.lm import CausalLM

        cfg, t = self.cfg, self.cfg.training
        cutoff = cfg.data.cutoff_len
        longest = max((self.objective.row_tokens(r) for r in self.train_rows), default=cutoff)
        # rows are cut to cutoff per sequence (sft: longest <= cutoff); a preference pair holds two
        # sequences, so the longest row, not the cutoff, bounds a pass (and a CUDA-graph bucket)
        row_cap = longest if not cfg.data.packing else cutoff
        micro = t.batch_size * row_cap  # what the configured micro-batch can hold
        whole_step = t.batch_size * t.gradient_accumulation * row_cap
        why = ""
        if t.tokens_per_forward:
            capacity, why = t.tokens_per_forward, "training.tokens_per_forward"
        elif self._kernel_memory_plan and t.memory_mode != "memory":
            capacity, why = whole_step, "a whole optimizer step per pass"
        elif self._kernel_memory_plan:
            # memory mode: one cutoff-long pass at a time (the longest row fits): the activations
            # of one pass are what the peak holds
            capacity, why = row_cap, "memory mode: cutoff_len"
        else:
            capacity, why = micro, "batch_size x cutoff"
        capacity = max(capacity, row_cap)

        pad_to = None
        if self._kernel_memory_plan:
            from tunesmith.kernels import patch, tune_memory

            report = patch(self.model, mode=cfg.kernels)  # logs its own summary line
            self._emit("info", message=f"kernels: {report.summary()}")
            self.fused = any(s.startswith("fused_linear_ce") for s in report.swapped)
            if report.applied:
                if not t.tokens_per_forward and t.memory_mode != "memory" and capacity > micro:
                    capacity, why = self._fit_capacity(capacity, micro, why)
                self.plan = tune_memory(self.model, capacity, prefer=t.memory_mode)
                if getattr(self.plan, "graphs", False):
                    # CUDA graphs replay only on shapes they have seen: one fixed pass size
                    pad_to = capacity
                self._info(f"memory ({t.memory_mode}, up to {capacity} tokens per forward pass): "
                           f"{self.plan.summary()}")
            elif t.gradient_checkpointing:
                # kernels were expected but did not apply: fall back to stock checkpointing
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                if hasattr(self.model, "enable_input_require_grads"):
                    self.model.enable_input_require_grads()
        padding_free = t.padding_free and supports_padding_free(self.model)
        if t.padding_free and not padding_free:
            self._info("batching: this model's attention cannot keep examples apart without a mask; padding "
                       "each forward pass instead")
        if not padding_free:
            pad_to = None
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        attn = None
        if padding_free and self.hw.device == "cuda":
            from .training.attention import install

            attn = install(self.model, self.hw.compute_dtype)
        cu_slots = max(64, capacity // 16) if pad_to and attn else None
        self.layout = Layout(padding_free=padding_free, pad_to=pad_to, pad_id=pad_id, cu_slots=cu_slots)
        self.capacity = capacity if padding_free else None
        self.lm = CausalLM(self.model, fused=self.fused, varlen=attn is not None)
        shape = ("padding-free" if padding_free else "padded") + (f", every pass padded to {pad_to} tokens for "
                                                                  "CUDA graphs" if pad_to else "")
        if padding_free:
            shape += f"; attention: {attn or 'SDPA with a block-diagonal mask'}"
        grouping = (f"passes of up to {capacity} tokens ({why}), best-fit from each step's rows"
                    if padding_free else f"{t.batch_size} rows per pass")
        loss = getattr(self.objective, "describe_loss", None)  # objectives that do not use lm.token_loss say theirs
        self._info(f"batching: {shape}; {grouping}; loss: {loss(self.lm) if loss else self.lm.describe()}")

    def _fit_capacity(self, capacity: int, micro: int, why: str) -> tuple[int, str]:
        """auto/speed: one pass per step only when it fits with no checkpointing; else the largest
        power-of-two multiple of the micro-batch that does, down to the micro-batch itself."""
        try:
            from tunesmith.kernels import choose_plan

            free = torch.cuda.mem_get_info()[0]
        except Exception:  # noqa: BLE001 - an older kernels API: keep the whole step
            return capacity, why
        c = capacity
        while c > micro:
            if choose_plan(self.model, c, self.cfg.training.memory_mode, free).checkpointed == 0:
                return c, why if c == capacity else "the most that fits without checkpointing"
            c = max(micro, c // 2)
        return micro, "batch_size x cutoff: more would need checkpointing"

    # ---- train ----------------------------------------------------------

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.run_dir)

    def _precision(self) -> str:
        prec = self.cfg.training.precision
        if prec == "auto":
            prec = ("bf16" if self.hw.bf16 else "fp16") if self.hw.device == "cuda" else "fp32"
        return prec

    def _device(self) -> torch.device:
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def train(self, resume: bool = False) -> str:
        """Train (from the latest checkpoint when `resume`); returns the final status: completed or stopped."""
        from .objectives.sft import SFT  # noqa: F401 - registry loaded
        from .training.lm import StepContext
        from .training.extra import apply as apply_extra
        from .training.optim import build_optimizer, build_scheduler
        from .training.profiling import StepProfiler

        t = self.cfg.training
        device = self._device()
        rank, world = dist.rank(), dist.world()
        rows = self.train_rows
        if not rows:
            from .errors import DataError

            raise DataError("no training rows left after preparing the data; check data.datasets and cutoff_len.")
        per_step = t.batch_size * t.gradient_accumulation * world
        spe = steps_per_epoch(len(rows), per_step)
        max_steps = t.max_steps or max(1, math.ceil(t.num_epochs * spe))
        lengths = [self.objective.row_tokens(r) for r in rows]
        items = [self.objective.items(r) for r in rows]

        self.optimizer, opt_name = build_optimizer(self.model, t, self.hw.device)
        self.scheduler = build_scheduler(self.optimizer, t, max_steps)
        self.scheduler = apply_extra(self.optimizer, self.scheduler, t, max_steps)  # [issue 15] training.extra
        prec = self._precision()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
        use_amp = amp_dtype is not None and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None

        def autocast():
            return torch.autocast("cuda", dtype=amp_dtype) if use_amp else contextlib.nullcontext()

        ctx = StepContext(self.model, self.lm, device, autocast)
        params = [p for p in self.model.parameters() if p.requires_grad]

        step, epoch, pos = 0, 0, 0
        tokens_seen, window = 0, {}
        if resume and (ckpt := self.latest_checkpoint()) is not None:
            st = load_checkpoint(ckpt, self.model, self.optimizer, self.scheduler)
            step, epoch, pos, tokens_seen = st["global_step"], st["epoch"], st["position"], st["tokens_seen"]
            window = st.get("window") or {}
            log.info("resumed from %s (step %d, epoch %d, row %d)", ckpt.name, step, epoch, pos)
        self._info(f"training: {len(rows)} rows, {per_step} rows per step ({t.batch_size} x "
                   f"{t.gradient_accumulation} x {world} GPU{'s' if world > 1 else ''}), {max_steps} steps, "
                   f"optimizer {opt_name}, precision {prec}"
                   + (f", adapter weights {self.cfg.lora.precision}" if self.cfg.method in ("lora", "qlora") else ""))
        if dist.is_main():
            self.events.status("running", "training", max_steps=max_steps)

        group = per_step * _LENGTH_GROUP_STEPS if t.group_by_length else 0
        stopper = None
        if t.early_stopping_patience is not None:
            if self.eval_rows:
                stopper = EarlyStopping(t.early_stopping_patience)
            else:
                log.warning("early stopping needs a validation set (data.val_size or data.val_file); training to the end")
        best: dict[str, torch.Tensor] | None = None  # trainable weights at the best eval loss

        def order_for(e: int) -> list[int]:
            return epoch_order(len(rows), t.seed, e, lengths=lengths if group else None, group=group)

        order = order_for(epoch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()  # the studio shows training's peak, loading excluded
        self.model.train()
        self.stopped = False
        t0 = last_t = time.time()
        first_step = step
        window_tokens = 0
        grad_norm = None
        sums: dict[str, Any] = {k: v for k, v in window.items()}
        self._last_saved = step
        prof = StepProfiler.from_env(self.run_dir, dist.is_main())  # TUNESMITH_PROFILE_STEPS, off by default
        while step < max_steps:
            if prof:
                prof.before(step + 1)
            if pos >= len(order):
                epoch, pos = epoch + 1, 0
                order = order_for(epoch)
            take = order[pos:pos + per_step]
            pos += len(take)
            denom = max(1, sum(items[i] for i in take))
            mine = take[rank::world]
            groups = forward_groups([lengths[i] for i in mine], self.capacity, t.batch_size)
            for g in fsdp.even_passes(groups, self.strategy, device):
                picked = [rows[mine[j]] for j in g] if g is not None else [rows[take[0]]]
                batch = self._to_device(self.objective.collate(picked, self.layout), device)
                loss, part = self.objective.loss(ctx, batch, denom)
                if g is None:  # FSDP: a pass only to match the peers' gathers; it adds nothing
                    loss, part, batch["n_tokens"] = loss * 0, {}, 0
                (scaler.scale(loss) if scaler else loss).backward()
                tokens_seen += batch["n_tokens"] * world
                window_tokens += batch["n_tokens"] * world
                for k, v in part.items():
                    if v is not None:
                        sums[k] = sums[k] + v if k in sums else v
                # the loss trained on, summed over passes: each pass is its share of the step's loss
                sums[_STEP_LOSS] = sums[_STEP_LOSS] + loss.detach() if _STEP_LOSS in sums else loss.detach()
            sums[_STEPS] = sums.get(_STEPS, 0) + 1  # on the host: one per optimizer step of the window
            dist.all_reduce_grads(params)
            if scaler:
                scaler.unscale_(self.optimizer)
            clip = t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
            grad_norm = dist.clip_grad_norm(params, clip)
            lr = self.optimizer.param_groups[0]["lr"]
            if scaler:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            step += 1
            if prof:
                prof.after(step)

            stop = dist.any_rank(self.stop_requested() if dist.is_main() else False, device)
            if step == 1 or step % t.logging_steps == 0 or step == max_steps or stop:
                now = time.time()
                self._log(step, max_steps, sums, grad_norm, lr, step / spe, tokens_seen,
                          window_tokens / max(now - last_t, 1e-6), now - t0, step - first_step, device)
                sums, window_tokens, last_t = {}, 0, now
            if self.eval_rows and (step % (t.eval_steps or t.save_steps) == 0):
                eval_loss = self._evaluate(ctx, step, device)
                if early_stop(stopper, step, eval_loss, self._emit):
                    break
                if stopper is not None and stopper.best_step == step:
                    from .training.state import trainable_state

                    best = trainable_state(self.model)
            if step % t.save_steps == 0 or stop:
                self._save(step, epoch, pos, tokens_seen, sums)
            if stop:
                self.stopped = True
                break
        if stopper is not None and stopper.should_stop and best is not None:
            with torch.no_grad():  # the adapter saved is the one of the best evaluation
                params = dict(self.model.named_parameters())
                for n, v in best.items():
                    params[n].copy_(v.to(params[n].device))
            log.info("early stopping: kept the weights of step %s", stopper.best_step)
        return "stopped" if self.stopped else "completed"

    def _to_device(self, batch: dict, device: torch.device) -> dict:
        if device.type != "cuda":
            return batch
        return {k: v.pin_memory().to(device, non_blocking=True) if isinstance(v, torch.Tensor)
                else self._to_device(v, device) if isinstance(v, dict) else v
                for k, v in batch.items()}

    def _log(self, step, max_steps, sums, grad_norm, lr, epoch, tokens_seen, tps, elapsed, done, device) -> None:
        """Read the window's device sums once, and write the train event."""
        keys = list(sums)
        dev = [torch.as_tensor(sums[k], dtype=torch.float64, device=device).reshape(()) for k in keys]
        gn = grad_norm.detach().to(torch.float64).reshape(()) if isinstance(grad_norm, torch.Tensor) else None
        vals = torch.stack(dev + ([gn] if gn is not None else [])).tolist() if dev or gn is not None else []
        host = dict(zip(keys, vals[:len(keys)]))
        steps = host.pop(_STEPS, 0)  # the same on every rank: not summed over them
        keys = list(host)
        host = dict(zip(keys, dist.all_reduce_sum([host[k] for k in keys], device)))
        step_loss = host.pop(_STEP_LOSS, None)
        fields = self.objective.summarize(host) if host else {}
        if step_loss is not None and steps:
            # logged as TRL / transformers' Trainer log it: the mean of the window's per-step losses (the
            # objective's own sums weight steps by their tokens, which differs when step sizes vary)
            fields["loss"] = step_loss / steps
        gnorm = vals[-1] if gn is not None else None
        eta = elapsed / done * (max_steps - step) if done > 0 else None
        self._emit(
            "train", step=step, max_steps=max_steps, loss=fields.pop("loss", None), lr=lr,
            grad_norm=gnorm if gnorm is None or math.isfinite(gnorm) else None, epoch=round(epoch, 4),
            tokens_per_s=round(tps, 1), tokens_seen=tokens_seen,
            peak_mem_gb=round(peak_memory_gb(self.hw.device), 3), elapsed_s=round(elapsed, 2),
            eta_s=round(eta, 1) if eta is not None else None, **_reserved_fields(self.hw.device), **fields,
        )
        pop = getattr(self.objective, "pop_samples", None)  # on-policy objectives: recent completions, scored
        if pop is not None and (samples := pop()):
            self._emit("samples", step=step, samples=samples)

    @torch.no_grad()
    def _evaluate(self, ctx, step: int, device: torch.device) -> float:
        rows = self.eval_rows
        mine = list(range(dist.rank(), len(rows), dist.world()))
        lengths = [self.objective.row_tokens(rows[i]) for i in mine]
        cap = max(self.capacity or 0, max(lengths, default=1))
        layout = Layout(self.layout.padding_free, None, self.layout.pad_id)
        sums: dict[str, Any] = {}
        self.model.eval()
        try:
            groups = forward_groups(lengths, cap if self.layout.padding_free else None, self.cfg.training.batch_size)
            for g in fsdp.even_passes(groups, self.strategy, device):
                picked = [rows[mine[j]] for j in g] if g is not None else [rows[0]]
                batch = self._to_device(self.objective.collate(picked, layout), device)
                _, part = self.objective.loss(ctx, batch, 1.0)
                if g is None:  # FSDP: a pass only to match the peers' gathers
                    continue
                for k, v in part.items():
                    if v is not None:
                        sums[k] = sums[k] + v if k in sums else v
        finally:
            self.model.train()
        keys = list(sums)
        vals = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=device).reshape(())
                            for k in keys]).tolist()
        host = dict(zip(keys, dist.all_reduce_sum(vals, device)))
        fields = self.objective.summarize(host)
        loss = fields.pop("loss")
        extra = {f"eval_{k}": v for k, v in fields.items() if k != "trained_tokens"}
        self._emit("eval", step=step, eval_loss=loss, **extra)
        return loss

    def _save(self, step: int, epoch: int, pos: int, tokens_seen: int, window: dict) -> None:
        if step == getattr(self, "_last_saved", -1):
            dist.barrier()
            return
        gathered = fsdp.gather_checkpoint(self.model, self.optimizer)  # FSDP: every rank takes part
        if not dist.is_main():
            self._last_saved = step
            dist.barrier()
            return
        keys = list(window)
        vals = [float(v) for v in (torch.stack([torch.as_tensor(window[k], dtype=torch.float64).reshape(()).cpu()
                                                 for k in keys]).tolist() if keys else [])]
        state = {"epoch": epoch, "position": pos, "tokens_seen": tokens_seen, "window": dict(zip(keys, vals))}
        path = save_checkpoint(self.run_dir, step, self.model, self.optimizer, self.scheduler, state, **gathered)
        self._last_saved = step
        log.info("checkpoint %s", path.name)
        dist.barrier()

    # ---- save -----------------------------------------------------------

    def save(self) -> Path | None:
        """Write adapter/ (LoRA, PEFT format) or model/ (full) atomically, with the tokenizer (rank 0)."""
        name = "model" if self.cfg.method in ("full", "freeze") else "adapter"
        final = self.run_dir / name
        whole = fsdp.gather_trainable(self.model)  # FSDP: every rank takes part; rank 0 gets the weights
        if not dist.is_main():
            return None
        with atomic.atomic_dir(final, overwrite=True) as tmp:
            adapters.save_adapter(self.model, tmp, self.cfg, state_dict=whole)  # [issue 15] PiSSA saved as plain LoRA; portable base id
            self.tokenizer.save_pretrained(str(tmp))
            self.objective.save_extra(self.model, tmp)
        log.info("saved %s to %s", name, final)
        return final

    def cleanup(self) -> None:
        self.model = None
        self.optimizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
