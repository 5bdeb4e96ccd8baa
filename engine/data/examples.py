"""From a dataset reference to checked examples: resolve, read, detect, normalise, validate.

    ex = load_examples("identity")                 # a registered name
    ex = load_examples("/path/chats.jsonl", format="sharegpt", mapping="messages=dialog")
    ex.examples      # normalised example dicts of the usable rows (formats.py)
    ex.problems      # Problem(file, row, line, kind, severity, message) for rows with problems

Both training (prepare.py) and the check report (inspect.py) start here, so a
row the report flags is the row training refuses. Nothing is dropped here:
`usable(drop_invalid)` decides, and refuses with a DataError listing the first
problems when the caller has not agreed to drop them.

What it does not know: tokens (tokenize.py) and the allowed folders of the
studio (inspect_dataset takes `allowed_roots`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .formats import (
    FORMATS,
    PROBLEM_KINDS,
    _UNPARSED,
    ColumnMapping,
    Detection,
    RowProblem,
    detect_format,
    guess_row,
    normalize_row,
)
from .bounds import MAX_ROW_CHARS, row_chars
from .readers import Loaded, read_source
from .registry import DatasetEntry, list_datasets

try:
    import orjson

    def _key(ex: dict) -> int:
        return hash(orjson.dumps(ex, option=orjson.OPT_SORT_KEYS))
except ImportError:  # pragma: no cover
    import json

    def _key(ex: dict) -> int:
        return hash(json.dumps(ex, sort_keys=True, ensure_ascii=False))


@dataclass
class Problem:
    """One problem on one row. `row` is the 1-based row number, or the JSONL line number when `line` is True."""

    file: str
    row: int
    kind: str
    message: str
    line: bool = False
    severity: str = "error"

    def where(self) -> str:
        return f"{Path(self.file).name} {'line' if self.line else 'row'} {self.row}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "row": self.row, "line_number": self.line, "kind": self.kind,
                "severity": self.severity, "message": self.message}


@dataclass
class ExampleSet:
    """The checked rows of one dataset reference."""

    ref: str  # what the user gave
    name: str  # registry name or file name
    loaded: Loaded
    detection: Detection
    examples: list[dict | None]  # per row: the example, or None when the row has an error
    problems: list[Problem] = field(default_factory=list)
    problem_rows: dict[int, list[Problem]] = field(default_factory=dict)  # row index -> its problems

    @property
    def format(self) -> str:
        return self.detection.format

    @property
    def n_rows(self) -> int:
        return len(self.examples)

    def error_rows(self) -> list[int]:
        return [i for i, ps in self.problem_rows.items() if any(p.severity == "error" for p in ps)]

    def usable(self, drop_invalid: bool = False, drop_duplicates: bool = False) -> list[dict]:
        """The examples to train on. Rows with errors stop it unless drop_invalid (never a silent drop)."""
        errors = [p for p in self.problems if p.severity == "error"]
        if errors and not drop_invalid:
            shown = "\n  ".join(f"{p.where()}: {p.kind}: {p.message}" for p in errors[:10])
            more = f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else ""
            raise DataError(
                f"dataset {self.name!r}: {len(errors)} of {self.n_rows} rows have problems:\n  {shown}{more}\n"
                "Fix them, or agree to skip them (data.drop_invalid: true, or --drop-invalid; "
                f"`tunesmith data inspect {self.ref}` shows them all)."
            )
        drop = {i for i, ps in self.problem_rows.items()
                if any(p.severity == "error" or (drop_duplicates and p.kind == "duplicate_row") for p in ps)}
        out = [ex for i, ex in enumerate(self.examples) if ex is not None and i not in drop]
        if not out:
            raise DataError(f"dataset {self.name!r}: no usable rows left ({self.n_rows} rows, all with problems). "
                            f"Run `tunesmith data inspect {self.ref}` to see why.")
        return out


def resolve_ref(ref: str) -> tuple[str, str | None, DatasetEntry | None]:
    """(display name, path-or-hub-id, registry entry) for a dataset name, file path or hub id."""
    entries = {e.name: e for e in list_datasets()}
    if ref in entries:
        e = entries[ref]
        return e.name, e.path or e.hub_id, e
    p = Path(ref).expanduser()
    if p.exists():
        return p.name, str(p), None
    from .readers import is_hub_id

    looks_like_path = ref.startswith((".", "/", "~")) or Path(ref).suffix.lower() in (
        ".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".xlsx") or "\\" in ref
    if is_hub_id(ref) and not looks_like_path:
        return ref, ref, None
    if looks_like_path:
        raise DataError(f"dataset {ref!r}: no such file or folder. Check the path (relative paths start from "
                        f"{Path.cwd()}).")
    raise DataError(f"dataset {ref!r}: not a registered dataset name, a file or a hub id. Registered: "
                    f"{', '.join(sorted(entries)) or '(none)'}. Give one of those or a file path.")


def load_examples(ref: str, format: str | None = None, mapping: ColumnMapping | dict | str | None = None,
                  max_rows: int | None = None) -> ExampleSet:
    """Read one dataset reference and check every row. Raises DataError for unreadable sources.

    `format` (None/"auto" = detect, or from the registry) and `mapping` override
    the detection. `max_rows` stops after that many rows (quick trials).
    """
    name, src, entry = resolve_ref(ref)
    if entry is not None and entry.path is None:
        loaded = read_source(entry.hub_id or ref, entry.subset, entry.split)
    else:
        loaded = read_source(src)
    if max_rows is not None and max_rows < len(loaded.rows):
        loaded.rows = loaded.rows[:max_rows]
        loaded.numbers = loaded.numbers[:max_rows]
        if loaded.file_index is not None:
            loaded.file_index = loaded.file_index[:max_rows]
        loaded.parse_errors = {k: v for k, v in loaded.parse_errors.items() if k < max_rows}
    fmt = None if format in (None, "", "auto") else format
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"format {fmt!r}: unknown; use auto or one of {', '.join(FORMATS)}.")
    if mapping is not None and not isinstance(mapping, ColumnMapping):
        if fmt is None:
            fmt = detect_format(loaded.rows, loaded.files[0]).format
        mapping = ColumnMapping.parse(fmt, mapping)
    if mapping is None and fmt is not None and entry is not None and entry.mapping is not None and entry.format == fmt:
        mapping = entry.mapping  # naming the format a dataset is registered with keeps its columns
    if mapping is not None:
        _prune_optional(mapping, loaded.rows)
        detection = Detection(mapping.format, mapping, [f"column mapping given: {mapping.describe()}"], overridden=True)
    elif fmt is not None:
        # A named format: take the detected keys when the rows agree, else that format's defaults.
        try:
            auto = detect_format(loaded.rows, loaded.files[0])
        except DataError:
            auto = None
        if auto is not None and auto.format == fmt:
            detection = Detection(fmt, auto.mapping, [f"format {fmt} given; " + auto.evidence[0]], auto.row_formats, True)
        else:
            from .formats import default_mapping

            m = _prune_optional(default_mapping(fmt), loaded.rows)
            detection = Detection(fmt, m, [f"format {fmt} given; default keys"], overridden=True)
    elif entry is not None and entry.mapping is not None:
        detection = Detection(entry.format, entry.mapping, [f"registered in dataset_info.json as {entry.format}"])
    else:
        detection = detect_format(loaded.rows, loaded.files[0])
        if entry is not None and entry.format != detection.format and entry.format in FORMATS:
            detection.evidence.append(f"registry says {entry.format}; the rows say {detection.format}")
    return check_rows(ref, name, loaded, detection)


def _prune_optional(mapping: ColumnMapping, rows: list, sample: int = 2000) -> ColumnMapping:
    """Forget optional columns (input, system, history, tools) that no sampled row has, so reports stay truthful."""
    keys: set[str] = set()
    for row in rows[:sample]:
        if isinstance(row, dict):
            keys.update(row.keys())
    for col in ("query", "system", "history", "tools"):
        if getattr(mapping, col) and getattr(mapping, col) not in keys:
            setattr(mapping, col, None)
    return mapping


def check_rows(ref: str, name: str, loaded: Loaded, detection: Detection) -> ExampleSet:
    mapping = detection.mapping
    examples: list[dict | None] = []
    out = ExampleSet(ref=ref, name=name, loaded=loaded, detection=detection, examples=examples)
    seen: dict[int, int] = {}
    parse_errors = loaded.parse_errors

    def add(i: int, kind: str, message: str) -> None:
        f, num, is_line = loaded.where(i)
        p = Problem(f, num, kind, message, is_line, PROBLEM_KINDS[kind])
        out.problems.append(p)
        out.problem_rows.setdefault(i, []).append(p)

    roles = mapping.roles()
    for i, row in enumerate(loaded.rows):
        if row is _UNPARSED:
            f = loaded.where(i)[0]
            kind = "malformed_record" if f.lower().endswith((".csv", ".tsv")) else "invalid_json"
            add(i, kind, parse_errors.get(i, "the row could not be parsed"))
            examples.append(None)
            continue
        try:
            ex = normalize_row(row, mapping, roles)
        except RowProblem as e:
            kind, msg = e.kind, e.message
            if kind == "missing_field" and not detection.overridden:
                g = guess_row(row)
                if g is not None and g[0] != detection.format:
                    kind, msg = "mixed_format", f"this row is in {g[0]} format ({g[2]}); the file is {detection.format}"
            add(i, kind, msg)
            examples.append(None)
            continue
        size = row_chars(ex)
        if size > MAX_ROW_CHARS:
            add(i, "row_too_large", f"{size:,} characters in one row (at most {MAX_ROW_CHARS:,}); an example is "
                "trained on its first data.cutoff_len tokens only, so split this text into several rows")
            examples.append(None)
            continue
        k = _key(ex)
        first = seen.setdefault(k, i)
        if first != i:
            _, num, is_line = loaded.where(first)
            add(i, "duplicate_row", f"same example as {'line' if is_line else 'row'} {num}")
        examples.append(ex)
    return out
