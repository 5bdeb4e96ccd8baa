"""Swap Tunesmith's Triton kernels into a live Hugging Face model.

    from tunesmith.kernels import patch
    model = peft.get_peft_model(model, lora_config)   # patch AFTER PEFT wrapping
    report = patch(model, mode="auto")                # auto | on | off
    log.info(report.summary())

`patch` is called on the finished training model: after quantized loading and
after `peft.get_peft_model`. It unwraps a PeftModel (and its LoraModel) to find
the transformers model inside, so it may also be called on a bare model. It
never replaces modules or classes: it rebinds `forward` on the modules of that
one instance, so other models in the process stay stock.

Dispatch is a small table keyed by `config.model_type`. An unknown
architecture, mode "off", or (mode "auto") a machine without CUDA is a logged
no-op; the report says what was swapped and what was skipped and why.

What it does not know: it does not check that a checkpoint's weights are
sane, and it patches only the module types named in the table; anything else
runs stock.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger("tunesmith.kernels")

MODES = ("auto", "on", "off")


@dataclass
class PatchReport:
    """What `patch` did to one model.

    swapped: "<kernel>: <n> modules" entries; skipped: (what, why) pairs.
    """

    model_type: str | None
    mode: str
    swapped: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        return bool(self.swapped)

    def summary(self) -> str:
        arch = self.model_type or "unknown"
        head = f"kernels[{self.mode}] {arch}: "
        parts = []
        if self.swapped:
            parts.append("swapped " + ", ".join(self.swapped))
        if self.skipped:
            parts.append("skipped " + "; ".join(f"{w} ({why})" for w, why in self.skipped))
        return head + ("; ".join(parts) if parts else "nothing to do")


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the transformers model inside a PeftModel / LoraModel, else `model`."""
    try:
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTuner
    except ImportError:  # no peft installed: nothing can be wrapped
        return model
    if isinstance(model, PeftModel):
        model = model.base_model
    if isinstance(model, BaseTuner):
        model = model.model
    return model


# --- the architecture table ---------------------------------------------------
# model_type -> which kernels apply and how. rms_offset: 1.0 for Gemma's
# (1 + w) RMSNorm. act: the MLP gate activation ("silu" -> SwiGLU,
# "gelu_tanh" -> GeGLU with the tanh approximation).
ARCHS: dict[str, dict] = {
    "llama": dict(rms_offset=0.0, act="silu"),
    "mistral": dict(rms_offset=0.0, act="silu"),
    "qwen2": dict(rms_offset=0.0, act="silu"),
    "qwen3": dict(rms_offset=0.0, act="silu"),
    "gemma2": dict(rms_offset=1.0, act="gelu_tanh"),
    "gemma3": dict(rms_offset=1.0, act="gelu_tanh"),
    "gemma3_text": dict(rms_offset=1.0, act="gelu_tanh"),
}

# Kernels patch() knows, in the order they are applied.
KERNELS = ("rms_norm", "mlp", "rope", "fused_linear_ce")


def patch(model: torch.nn.Module, mode: str = "auto") -> PatchReport:
    """Rebind forwards on `model`'s modules to Tunesmith's Triton kernels.

    Call it AFTER `peft.get_peft_model(model, ...)` (on the PeftModel) or on a
    bare transformers model; a PeftModel is unwrapped to the model inside.

    mode:
      "off"  patch nothing.
      "auto" patch what applies when CUDA is available; on a CPU-only machine
             patch nothing (the kernels need CUDA; CPU training stays stock).
      "on"   patch what applies even without CUDA (the Triton interpreter must
             then be enabled with TRITON_INTERPRET=1; for tests only: slow).

    Returns a PatchReport; `report.summary()` is one log line. Never raises for
    an unsupported model: anything it cannot patch runs stock and is listed in
    `report.skipped` with the reason.
    """
    if mode not in MODES:
        raise ValueError(f"kernels mode must be one of {MODES}, got {mode!r}")
    inner = unwrap_model(model)
    config = getattr(inner, "config", None)
    model_type = getattr(config, "model_type", None)
    report = PatchReport(model_type=model_type, mode=mode)

    if mode == "off":
        report.skipped.append(("all kernels", "kernels: off"))
    elif mode == "auto" and not torch.cuda.is_available():
        report.skipped.append(("all kernels", "kernels need CUDA; running stock on CPU"))
    elif model_type not in ARCHS:
        report.skipped.append(("all kernels", f"architecture {model_type!r} is not in the kernel table"))
    else:
        _apply(inner, ARCHS[model_type], report)

    log.info(report.summary())
    return report


def _apply(model: torch.nn.Module, spec: dict, report: PatchReport) -> None:
    try:
        import triton  # noqa: F401
    except ImportError:
        report.skipped.append(("all kernels", "triton is not installed"))
        return
    for name in KERNELS:
        patcher = _PATCHERS.get(name)
        if patcher is None:
            report.skipped.append((name, "not available in this build"))
            continue
        try:
            n, why = patcher(model, spec)
        except Exception as exc:  # a patcher must never break training: run stock
            log.warning("kernel %s not applied: %s", name, exc)
            report.skipped.append((name, f"error: {exc}"))
            continue
        if n:
            report.swapped.append(f"{name}: {n}")
        else:
            report.skipped.append((name, why or "no matching modules"))


# name -> fn(model, spec) -> (number of modules patched, reason if 0)
_PATCHERS: dict = {}
