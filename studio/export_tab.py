"""Export tab: write a finished run as a PEFT adapter, a merged model, or GGUF files, and download them.

Calls engine.export.export_run() once per chosen format, reporting its
progress through gr.Progress, and lists what was written with sizes and, for
GGUF, how closely each file's logits match the merged model. Everything
written is offered for download: folders (adapter, merged model) as one zip
each (engine.archive, written on disk, never held in memory), GGUF files and
their Ollama Modelfiles as they are. Picking a run lists what earlier exports
of it left, so a person who exported yesterday can download today.

The run picked by default is the newest finished one (the run just trained).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tunesmith.engine import jobs, paths
from tunesmith.engine.archive import zip_folder
from tunesmith.engine.units import human_size

from .context import StudioContext
from .i18n import T, localize, tr
from .notices import toast_errors
from .llamacpp_panel import build_llamacpp_panel
from .llamacpp_panel import current_status as current_llamacpp_status
from .share_panel import build_share_panel

FORMATS = [("Adapter (small, needs the base model)", "adapter"),
           ("Merged model (Hugging Face folder)", "merged"),
           ("GGUF (llama.cpp, Ollama, LM Studio)", "gguf")]
GGUF_QUANTS = [("Full quality (f16)", "f16"), ("Near lossless, half the size (q8_0)", "q8_0"),
               ("Smallest (q4_k_m)", "q4_k_m")]
RESULT_COLUMNS = ["format", "file", "size", "check"]


@dataclass
class ExportHandles:
    run: gr.Dropdown
    formats: gr.CheckboxGroup
    quants: gr.CheckboxGroup
    out_dir: gr.Textbox
    export: gr.Button
    results: gr.Dataframe
    downloads: gr.File
    refresh_inputs: list
    refresh_outputs: list


def exportable_runs() -> list[tuple[str, str]]:
    """Runs that have something to export, the most recently finished first: completed, or stopped
    with a saved adapter/model."""
    runs = [r for r in jobs.list_runs()
            if r.status == "completed" or (r.status == "stopped" and (r.has_adapter or r.has_full_model))]
    runs.sort(key=lambda r: r.finished_at or r.created_at, reverse=True)
    return [(f"{r.name} ({r.id}, {r.status})", r.id) for r in runs]


def pick_run(ids: list[str], current: str | None, shown: str | None, known: list[str] | None) -> str | None:
    """The run to preselect: the user's pick while the list is unchanged; when a run was added (one just
    finished) or nothing valid is picked, the run shown in the Train monitor if exportable, else the newest."""
    if current in ids and set(ids) == set(known or []):
        return current
    if shown in ids:
        return shown
    return ids[0] if ids else None


def refresh_runs(current: str | None, shown: str | None = None, known: list[str] | None = None):
    """(run dropdown update, ids now known)."""
    choices = exportable_runs()
    ids = [v for _, v in choices]
    return gr.update(choices=choices, value=pick_run(ids, current, shown, known)), ids


def fidelity_text(f: dict) -> str:
    """GGUF fidelity figures (llama.cpp vs the HF model: base + adapter) as one short line."""
    parts = []
    if f.get("top1_agreement") is not None:
        parts.append(tr("same next word {pct:.1f}% of the time", pct=100 * f["top1_agreement"]))
    if f.get("mean_kl") is not None:
        parts.append(tr("mean KL {kl:.4f}", kl=f["mean_kl"]))
    if f.get("tokenization_ok") is not None:
        parts.append(tr("tokenizer matches") if f["tokenization_ok"] else tr("TOKENIZER MISMATCH"))
    if f.get("fidelity_passed") is not None:
        parts.append(tr("meets its target") if f["fidelity_passed"] else tr("BELOW ITS TARGET"))
    return " · ".join(parts) or str(f.get("fidelity") or "")  # "llama.cpp check: not run yet"


def result_rows(result: Any) -> list[dict]:
    """Table rows for one engine ExportResult: one per GGUF file, else one for the folder."""
    if result.files:
        return [{"format": f"{result.format} {f.get('quant') or ''}".strip(), "file": Path(f["path"]).name,
                 "size": human_size(f.get("size_bytes")), "check": fidelity_text(f)} for f in result.files]
    return [{"format": result.format, "file": Path(result.path).name, "size": human_size(result.size_bytes),
             "check": ""}]


def download_files(folder: Path) -> list[Path]:
    """What a person downloads from one export folder: the folder as a zip (adapter, merged model), or its
    GGUF files and Modelfiles as they are. Zips are made here (once; reused while the folder is unchanged)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs:
        return ggufs + sorted(f for f in folder.iterdir() if f.is_file() and "modelfile" in f.name.lower())
    return [zip_folder(folder)]


def existing_downloads(run_id: str | None) -> list[Path]:
    """Downloads left by earlier exports of a run into the default folder ($TUNESMITH_HOME/exports/RUN)."""
    if not run_id:
        return []
    root = paths.exports_dir() / run_id
    out: list[Path] = []
    for fmt in ("adapter", "merged", "gguf"):
        folder = root / fmt
        if fmt == "gguf":
            out += download_files(folder)
        elif (folder.with_name(fmt + ".zip")).exists():
            out.append(folder.with_name(fmt + ".zip"))
    return out


def downloads_update(files: list[Path]) -> dict:
    return gr.update(value=[str(f) for f in files] or None, visible=bool(files))


def build_export_tab(ctx: StudioContext) -> ExportHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            with gr.Row():
                run = gr.Dropdown(choices=[], label=T("Run"),
                                  info=T("A finished run (or a stopped one with a saved adapter). The newest is picked."),
                                  elem_id="export-run", scale=4)
                refresh = gr.Button(T("Refresh"), size="sm", scale=1, min_width=80)
            formats = localize(gr.CheckboxGroup(FORMATS, value=["adapter"], label=T("Formats"),
                                                elem_id="export-formats"), FORMATS)
            quants = localize(gr.CheckboxGroup(GGUF_QUANTS, value=["q8_0"], label=T("GGUF size"), visible=False,
                                               elem_id="export-quants",
                                               info=T("Smaller files run on smaller machines and answer a little "
                                                      "worse.")), GGUF_QUANTS)
            llama = build_llamacpp_panel()  # K-quants need llama.cpp: its status and an install button
            with gr.Accordion(T("Advanced"), open=False):
                out_dir = gr.Textbox(label=T("Output folder on the server (optional)"),
                                     placeholder=T("default: a folder per run under the studio's home"),
                                     info=T("Leave empty to download the files from this page."))
            export = gr.Button(T("Export"), variant="primary", elem_id="export-btn")
        with gr.Column(scale=3):
            results = gr.Dataframe(headers=RESULT_COLUMNS, label=T("Exported files"), interactive=False, wrap=True,
                                   elem_id="export-results")
            downloads = gr.File(label=T("Download"), file_count="multiple", interactive=False, visible=False,
                                elem_id="export-downloads")
            notes_md = gr.Markdown()
    known = gr.State([])
    build_share_panel(ctx, run)  # [issue 15] push to the Hub / serve: studio/share_panel.py

    @toast_errors
    def do_export(run_id: str | None, fmts: list[str], qs: list[str], out: str, progress=gr.Progress()):
        from tunesmith.engine import export  # loads torch; only when someone exports

        if not run_id:
            raise gr.Error(tr("Pick a run to export."), print_exception=False)
        if not fmts:
            raise gr.Error(tr("Tick at least one format."), print_exception=False)
        if "gguf" in fmts and not qs:
            raise gr.Error(tr("Tick at least one GGUF size."), print_exception=False)
        rows: list[dict] = []
        notes: list[str] = []
        files: list[Path] = []
        for i, fmt in enumerate(fmts):
            def report(frac: float, message: str = "", _i=i, _fmt=fmt) -> None:
                progress((_i + max(0.0, min(1.0, frac))) / len(fmts), desc=f"{_fmt}: {message}".strip(": "))

            report(0.0, "starting")
            # One folder per format when several share an output folder.
            target = ctx.confine.output_dir(out)  # None: the default folder under exports
            if target and len(fmts) > 1:
                target = str(Path(target).expanduser() / fmt)
            result = export.export_run(run_id, fmt, target,
                                       [q for q in qs if q] if fmt == "gguf" else None, progress=report)
            rows += result_rows(result)
            notes += result.notes
            report(1.0, "preparing the download")
            files += download_files(result.path)
        gr.Info(tr("Exported {n} item(s). Download them below.", n=len(rows)))
        return (pd.DataFrame(rows, columns=RESULT_COLUMNS).rename(columns=tr), downloads_update(files),
                "\n".join(f"- {n}" for n in notes))

    def show_existing(run_id: str | None):
        return downloads_update(existing_downloads(run_id))

    # ---- events ---------------------------------------------------------------
    refresh_inputs = [run, ctx.run_id, known]
    refresh_outputs = [run, known]
    formats.change(lambda f: gr.update(visible="gguf" in (f or [])), formats, quants, show_progress="hidden")
    refresh.click(refresh_runs, refresh_inputs, refresh_outputs)
    export.click(do_export, [run, formats, quants, out_dir], [results, downloads, notes_md])
    run.change(show_existing, run, downloads, show_progress="hidden")
    ctx.demo.load(refresh_runs, refresh_inputs, refresh_outputs, show_progress="hidden")
    ctx.demo.load(current_llamacpp_status, None, [llama.status, llama.install], show_progress="hidden")
    return ExportHandles(run=run, formats=formats, quants=quants, out_dir=out_dir, export=export, results=results,
                         downloads=downloads, refresh_inputs=refresh_inputs, refresh_outputs=refresh_outputs)
