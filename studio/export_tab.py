"""Export tab: write a finished run as a PEFT adapter, a merged model, or GGUF files.

Calls engine.export.export_run() once per chosen format, reporting its
progress through gr.Progress, and lists what was written: paths, sizes and,
for GGUF, how closely each file's logits match the merged model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tunesmith.engine import jobs
from tunesmith.engine.units import human_size

from .context import StudioContext, user_errors
from .share_panel import build_share_panel

FORMATS = [("Adapter (small, needs the base model)", "adapter"),
           ("Merged model (Hugging Face folder)", "merged"),
           ("GGUF (llama.cpp, Ollama, LM Studio)", "gguf")]
GGUF_QUANTS = ["f16", "q8_0", "q4_k_m"]
RESULT_COLUMNS = ["format", "path", "size", "fidelity"]


@dataclass
class ExportHandles:
    run: gr.Dropdown
    formats: gr.CheckboxGroup
    quants: gr.CheckboxGroup
    out_dir: gr.Textbox
    export: gr.Button
    results: gr.Dataframe


def exportable_runs() -> list[tuple[str, str]]:
    """Runs that have something to export: completed, or stopped with a saved adapter/model."""
    out = []
    for r in jobs.list_runs():
        if r.status == "completed" or (r.status == "stopped" and (r.has_adapter or r.has_full_model)):
            out.append((f"{r.name} ({r.id}, {r.status})", r.id))
    return out


def refresh_runs(current: str | None) -> dict:
    choices = exportable_runs()
    ids = [v for _, v in choices]
    return gr.update(choices=choices, value=current if current in ids else (ids[0] if ids else None))


def fidelity_text(f: dict) -> str:
    """GGUF fidelity figures (llama.cpp vs the HF model: base + adapter) as one short line."""
    parts = []
    if f.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {100 * f['top1_agreement']:.1f}%")
    if f.get("mean_kl") is not None:
        parts.append(f"mean KL {f['mean_kl']:.4f}")
    if f.get("tokenization_ok") is not None:
        parts.append("tokenizer matches" if f["tokenization_ok"] else "TOKENIZER MISMATCH")
    if f.get("fidelity_passed") is not None:
        parts.append("meets its target" if f["fidelity_passed"] else "BELOW ITS TARGET")
    return " · ".join(parts)


def result_rows(result: Any) -> list[dict]:
    """Table rows for one engine ExportResult: one per GGUF file, else one for the folder."""
    if result.files:
        return [{"format": f"{result.format} {f.get('quant') or ''}".strip(), "path": str(f["path"]),
                 "size": human_size(f.get("size_bytes")), "fidelity": fidelity_text(f)} for f in result.files]
    return [{"format": result.format, "path": str(result.path), "size": human_size(result.size_bytes),
             "fidelity": ""}]


def build_export_tab(ctx: StudioContext) -> ExportHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            with gr.Row():
                run = gr.Dropdown(choices=[], label="Run", info="A completed run (or a stopped one with a saved adapter).",
                                  elem_id="export-run", scale=4)
                refresh = gr.Button("Refresh", size="sm", scale=1, min_width=80)
            formats = gr.CheckboxGroup(FORMATS, value=["adapter"], label="Formats", elem_id="export-formats")
            quants = gr.CheckboxGroup(GGUF_QUANTS, value=["q8_0"], label="GGUF types", visible=False,
                                      info="f16 = full quality; q8_0 ≈ lossless, half the size; q4_k_m = smallest.")
            out_dir = gr.Textbox(label="Output folder (optional)", placeholder="default: under $TUNESMITH_HOME/exports",
                                 info="Where the files are written; empty picks a folder per run.")
            export = gr.Button("Export", variant="primary", elem_id="export-btn")
        with gr.Column(scale=3):
            results = gr.Dataframe(headers=RESULT_COLUMNS, label="Exported files", interactive=False, wrap=True,
                                   elem_id="export-results")
            notes_md = gr.Markdown()
    build_share_panel(ctx, run)  # [issue 15] push to the Hub / serve: studio/share_panel.py

    @user_errors
    def do_export(run_id: str | None, fmts: list[str], qs: list[str], out: str, progress=gr.Progress()):
        from tunesmith.engine import export  # loads torch; only when someone exports

        if not run_id:
            raise gr.Error("Pick a run to export.")
        if not fmts:
            raise gr.Error("Tick at least one format.")
        if "gguf" in fmts and not qs:
            raise gr.Error("Tick at least one GGUF type (f16, q8_0, q4_k_m).")
        rows: list[dict] = []
        notes: list[str] = []
        for i, fmt in enumerate(fmts):
            def report(frac: float, message: str = "", _i=i, _fmt=fmt) -> None:
                progress((_i + max(0.0, min(1.0, frac))) / len(fmts), desc=f"{_fmt}: {message}".strip(": "))

            report(0.0, "starting")
            # One folder per format when several share an output folder.
            target = ctx.confine.output_dir(out)  # None: the default folder under exports
            if target and len(fmts) > 1:
                target = str(Path(target).expanduser() / fmt)
            result = export.export_run(run_id, fmt, target,
                                       qs if fmt == "gguf" else None, progress=report)
            rows += result_rows(result)
            notes += result.notes
        gr.Info(f"Exported {len(rows)} item(s).")
        return pd.DataFrame(rows, columns=RESULT_COLUMNS), "\n".join(f"- {n}" for n in notes)

    # ---- events ---------------------------------------------------------------
    formats.change(lambda f: gr.update(visible="gguf" in (f or [])), formats, quants, show_progress="hidden")
    refresh.click(refresh_runs, run, run)
    export.click(do_export, [run, formats, quants, out_dir], [results, notes_md])
    ctx.demo.load(refresh_runs, run, run, show_progress="hidden")
    return ExportHandles(run=run, formats=formats, quants=quants, out_dir=out_dir, export=export, results=results)
