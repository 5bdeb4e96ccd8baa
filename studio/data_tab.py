"""Data tab: pick or upload datasets, map their columns, set how they are cut, and check them.

A dropped file is shown as the file holds it (its first rows in a grid, nested
values as short JSON), with the engine's guess of its format and columns in
dropdowns the person can change; "Register dataset" stores that choice in
$TUNESMITH_HOME/dataset_info.json as LLaMA-Factory `formatting` / `columns` /
`tags` (the file is copied under $TUNESMITH_HOME/uploads), so Check data, the
CLI and training all read the file the same way. Picking a dataset in the
list shows its first rows too.

"Check data" runs the engine's inspection on the current form's config: the
detected format, row counts, a table of problems with row numbers, a token
length histogram and a preview of one example with the trained tokens marked.

What it does not know: whether a mapping is right beyond "some rows are
usable"; Check data lists the rows it cannot use and why.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from tunesmith.engine import data as engine_data
from tunesmith.engine.config import RunConfig
from tunesmith.engine.data import inspect as data_inspect
from tunesmith.engine.data.formats import FORMATS, ColumnMapping, message_keys, suggest_mapping
from tunesmith.engine.errors import ConfigError, DataError

from .context import StudioContext
from .i18n import T, tr
from .notices import toast_errors

PROBLEM_COLUMNS = ["dataset", "file", "row", "severity", "problem"]
UPLOAD_TYPES = [".json", ".jsonl", ".csv", ".tsv", ".parquet", ".xlsx", ".txt"]
GRID_ROWS = 20  # rows in the grid: enough to see the shape of a file, small enough to send on every pick
CELL_CHARS = 160  # longer cells (and nested values as JSON) are cut with "…"
SAMPLE_ROWS = 200  # rows kept per session to offer column, key and role names from
NONE = "(none)"  # the choice for an optional column the file does not have

# The ColumnMapping fields a person can set, in the order of their dropdowns.
MAP_FIELDS = ("prompt", "query", "response", "messages", "chosen", "rejected", "system", "history", "kto_tag",
              "role_tag", "content_tag", "user_tag", "assistant_tag")
TAG_FIELDS = ("role_tag", "content_tag", "user_tag", "assistant_tag")
_CHAT_TAGS = {
    "role_tag": ("Role key in each message", True),
    "content_tag": ("Text key in each message", True),
    "user_tag": ("The user's role name", True),
    "assistant_tag": ("The assistant's role name", True),
}
# format -> {field: (label, required)}: the dropdowns shown for that format ("auto" shows none).
# KTO rows: a true/false label on the reply (desirable / undesirable), kept for objective kto
_KTO = {"kto_tag": ("Good / bad label column (KTO)", False)}
MAP_LAYOUT: dict[str, dict[str, tuple[str, bool]]] = {
    "alpaca": {"prompt": ("Instruction column", True), "query": ("Input column", False),
               "response": ("Response column", True), "system": ("System prompt column", False),
               "history": ("History column", False), **_KTO},
    "sharegpt": {"messages": ("Conversation column", True), "system": ("System prompt column", False), **_KTO,
                 **_CHAT_TAGS},
    "openai": {"messages": ("Conversation column", True), "system": ("System prompt column", False), **_KTO,
               **_CHAT_TAGS},
    "text": {"prompt": ("Text column", True)},
    "preference": {"prompt": ("Prompt column", False), "messages": ("Conversation column (instead of a prompt)", False),
                   "chosen": ("Chosen answer column", True), "rejected": ("Rejected answer column", True),
                   "system": ("System prompt column", False)},
}
FORMAT_HELP = {
    "auto": "Tunesmith reads the file the way it detected.",
    "alpaca": "One instruction and its response per row; an optional input is added to the instruction.",
    "sharegpt": "Each row holds a conversation: a list of messages, each with a role and a text.",
    "openai": "Each row holds a conversation: a list of messages with a role and a content (OpenAI chat style).",
    "text": "Plain text for continued pretraining: every token is trained.",
    "preference": "A prompt (or a conversation) with a chosen and a rejected answer, for preference training.",
}


@dataclass
class DataHandles:
    datasets: gr.Dropdown
    upload: gr.File
    upload_name: gr.Textbox
    grid: gr.Dataframe
    map_format: gr.Dropdown
    map_fields: dict[str, gr.Dropdown]
    register: gr.Button
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
    chosen = list(selected or [])
    for name in dict.fromkeys(chosen):  # a name chosen twice trains twice per pass: one line that says so
        e = entries.get(name)
        times = chosen.count(name)
        twice = " " + tr("(chosen {k} times: its rows train {k} times per pass)", k=times) if times > 1 else ""
        if e is None:
            lines.append(f"- **{name}** — " + tr("not a registered name: read as a file path or a hub dataset id.") + twice)
        else:
            lines.append(f"- **{e.name}** ({e.format}) — {tr(e.description) if e.description else tr('no description')}"
                         + twice)
    return "\n".join(lines) or tr("Pick at least one dataset.")


def refresh_datasets() -> dict:
    # Choices only: the selection (restored from the saved form, or typed paths and hub ids) stays.
    return gr.update(choices=dataset_choices())


# ---------------------------------------------------------------------------
# A look inside a file: the grid and the mapping dropdowns (pure, unit tested)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def preview_frame(peek: data_inspect.Peek, n: int = GRID_ROWS) -> pd.DataFrame:
    """The first `n` rows as the file holds them: one column per key, nested values as short JSON.

    The first column is the JSONL line (or row) number that Check data's problems
    name; a row that did not parse says why in its first cell.
    """
    keys: dict[str, None] = {}
    for i, row in enumerate(peek.rows[:n]):
        if i not in peek.parse_errors:
            keys.update(dict.fromkeys(map(str, row)) if isinstance(row, dict) else {"value": None})
    cols = list(keys) or ["value"]
    num = "line" if peek.line_numbered else "row"
    num = "#" if num in keys else num
    out = []
    for i, row in enumerate(peek.rows[:n]):
        if i in peek.parse_errors:
            cells = [f"⚠ could not be read: {peek.parse_errors[i]}"] + [""] * (len(cols) - 1)
        elif isinstance(row, dict):
            cells = [_cell(row.get(k)) for k in cols]
        else:
            cells = [_cell(row) if k == "value" else "" for k in cols]
        out.append([peek.numbers[i], *cells])
    return pd.DataFrame(out, columns=[num, *cols])


def grid_widths(frame: pd.DataFrame, total: int = 1200) -> list[str]:
    """Column widths for the grid (px): the number narrow, short columns as wide as their text, the long
    ones sharing the rest of a `total`-pixel table (left alone, the grid sizes a column by its longest cell)."""
    short = {}
    for col in frame.columns[1:]:
        longest = max([len(str(col)), *(len(str(v)) for v in frame[col])])
        if longest < 24:
            short[col] = max(longest, 5) * 9 + 28
    n_long = len(frame.columns) - 1 - len(short)
    rest = max(240, (total - 64 - sum(short.values())) // n_long) if n_long else 0
    return ["64px", *(f"{short.get(col, rest)}px" for col in frame.columns[1:])]


def grid_update(frame: pd.DataFrame | None) -> dict:
    if frame is None:
        return gr.update(visible=False)
    return gr.update(value=frame, visible=True, column_widths=grid_widths(frame))


def _keys(rows: list) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            keys.update(dict.fromkeys(map(str, row)))
    return list(keys)


def map_layout(fmt: str, messages: str | None = None) -> dict[str, tuple[str, bool]]:
    """{field: (label, required)} of the dropdowns shown for `fmt`.

    A preference set whose prompt is a conversation (`messages` set) also shows
    the message keys and role names.
    """
    layout = dict(MAP_LAYOUT.get(fmt, {}))
    if fmt == "preference" and messages not in (None, "", NONE):
        layout.update(_CHAT_TAGS)
    return layout


def mapping_form(fmt: str, mapping: ColumnMapping | None, rows: list) -> dict[str, dict]:
    """Every dropdown's {visible, label, choices, value} for `mapping` read as `fmt`.

    Column choices are the file's keys, key choices the keys inside its messages,
    role-name choices the names its messages use. A suggested column the file
    lacks is left empty (required) or "(none)" (optional), so the person sees
    what is missing.
    """
    layout = map_layout(fmt, mapping.messages if mapping else None)
    keys = _keys(rows)
    msg_keys, role_names = message_keys(rows, mapping.messages if mapping else None,
                                        mapping.role_tag if mapping else None)
    form = {}
    for f in MAP_FIELDS:
        label, required = layout.get(f, (f, False))
        value = getattr(mapping, f, None) if mapping is not None else None
        if f in ("role_tag", "content_tag"):
            choices = msg_keys
        elif f in ("user_tag", "assistant_tag"):
            choices = list(dict.fromkeys([*role_names, *([value] if value else [])]))
        else:
            choices = keys if required else [NONE, *keys]
        if value not in choices:
            value = None if required or f in TAG_FIELDS else NONE
        form[f] = {"visible": f in layout, "label": tr(label) if f in layout else label, "choices": choices,
                   "value": value}
    return form


def mapping_spec(fmt: str, values: dict[str, Any]) -> dict[str, str | None]:
    """The dropdowns' values as a ColumnMapping.parse override {field: column or None}.

    Raises gr.Error naming a required dropdown left empty.
    """
    spec: dict[str, str | None] = {}
    for f, (label, required) in map_layout(fmt, values.get("messages")).items():
        v = values.get(f)
        v = None if v in (None, "", NONE) or not isinstance(v, str) else v.strip() or None
        if v is None and required:
            raise gr.Error(tr("Pick the {what}: which part of the file holds it.", what=tr(label).lower()),
                           print_exception=False)
        spec[f] = v
    if fmt == "preference" and not spec.get("prompt") and not spec.get("messages"):
        raise gr.Error(tr("Pick the prompt column or the conversation column: the answers need a question."),
                       print_exception=False)
    return spec


def safe_name(file: str) -> str:
    """A dataset name from a file name: "My chats (1).jsonl" -> "My_chats_1"."""
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", Path(file).stem).strip("_.-")[:64] or "my_data"


def _user_message(e: DataError, file: str | None) -> str:
    """An engine message without the upload's temporary folder in the file's path."""
    msg = str(e)
    if file:
        msg = msg.replace(str(Path(file)), Path(file).name)
    return msg


def _mapping_line(m: ColumnMapping) -> str:
    d = m.describe()
    if m.messages:
        d.update(user=m.user_tag, assistant=m.assistant_tag)
    return ", ".join(f"{k} = `{v}`" for k, v in d.items())


def look_markdown(peek: data_inspect.Peek, upload: bool) -> str:
    """What the grid shows, and how Tunesmith reads it (or that it cannot tell)."""
    shown = min(GRID_ROWS, len(peek.rows))
    name = html.escape(Path(peek.files[0]).name if upload else peek.name)
    head = f"**{name}** · " + tr("{n} rows", n=f"{peek.n_rows:,}") + (
        tr(", the first {k} below", k=shown) if peek.n_rows > shown else "")
    m = peek.mapping
    if m is None:
        return f"{head}\n\n⚠️ " + tr("Tunesmith could not tell the format: none of the usual column names "
                                      "(instruction/output, conversations, messages, text, chosen/rejected) is "
                                      "there. Pick the format and the columns below.")
    if peek.registered:
        return f"{head} · " + tr("registered as **{fmt}**: {cols}", fmt=m.format, cols=_mapping_line(m))
    if upload:
        return f"{head} · " + tr("looks like **{fmt}** ({why}). Check the columns below.", fmt=m.format,
                                 why=html.escape(peek.evidence[0]))
    return f"{head} · " + tr("read as **{fmt}**: {cols}", fmt=m.format, cols=_mapping_line(m))


def look_at_upload(file: str | None) -> tuple[data_inspect.Peek, dict]:
    """(peek, session state) for a dropped file. Raises gr.Error naming the file when it cannot be read."""
    if not file:
        raise gr.Error(tr("Drop a file on the upload box first ({types}).", types=", ".join(UPLOAD_TYPES)),
                       print_exception=False)
    try:
        peek = data_inspect.peek_dataset(file, sample=SAMPLE_ROWS)
    except DataError as e:
        raise gr.Error(_user_message(e, file), print_exception=False) from None
    # The detection with its role names fitted to the file's ("customer"/"agent"): what "auto" registers.
    guess = suggest_mapping(peek.rows, peek.mapping.format, file) if peek.mapping else None
    return peek, {"file": file, "rows": peek.rows, "detected": guess}


def format_hint(fmt: str, state: dict | None) -> str:
    text = tr(FORMAT_HELP[fmt]) if fmt in FORMAT_HELP else ""
    detected = (state or {}).get("detected")
    if fmt == "auto":
        text = (text + " " + tr("It detected **{fmt}**: {cols}.", fmt=detected.format, cols=_mapping_line(detected))
                if detected else tr("Tunesmith could not tell this file's format: pick one."))
    return text


def _updates(form: dict[str, dict], fields=MAP_FIELDS) -> list[dict]:
    return [gr.update(**form[f]) for f in fields]


def show_upload(file: str | None):
    """A dropped file: its grid, the mapping dropdowns pre-filled from the detection, a name."""
    peek, state = look_at_upload(file)
    mapping = state["detected"]
    fmt = mapping.format if mapping else "auto"
    return (
        gr.update(visible=True), look_markdown(peek, upload=True), grid_update(preview_frame(peek)),
        state, gr.update(visible=True), safe_name(file), gr.update(value=fmt, info=format_hint(fmt, state)),
        *_updates(mapping_form(fmt, mapping, peek.rows)),
    )


def change_format(fmt: str, state: dict | None):
    """Another format picked: the dropdowns it needs, pre-filled with the likeliest columns."""
    rows = (state or {}).get("rows") or []
    mapping = suggest_mapping(rows, fmt, (state or {}).get("file")) if fmt in FORMATS and rows else None
    return (gr.update(info=format_hint(fmt, state)), *_updates(mapping_form(fmt, mapping, rows)))


def change_chat_keys(fmt: str, messages: str | None, role_tag: str | None, state: dict | None):
    """The conversation column or role key changed: the keys and role names found under them."""
    rows = (state or {}).get("rows") or []
    if fmt not in ("sharegpt", "openai", "preference") or not rows:
        return [gr.skip()] * len(TAG_FIELDS)
    messages = None if messages in (None, "", NONE) else messages
    m = suggest_mapping(rows, fmt, (state or {}).get("file"), messages=messages, role_tag=role_tag)
    if messages is None:
        m.messages = None
    return _updates(mapping_form(fmt, m, rows), TAG_FIELDS)


def register_upload(file: str | None, name: str, fmt: str, values: dict[str, Any], state: dict | None,
                    selected: list[str] | None, replace: bool = False) -> tuple[Any, list[str]]:
    """Register the dropped file with the chosen format and columns: (entry, new selection).

    Raises gr.Error (the engine's DataError, naming the file) for an unreadable
    file, a bad or taken name, or a mapping under which no row is usable;
    nothing is written then. "auto" registers the detected mapping.
    """
    if not file:
        raise gr.Error(tr("Drop a file on the upload box first ({types}).", types=", ".join(UPLOAD_TYPES)),
                       print_exception=False)
    name = (name or "").strip() or safe_name(file)
    mapping: ColumnMapping | dict[str, str | None] | None
    if fmt in FORMATS:
        mapping = mapping_spec(fmt, values)
    else:
        if (state or {}).get("file") != file:
            state = look_at_upload(file)[1]
        mapping = state["detected"]
        if mapping is None:
            raise gr.Error(tr("{file}: Tunesmith could not tell its format; pick the format and the columns that "
                              "match the file.", file=Path(file).name), print_exception=False)
        fmt = mapping.format
    try:
        entry = engine_data.register_upload(file, name, format=fmt, mapping=mapping, overwrite=replace)
    except DataError as e:
        raise gr.Error(_user_message(e, file), print_exception=False) from None
    return entry, list(dict.fromkeys([*(selected or []), entry.name]))


def look_at_selection(selected: list[str] | None, allowed_roots: list[Path] | None = None):
    """(markdown, frame or None) for the last dataset picked in the list; never raises."""
    if not selected:
        return "", None
    ref = selected[-1]
    try:
        peek = data_inspect.peek_dataset(ref, sample=GRID_ROWS, allowed_roots=allowed_roots)
    except DataError as e:
        return f"**{html.escape(ref)}**: {html.escape(str(e))}", None
    return look_markdown(peek, upload=False), preview_frame(peek)


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
    if d["evidence"][:1] == [f"registered in dataset_info.json as {d['format']}"]:  # examples.load_examples says so
        how = "as registered"
    lines = [f"#### {'✅' if d['ok'] else '⚠️'} {name}",
             tr("**{total} rows**, format **{fmt}** ({how}) · {ok} fine, {errors} with errors, {warnings} with "
                "warnings", total=f"{r['total']:,}", fmt=d["format"], how=tr(how), ok=f"{r['ok']:,}",
                errors=f"{r['with_errors']:,}", warnings=f"{r['with_warnings']:,}")
             + (tr(", {n} skipped", n=f"{r['dropped']:,}") if r["dropped"] else "")]
    ts = d["token_stats"]
    if ts:
        lines.append(tr("Tokens per row: median {median}, longest {longest} (cutoff {cutoff}: {cut} rows cut) · "
                        "{trained} of {total} tokens are trained", median=f"{ts['lengths']['median']:.0f}",
                        longest=f"{ts['lengths']['max']:.0f}", cutoff=ts["cutoff_len"], cut=ts["rows_over_cutoff"],
                        trained=f"{ts['trained_tokens']:,}", total=f"{ts['total_tokens']:,}"))
    if d["estimate"]:
        # The FLOP arithmetic behind the estimate is for the curious: folded away, not in plain view.
        lines.append(tr("Estimated time: {note}", note=data_inspect.estimate_note(report, assumptions=False))
                     + f"\n<details><summary>{tr('How this is estimated')}</summary>"
                     + html.escape(d["estimate"]["assumptions"]) + "</details>")
    lines += [f"- {w}" for w in d["warnings"]]
    if not d["ok"]:
        lines.append(tr("Rows with errors stop training: fix them, or tick **Skip bad rows**."))
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


def free_name(name: str) -> str:
    """`name`, or name_2, name_3 ... : the first that no dataset uses."""
    taken = set(dataset_choices())
    if name not in taken:
        return name
    k = 2
    while f"{name}_{k}" in taken:
        k += 1
    return f"{name}_{k}"


def build_data_tab(ctx: StudioContext) -> DataHandles:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            datasets = ctx.field(
                "data.datasets", gr.Dropdown, choices=dataset_choices(), multiselect=True,
                allow_custom_value=True, label=T("Datasets"), elem_id="datasets",
            )
            about = gr.Markdown(describe_selection(ctx.initial.data.datasets), elem_classes="ts-hint")
            with gr.Row():
                ctx.field("data.val_size", gr.Slider, 0.0, 0.5, step=0.01, label=T("Share held out for checking"))
                ctx.field("data.drop_invalid", gr.Checkbox, label=T("Skip bad rows"))
            with gr.Accordion(T("Advanced data options"), open=False):
                with gr.Row():
                    data_format = ctx.field("data.format", gr.Dropdown, choices=["auto", *FORMATS],
                                            label=T("Layout of the rows (format)"))
                    ctx.field("data.max_samples", gr.Number, precision=0, minimum=0,
                              label=T("Use at most N rows per dataset (0 = all)"))
                ctx.field("data.cutoff_len", gr.Slider, 16, 8192, step=16, label=T("Longest example (tokens)"))
                ctx.field("data.val_file", gr.Textbox, label=T("Separate file to check against (optional)"),
                          placeholder="path/to/val.jsonl")
                with gr.Row():
                    ctx.field("data.train_on_responses_only", gr.Checkbox, label=T("Learn only the replies"))
                    ctx.field("data.packing", gr.Checkbox, label=T("Pack short examples together"))
        with gr.Column(scale=2):
            upload = gr.File(label=T("Add your own dataset"), file_types=UPLOAD_TYPES, elem_id="upload", height=150)
            gr.Markdown(T("Drop a JSON, JSONL, CSV, TSV, Parquet, Excel or text file. You will see its first rows "
                          "and say which columns hold what before it is added to the list."), elem_classes="ts-hint")

    # What the file (or the last picked dataset) holds.
    with gr.Column(elem_id="data-look") as look:
        look_info = gr.Markdown(elem_id="data-look-info", elem_classes="ts-hint")
        grid = gr.Dataframe(label=T("First rows, as in the file"), interactive=False, wrap=True, max_height=320,
                            visible=False, elem_id="data-grid")
    # Which columns hold what, for a dropped file.
    upload_state = gr.State(None)  # {"file", "rows" (a sample), "detected" ColumnMapping | None}
    with gr.Column(visible=False, elem_id="data-mapping") as mapping_box:
        gr.Markdown(T("#### Which columns hold what\nTunesmith filled these in from the file; change what is "
                      "wrong, then register the dataset."))
        with gr.Group():
            with gr.Row():
                map_format = gr.Dropdown(["auto", *FORMATS], value="auto", label=T("Format of this file"),
                                         elem_id="map-format", min_width=220)
                fields = {f: gr.Dropdown(label=f, visible=False, elem_id=f"map-{f.replace('_', '-')}", min_width=180)
                          for f in MAP_FIELDS if f not in TAG_FIELDS}
            with gr.Row():
                fields.update({f: gr.Dropdown(label=f, visible=False, allow_custom_value=f in ("user_tag", "assistant_tag"),
                                              elem_id=f"map-{f.replace('_', '-')}", min_width=180) for f in TAG_FIELDS})
            with gr.Row(equal_height=True):
                upload_name = gr.Textbox(label=T("Name"), placeholder="my_data", scale=3, elem_id="upload-name",
                                         info=T("How the dataset appears in the list: letters, digits, _ - or ."))
                replace = gr.Checkbox(False, label=T("Replace a dataset of this name"), scale=1,
                                      elem_id="upload-replace")
                register = gr.Button(T("Register dataset"), variant="primary", scale=1, elem_id="register-dataset")

    check = gr.Button(T("Check data"), variant="primary", elem_id="check-data")
    summary = gr.Markdown(elem_classes="ts-report", elem_id="data-report")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            histogram = gr.Plot(label=T("Tokens per example"), visible=False, elem_id="data-histogram")
        with gr.Column(scale=1):
            problems = gr.Dataframe(headers=PROBLEM_COLUMNS, label=T("Problems"), visible=False, interactive=False,
                                    wrap=True)
    preview = gr.HTML(elem_classes="ts-preview", elem_id="data-preview")
    field_list = [fields[f] for f in MAP_FIELDS]
    tag_list = [fields[f] for f in TAG_FIELDS]

    def look_selected(selected: list[str] | None, file: str | None):
        if file:  # a dropped file is being mapped: keep showing it
            return gr.skip(), gr.skip(), gr.skip()
        try:  # checked before any read: a path outside gets the same answer whether or not it exists
            ctx.confine.check_dataset((selected or [""])[-1])
        except ConfigError as e:
            return gr.update(visible=True), html.escape(str(e)), grid_update(None)
        text, frame = look_at_selection(selected, ctx.allowed_roots)
        return gr.update(visible=bool(text)), text, grid_update(frame)

    def hide_upload_view():
        return gr.update(visible=False), None, gr.update(visible=False)

    def shown_upload(file: str | None):
        out = show_upload(file)
        # The grid and Register sit below the fold: say so (the page also scrolls there).
        gr.Info(tr("Here is what the file holds. Check the columns below, then press Register dataset."))
        return out

    def register_clicked(file, name, fmt, state, selected, form_format, replace_it, *values):
        name = (name or "").strip() or (safe_name(file) if file else "")
        entry = engine_data.get_dataset(name) if name else None
        if entry is not None and not (replace_it and entry.source == "user"):
            # One clear message and a free name filled in; nothing else on the page changes.
            free = free_name(name)
            if entry.source == "user":
                gr.Warning(tr("The name “{name}” is taken. “{free}” is free and filled in: press Register dataset "
                              "again, or tick Replace to overwrite “{name}”.", name=name, free=free))
            else:
                gr.Warning(tr("“{name}” is a bundled dataset. “{free}” is free and filled in: press Register "
                              "dataset again.", name=name, free=free))
            return (gr.skip(),) * 4 + (gr.skip(), gr.skip(), free, gr.skip())
        entry, value = register_upload(file, name, fmt, dict(zip(MAP_FIELDS, values)), state, selected, replace_it)
        note = ""
        if form_format != "auto":  # a named format overrides the registered columns: go back to auto
            note = " " + tr("Format is set back to auto, so each dataset is read with its own columns.")
        gr.Info(tr("Added dataset “{name}” ({fmt}).", name=entry.name, fmt=entry.format) + note)
        return (gr.update(choices=dataset_choices(), value=value), None, gr.update(visible=False), None, "auto",
                False, "", gr.skip())

    @toast_errors
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
    look_outputs = [look, look_info, grid]
    datasets.change(describe_selection, datasets, about, show_progress="hidden")
    datasets.change(look_selected, [datasets, upload], look_outputs, show_progress="hidden")
    # A new file: hide the old mapping first, so a file that cannot be read leaves nothing stale behind.
    upload.upload(hide_upload_view, None, [mapping_box, upload_state, look], show_progress="hidden").then(
        shown_upload, upload,
        [look, look_info, grid, upload_state, mapping_box, upload_name, map_format, *field_list],
    ).success(None, js="() => document.querySelector('#data-look')?.scrollIntoView({block: 'start'})")
    upload.clear(hide_upload_view, None, [mapping_box, upload_state, look], show_progress="hidden").then(
        look_selected, [datasets, upload], look_outputs, show_progress="hidden")
    map_format.input(change_format, [map_format, upload_state], [map_format, *field_list], show_progress="hidden")
    for trigger in (fields["messages"], fields["role_tag"]):
        trigger.input(change_chat_keys, [map_format, fields["messages"], fields["role_tag"], upload_state], tag_list,
                      show_progress="hidden")
    register.click(
        toast_errors(register_clicked),
        [upload, upload_name, map_format, upload_state, datasets, data_format, replace, *field_list],
        [datasets, upload, mapping_box, upload_state, data_format, replace, upload_name, look],
    )
    check.click(check_data, ctx.config_inputs(), [summary, histogram, problems, preview])
    ctx.demo.load(refresh_datasets, None, datasets, show_progress="hidden").then(
        look_selected, [datasets, upload], look_outputs, show_progress="hidden").then(
        describe_selection, datasets, about, show_progress="hidden")  # in the page's language
    return DataHandles(datasets=datasets, upload=upload, upload_name=upload_name, grid=grid, map_format=map_format,
                       map_fields=fields, register=register, check=check, summary=summary, problems=problems,
                       histogram=histogram, preview=preview)
