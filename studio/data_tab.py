"""Data tab: pick or upload datasets, set how they are cut, and check them.

"Check data" runs the engine's inspection on the current form's config: the
detected format, row counts, a table of problems with row numbers, a token
length histogram and a preview of one example with the trained tokens marked.
Uploads are registered with the engine (copied under $TUNESMITH_HOME/uploads)
so they show up in the CLI as well.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tunesmith.engine import data as engine_data
from tunesmith.engine.config import RunConfig
from tunesmith.engine.data import inspect as data_inspect
from tunesmith.engine.errors import DataError

from .context import StudioContext, user_errors

PROBLEM_COLUMNS = ["dataset", "file", "row", "severity", "problem"]


@dataclass
class DataHandles:
    datasets: gr.Dropdown
    upload: gr.File
    upload_name: gr.Textbox
    check: gr.Button
    summary: gr.Markdown
    problems: gr.Dataframe
    histogram: gr.Plot
    preview: gr.HTML


def dataset_choices() -> list[str]:
    return [entry.name for entry in engine_data.list_datasets()]


def describe_selection(selected: list[str] | None) -> str:
    """One line per chosen dataset: its format and description (or what a path/hub id means)."""
    entries = {e.name: e for e in engine_data.list_datasets()}
    lines = []
    for name in selected or []:
        e = entries.get(name)
        if e is None:
            lines.append(f"- **{name}** — not a registered name: read as a file path or a hub dataset id.")
        else:
            lines.append(f"- **{e.name}** ({e.format}) — {e.description or 'no description'}")
    return "\n".join(lines) or "Pick at least one dataset."


def refresh_datasets(selected: list[str] | None) -> dict:
    # The selection is kept as is: file paths and hub ids typed in are valid too.
    return gr.update(choices=dataset_choices(), value=list(selected or []))


@user_errors
def register_upload(file: str | None, name: str, selected: list[str] | None):
    if not file:
        raise gr.Error("Choose a file to upload first (JSON, JSONL, CSV, Parquet or TXT).")
    name = (name or "").strip() or Path(file).stem
    entry = engine_data.register_upload(file, name)
    reg_name = getattr(entry, "name", None) or name
    value = list(dict.fromkeys([*(selected or []), reg_name]))
    gr.Info(f"Added dataset “{reg_name}”.")
    return gr.update(choices=dataset_choices(), value=value), None, ""


def problems_frame(reports: list[tuple[str, Any]]) -> pd.DataFrame:
    """Every listed problem of every report: dataset, file, row (or JSONL line), severity, message."""
    rows = []
    for name, report in reports:
        for p in report["problems"]:
            where = f"line {p['row']}" if p.get("line_number") else p["row"]
            rows.append([name, Path(p["file"]).name, where, p["severity"], f"{p['kind']}: {p['message']}"])
    return pd.DataFrame(rows, columns=PROBLEM_COLUMNS)


def report_markdown(name: str, report: Any) -> str:
    """A few friendly lines for one dataset's check report."""
    d = report.to_json()
    r = d["rows"]
    how = "given" if d["format_overridden"] else "detected"
    lines = [f"#### {'✅' if d['ok'] else '⚠️'} {name}",
             f"**{r['total']:,} rows**, format **{d['format']}** ({how}) · {r['ok']:,} fine, "
             f"{r['with_errors']:,} with errors, {r['with_warnings']:,} with warnings"
             + (f", {r['dropped']:,} skipped" if r["dropped"] else "")]
    ts = d["token_stats"]
    if ts:
        lines.append(f"Tokens per row: median {ts['lengths']['median']:.0f}, longest {ts['lengths']['max']:.0f} "
                     f"(cutoff {ts['cutoff_len']}: {ts['rows_over_cutoff']} rows cut) · "
                     f"{ts['trained_tokens']:,} of {ts['total_tokens']:,} tokens are trained")
    if d["estimate"]:
        lines.append(f"Estimated time: {data_inspect.estimate_note(report)}")
    lines += [f"- {w}" for w in d["warnings"]]
    if not d["ok"]:
        lines.append("Rows with errors stop training: fix them, or tick **Skip bad rows**.")
    return "\n\n".join(lines)


def combined_histogram(reports: list[tuple[str, Any]]):
    """The engine's length histogram; with several datasets, their bars overlaid on one chart."""
    fig = data_inspect.length_histogram_figure(reports[0][1])
    if len(reports) > 1:
        fig.data[0].name = reports[0][0]
        for name, report in reports[1:]:
            bars = data_inspect.length_histogram_figure(report).data[0]
            bars.name = name
            bars.marker.color = None
            fig.add_trace(bars)
        fig.update_traces(opacity=0.7)
        fig.update_layout(barmode="overlay", showlegend=True)
    return fig


def check_datasets(cfg: RunConfig, allowed_roots: list[Path] | None = None):
    """(reports [(name, InspectReport)], preview html) for the config's datasets.

    Token statistics and the preview use the config's model tokenizer and chat template.
    """
    from tunesmith.engine import models  # loads transformers: only when someone checks data

    tok = models.load_tokenizer(cfg.model)
    d = cfg.data
    fmt = None if d.format == "auto" else d.format
    reports, previews = [], []
    for name in d.datasets:
        report = data_inspect.inspect_dataset(
            name, format=fmt, model=cfg.model.name_or_path, cutoff_len=d.cutoff_len, drop_invalid=d.drop_invalid,
            tokenizer=tok, chat_template=cfg.model.chat_template, train_on_responses_only=d.train_on_responses_only,
            allowed_roots=allowed_roots,
        )
        reports.append((name, report))
        try:
            rows = data_inspect.preview_rows(name, tokenizer=tok, n=1, format=fmt, chat_template=cfg.model.chat_template,
                                            cutoff_len=d.cutoff_len, train_on_responses_only=d.train_on_responses_only)
        except DataError as e:  # no renderable row: the report already says why
            previews.append(f"<p><b>{html.escape(name)}</b>: no preview ({html.escape(str(e))})</p>")
            continue
        for row in rows:
            previews.append(f"<p><b>{html.escape(name)}</b> · {html.escape(Path(row.file).name)} row {row.row} · "
                            f"{row.n_trained} of {row.n_tokens} tokens trained</p>"
                            + data_inspect.render_masked_html(row))
    return reports, "".join(previews)


def build_data_tab(ctx: StudioContext) -> DataHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            datasets = ctx.field(
                "data.datasets", gr.Dropdown, choices=dataset_choices(), multiselect=True,
                allow_custom_value=True, label="Datasets", elem_id="datasets",
            )
            about = gr.Markdown(describe_selection(ctx.initial.data.datasets), elem_classes="ts-hint")
            with gr.Row():
                ctx.field("data.format", gr.Dropdown,
                          choices=["auto", "alpaca", "sharegpt", "openai", "text", "preference"], label="Format")
                ctx.field("data.max_samples", gr.Number, precision=0, minimum=0,
                          label="Max samples per dataset (0 = all)")
            with gr.Row():
                ctx.field("data.cutoff_len", gr.Slider, 16, 8192, step=16, label="Cutoff length (tokens)")
                ctx.field("data.val_size", gr.Slider, 0.0, 0.5, step=0.01, label="Validation fraction")
            ctx.field("data.val_file", gr.Textbox, label="Validation file (optional)",
                      placeholder="path/to/val.jsonl")
            with gr.Row():
                ctx.field("data.train_on_responses_only", gr.Checkbox, label="Train on responses only")
                ctx.field("data.packing", gr.Checkbox, label="Packing")
                ctx.field("data.drop_invalid", gr.Checkbox, label="Skip bad rows")
        with gr.Column(scale=2):
            with gr.Group():
                upload = gr.File(label="Upload a dataset", file_types=[".json", ".jsonl", ".csv", ".parquet", ".txt"],
                                 elem_id="upload", height=150)
                upload_name = gr.Textbox(label="Name", placeholder="my_data",
                                         info="How the dataset appears in the list (defaults to the file name).")
                add = gr.Button("Add dataset", variant="secondary")
    check = gr.Button("Check data", variant="primary", elem_id="check-data")
    summary = gr.Markdown(elem_classes="ts-report", elem_id="data-report")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            histogram = gr.Plot(label="Tokens per example", visible=False, elem_id="data-histogram")
        with gr.Column(scale=1):
            problems = gr.Dataframe(headers=PROBLEM_COLUMNS, label="Problems", visible=False, interactive=False,
                                    wrap=True)
    preview = gr.HTML(elem_classes="ts-preview", elem_id="data-preview")

    @user_errors
    def check_data(values: dict):
        reports, preview_html = check_datasets(ctx.config_from(values), ctx.allowed_roots)
        probs = problems_frame(reports)
        return (
            "\n\n".join(report_markdown(name, r) for name, r in reports),
            gr.update(value=combined_histogram(reports), visible=True),
            gr.update(value=probs, visible=not probs.empty),
            preview_html,
        )

    # ---- events ---------------------------------------------------------------
    datasets.change(describe_selection, datasets, about, show_progress="hidden")
    add.click(register_upload, [upload, upload_name, datasets], [datasets, upload, upload_name])
    check.click(check_data, ctx.config_inputs(), [summary, histogram, problems, preview])
    ctx.demo.load(refresh_datasets, datasets, datasets, show_progress="hidden")
    return DataHandles(datasets=datasets, upload=upload, upload_name=upload_name, check=check, summary=summary,
                       problems=problems, histogram=histogram, preview=preview)
