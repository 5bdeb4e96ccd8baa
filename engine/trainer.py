"""The training recipe: setup -> train -> save -> cleanup, on TRL's SFTTrainer.

    recipe = Recipe(cfg, run_dir, events, stop_requested)
    recipe.setup(); recipe.train(); recipe.save(); recipe.cleanup()

Features and the RunConfig fields that drive them:
- method qlora (4-bit NF4 base, double quantization, bf16 compute on GPUs),
  lora (16-bit base) or full (all weights) — `method`, `quantization.*`
- LoRA on all linear layers by default — `lora.*`
- responses-only loss, cutoff, validation split, packing — `data.*` (engine.data)
- Tunesmith's Triton kernels through one entry point, tunesmith.kernels.patch — `kernels`
- metrics to events.jsonl every `training.logging_steps`: loss, lr, grad norm,
  tokens/s, peak memory, elapsed and ETA; eval loss when there is a validation set
- graceful stop: `stop_requested()` is polled after every step; the adapter
  trained so far is saved, and the run ends as "stopped"

Raises:
    ModelError: the model cannot be loaded.
    DataError: the data cannot be read or is empty.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Callable

import torch
from transformers import TrainerCallback

from . import adapters, atomic, models
from .config import RunConfig
from .early_stopping import EarlyStopping
from .events import EventWriter

log = logging.getLogger("tunesmith.trainer")

_OPTIMIZERS = {
    "adamw_torch": "adamw_torch",
    "adamw_8bit": "adamw_bnb_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "sgd": "sgd",
    "adafactor": "adafactor",
}


def checkpoint_step(ckpt: Path) -> int:
    """The optimizer step a checkpoint-N folder was saved at (-1 if the name is not one)."""
    tail = ckpt.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (checkpoint-N with its trainer state) of a run, if any."""
    found = [d for d in (Path(run_dir) / "checkpoints").glob("checkpoint-*")
             if checkpoint_step(d) >= 0 and (d / "trainer_state.json").exists()]
    return max(found, key=checkpoint_step) if found else None


class StopRequested(Exception):
    """Raised between loading phases when the user pressed Stop before training began."""


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    # ru_maxrss is KiB on Linux: the worker's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class MetricsCallback(TrainerCallback):
    """Writes train/eval events and turns a stop request into a graceful stop."""

    def __init__(self, events: EventWriter, stop_requested: Callable[[], bool], device: str,
                 early_stopping: EarlyStopping | None = None):
        self.events = events
        self.early_stopping = early_stopping
        self.stop_requested = stop_requested
        self.device = device
        self.t0 = time.time()
        self.last_t = self.t0
        self.last_tokens = 0
        self.start_step = 0
        self.stopped = False

    def on_train_begin(self, args, state, control, **kw):
        self.t0 = self.last_t = time.time()
        self.start_step = state.global_step  # > 0 when resuming from a checkpoint
        self.last_tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self.events.status("running", "training", max_steps=state.max_steps)

    def on_step_end(self, args, state, control, **kw):
        if self.stop_requested():
            self.stopped = True
            control.should_training_stop = True
            control.should_save = False

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        now = time.time()
        step = state.global_step
        if "eval_loss" in logs:
            self.events.write("eval", step=step, eval_loss=logs["eval_loss"])
            # --- early stopping (engine.early_stopping decides; the studio helper's minimal hook) ---
            es = self.early_stopping
            if es is not None and es.update(step, float(logs["eval_loss"])):
                control.should_training_stop = True
                self.events.write("info", message=f"early stopping: {es.reason}", early_stop=True,
                                  best_step=es.best_step, best_eval_loss=es.best_loss)
        if "loss" not in logs:
            return
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        dt = max(now - self.last_t, 1e-6)
        tps = (tokens - self.last_tokens) / dt if tokens else None
        self.last_t, self.last_tokens = now, tokens
        elapsed = now - self.t0
        done = step - self.start_step
        eta = elapsed / done * (state.max_steps - step) if done > 0 else None
        self.events.write(
            "train", step=step, max_steps=state.max_steps, loss=float(logs["loss"]),
            lr=logs.get("learning_rate"), grad_norm=logs.get("grad_norm"), epoch=logs.get("epoch", state.epoch),
            tokens_per_s=round(tps, 1) if tps is not None else None, tokens_seen=tokens,
            peak_mem_gb=round(peak_memory_gb(self.device), 3), elapsed_s=round(elapsed, 2),
            eta_s=round(eta, 1) if eta is not None else None,
        )


class Recipe:
    def __init__(self, cfg: RunConfig, run_dir: Path, events: EventWriter, stop_requested: Callable[[], bool]):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.events = events
        self.stop_requested = stop_requested
        self.trainer = None
        self.callback: MetricsCallback | None = None

    # ---- setup ----------------------------------------------------------

    def _check_stop(self) -> None:
        if self.stop_requested():
            raise StopRequested()

    def setup(self) -> None:
        cfg = self.cfg
        self.events.status("running", "loading model")
        self.model, self.tokenizer, self.hw = models.load_for_training(cfg)
        log.info("loaded %s on %s (%s)", cfg.model.name_or_path, self.hw.name, cfg.method)
        self._check_stop()

        self.events.status("running", "preparing data")
        from .data import prepare_datasets

        self.train_ds, self.eval_ds = prepare_datasets(cfg, self.tokenizer)
        log.info("data: %d training rows, %s eval rows", len(self.train_ds), len(self.eval_ds) if self.eval_ds else 0)
        self._check_stop()

        self.model = self._wrap(self.model)
        if cfg.training.neftune_alpha:  # [issue 15]
            adapters.enable_neftune(self.model, cfg.training.neftune_alpha)
        from tunesmith.kernels import patch, tune_memory

        report = patch(self.model, mode=cfg.kernels)  # logs its own summary line
        self.events.write("info", message=f"kernels: {report.summary()}")
        if self._kernel_memory_plan and report.applied:
            tokens = cfg.training.batch_size * cfg.data.cutoff_len
            plan = tune_memory(self.model, tokens, prefer=cfg.training.memory_mode)
            msg = f"memory ({cfg.training.memory_mode}, {cfg.training.batch_size} x {cfg.data.cutoff_len} tokens): " \
                  f"{plan.summary()}"
            log.info(msg)
            self.events.write("info", message=msg)
        elif self._kernel_memory_plan and cfg.training.gradient_checkpointing:
            # kernels were expected but did not apply: fall back to stock checkpointing
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(self.model, "enable_input_require_grads"):
                self.model.enable_input_require_grads()

    def _kernels_expected(self, model) -> bool:
        """Will tunesmith.kernels patch this model on this machine? Then the kernels' memory plan
        (kernels.tune_memory) decides checkpointing, and the 16-bit weights stay 16-bit."""
        from tunesmith.kernels.patching import ARCHS

        cfg = getattr(model, "config", None)
        return (self.cfg.kernels != "off" and self.cfg.method in ("qlora", "lora") and self.hw.device == "cuda"
                and getattr(cfg, "model_type", None) in ARCHS)

    def _wrap(self, model):
        cfg = self.cfg
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

    # ---- train ----------------------------------------------------------

    def _sft_config(self):
        from trl import SFTConfig

        cfg, t, hw = self.cfg, self.cfg.training, self.hw
        optim = _OPTIMIZERS[t.optimizer]
        if hw.device == "cpu" and "8bit" in optim:
            log.info("optimizer %s needs a GPU; using adamw_torch on the CPU", t.optimizer)
            optim = "adamw_torch"
        prec = t.precision
        if prec == "auto":
            prec = ("bf16" if hw.bf16 else "fp16") if hw.device == "cuda" else "fp32"
        has_eval = self.eval_ds is not None and len(self.eval_ds) > 0
        # Early stopping keeps the best adapter: a checkpoint at every evaluation, the best reloaded at the end.
        early = has_eval and t.early_stopping_patience is not None
        save_steps = (t.eval_steps or t.save_steps) if early else t.save_steps
        return SFTConfig(
            output_dir=str(self.run_dir / "checkpoints"),
            per_device_train_batch_size=t.batch_size,
            per_device_eval_batch_size=t.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation,
            num_train_epochs=t.num_epochs,
            max_steps=t.max_steps or -1,
            learning_rate=t.learning_rate,
            lr_scheduler_type=t.lr_scheduler,
            warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of total steps
            weight_decay=t.weight_decay,
            max_grad_norm=t.max_grad_norm if t.max_grad_norm > 0 else 1e9,
            optim=optim,
            # gradient checkpointing is enabled on the model in _wrap (non-reentrant); the
            # trainer's own flag stays at its default (off), which newer transformers renamed.
            seed=t.seed,
            data_seed=t.seed,
            logging_steps=t.logging_steps,
            logging_first_step=True,
            save_steps=save_steps,
            save_total_limit=2,
            load_best_model_at_end=early,
            metric_for_best_model="eval_loss" if early else None,
            greater_is_better=False if early else None,
            eval_strategy="steps" if has_eval else "no",
            eval_steps=(t.eval_steps or t.save_steps) if has_eval else None,
            bf16=prec == "bf16",
            fp16=prec == "fp16",
            use_cpu=hw.device == "cpu",
            report_to="none",
            disable_tqdm=True,
            include_num_input_tokens_seen="non_padding",
            # engine.data packs itself (rows carry seq_lengths/position_ids). padding_free makes TRL
            # send no attention mask, so attention stays within each example; rows are already cut.
            max_length=None if cfg.data.packing else cfg.data.cutoff_len,
            padding_free=cfg.data.packing,
            packing=False,
            remove_unused_columns=False,
        )

    def latest_checkpoint(self) -> Path | None:
        return latest_checkpoint(self.run_dir)

    def train(self, resume: bool = False) -> str:
        """Train (from the latest checkpoint when `resume`); returns the final status: completed or stopped."""
        from trl import SFTTrainer

        patience = self.cfg.training.early_stopping_patience
        has_eval = self.eval_ds is not None and len(self.eval_ds) > 0
        if patience is not None and not has_eval:
            log.warning("early stopping needs a validation set (data.val_size or data.val_file); training to the end")
        stopper = EarlyStopping(patience) if patience is not None and has_eval else None
        self.callback = MetricsCallback(self.events, self.stop_requested, self.hw.device, stopper)
        self.trainer = SFTTrainer(
            model=self.model,
            args=self._sft_config(),
            train_dataset=self.train_ds,
            eval_dataset=self.eval_ds if self.eval_ds is not None and len(self.eval_ds) else None,
            processing_class=self.tokenizer,
            callbacks=[self.callback],
        )
        ckpt = self.latest_checkpoint() if resume else None
        if ckpt is not None:
            log.info("resuming from %s", ckpt.name)
        self.trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
        return "stopped" if self.callback.stopped else "completed"

    # ---- save -----------------------------------------------------------

    def save(self) -> Path:
        """Write adapter/ (LoRA, PEFT format) or model/ (full) atomically, with the tokenizer."""
        model = self.trainer.model if self.trainer is not None else self.model
        name = "model" if self.cfg.method in ("full", "freeze") else "adapter"
        final = self.run_dir / name
        with atomic.atomic_dir(final, overwrite=True) as tmp:
            adapters.save_adapter(model, tmp, self.cfg)  # [issue 15] PiSSA saved as plain LoRA; portable base id
            self.tokenizer.save_pretrained(str(tmp))
        log.info("saved %s to %s", name, final)
        return final

    def cleanup(self) -> None:
        self.trainer = None
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
