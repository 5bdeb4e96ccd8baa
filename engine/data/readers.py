"""Read dataset files into rows: file types, encodings, folders and hub datasets.

    loaded = read_source("my.jsonl")     # -> Loaded(rows, numbers, parse_errors, ...)

File types: .json (an array of rows, or an object whose values are arrays of
rows, e.g. {"train": [...]}; a .json file holding JSON Lines is read as such),
.jsonl, .csv, .tsv, .parquet, .txt (one example per non-empty line), .xlsx
(first sheet, first row = header); a folder of such files (read in name
order); a Hugging Face dataset id `owner/name[:subset][@split]` when a
network is there.

Encodings: UTF-8 with or without BOM, UTF-16/32 with a BOM (or UTF-16 without
one, recognised by its zero bytes), and legacy single/double-byte encodings
(GBK/GB18030, Big5, Shift-JIS, Latin-1/CP1252, ...) recognised with
charset-normalizer and confirmed by a strict decode of the whole file. A file
that is none of those is refused with a DataError naming it and the fix
(re-save as UTF-8). The encoding used is recorded in `Loaded.encodings`.

Rows keep their position: `numbers[i]` is the JSONL line number (for .jsonl)
or the 1-based row number (every other type), so reports can point at them.
A JSONL line or CSV record that does not parse is kept as a placeholder with
its reason in `parse_errors`; a .json file that does not parse at all (e.g.
truncated) raises DataError with line and column, since no row is trustworthy.

What it does not know: the dataset format (formats.detect_format does that).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from .formats import _UNPARSED

try:  # orjson is ~4x faster on big JSONL; the stdlib parser is the fallback.
    import orjson

    _loads = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover
    orjson = None
    _loads = json.loads
    _JSONError = (json.JSONDecodeError, ValueError)

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".xlsx")
HUB_ID_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.\-]*/[\w.\-]+)(?::(?P<subset>[\w.\-]+))?(?:@(?P<split>[\w.\-\[\]:%]+))?$")

# Legacy encodings we accept when charset-normalizer proposes them (Python codec names).
_LEGACY_OK = (
    "gb18030", "gbk", "gb2312", "big5", "big5hkscs", "shift_jis", "cp932", "euc_jp", "euc_kr", "cp949",
    "cp1252", "latin_1", "iso8859_15", "cp1250", "cp1251", "iso8859_2", "iso8859_5", "koi8_r", "mac_roman",
)


@dataclass
class Loaded:
    """Rows read from one source (a file, a folder of files, or a hub dataset)."""

    source: str  # what the user gave (path or hub id)
    files: list[str]  # the files read, in order
    rows: list[Any]  # parsed rows; formats._UNPARSED where a line did not parse
    numbers: list[int]  # JSONL line number or 1-based row number, per row
    file_index: list[int] | None = None  # per row: index into `files` (None = all from files[0])
    parse_errors: dict[int, str] = field(default_factory=dict)  # row index -> reason
    line_numbered: list[bool] = field(default_factory=list)  # per file: numbers are JSONL lines
    encodings: dict[str, str] = field(default_factory=dict)  # file -> encoding used
    size_bytes: int = 0

    def where(self, i: int) -> tuple[str, int, bool]:
        """(file, number, is_line_number) of row index i."""
        f = self.file_index[i] if self.file_index is not None else 0
        return self.files[f], self.numbers[i], self.line_numbered[f] if self.line_numbered else False


# ---------------------------------------------------------------------------
# Encodings


def decode_bytes(raw: bytes, name: str) -> tuple[str, str]:
    """(text, encoding) for the bytes of file `name`; DataError if the encoding is unknown."""
    boms = (
        (b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
        (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
    )
    for bom, enc in boms:
        if raw.startswith(bom):
            try:
                return raw[len(bom):].decode(enc.replace("-sig", "")), enc
            except UnicodeDecodeError as e:
                raise DataError(f"{name}: starts with a {enc} byte-order mark but is not valid {enc} at byte "
                                f"{e.start}. Re-save it as UTF-8.") from None
    head = raw[:4096]
    if len(head) >= 4 and head.count(b"\x00") > len(head) // 4:
        # UTF-16 without a BOM (checked first: its ASCII part is also valid UTF-8, full of NULs)
        enc = "utf-16-le" if head[1::2].count(b"\x00") > head[0::2].count(b"\x00") else "utf-16-be"
        try:
            return raw.decode(enc), enc
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as e:
        utf8_error = e
    guess = _guess_legacy(raw)
    if guess:
        try:
            return raw.decode(guess), guess
        except UnicodeDecodeError:
            pass
    raise DataError(
        f"{name}: not UTF-8 (invalid byte 0x{raw[utf8_error.start]:02x} at offset {utf8_error.start}) and the "
        "encoding could not be recognised. Re-save the file as UTF-8 (most editors and Excel offer "
        "'Save as ... UTF-8') and try again."
    )


def _guess_legacy(raw: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - a dependency of requests/datasets
        from_bytes = None
    sample = raw[: 256 * 1024]
    if from_bytes is not None:
        best = from_bytes(sample).best()
        if best is not None:
            enc = best.encoding.replace("-", "_").lower()
            if enc in _LEGACY_OK and best.chaos < 0.3:
                # GBK is a subset of GB18030; decoding with the superset never loses a character.
                return "gb18030" if enc in ("gbk", "gb2312") else enc
    for enc in ("gb18030", "cp1252"):  # no charset-normalizer verdict: the two commonest cases
        try:
            text = sample.decode(enc)
        except UnicodeDecodeError:
            continue
        non_ascii = [c for c in text if ord(c) > 127]
        if enc == "gb18030" and non_ascii and sum("\u4e00" <= c <= "\u9fff" for c in non_ascii) > 0.9 * len(non_ascii):
            return enc
        if enc == "cp1252" and all(c.isalpha() or c in "–—‘’“”…€£©®°±·«»" for c in non_ascii):
            return enc
    return None


# ---------------------------------------------------------------------------
# Sources


def is_hub_id(s: str) -> bool:
    """owner/name[:subset][@split] that is not a local path or a file name."""
    if s.startswith((".", "/", "~")) or Path(s).suffix.lower() in SUPPORTED_SUFFIXES:
        return False
    return bool(HUB_ID_RE.match(s)) and not Path(s).exists()


def read_source(source: str | Path, subset: str | None = None, split: str | None = None) -> Loaded:
    """Read a file, a folder of files or a hub dataset id into rows."""
    p = Path(str(source)).expanduser()
    if p.is_dir():
        return _read_folder(p)
    if p.is_file():
        return _read_files([p], str(source))
    s = str(source)
    if is_hub_id(s):
        return _read_hub(s, subset, split)
    raise DataError(f"{source}: no such file or folder. Check the path, or give a bundled dataset name "
                    "(tunesmith data list) or a hub id like owner/name.")


def _read_folder(folder: Path) -> Loaded:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in SUPPORTED_SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(folder).parts))
    if not files:
        raise DataError(f"{folder}: the folder holds no dataset files ({', '.join(SUPPORTED_SUFFIXES)}).")
    return _read_files(files, str(folder))


def _read_files(files: list[Path], source: str) -> Loaded:
    out = Loaded(source=source, files=[], rows=[], numbers=[], file_index=[] if len(files) > 1 else None)
    for fi, f in enumerate(files):
        start = len(out.rows)
        rows, numbers, errors, line_numbered, enc = read_file(f)
        out.files.append(str(f))
        out.line_numbered.append(line_numbered)
        out.rows.extend(rows)
        out.numbers.extend(numbers)
        out.parse_errors.update({start + k: v for k, v in errors.items()})
        if out.file_index is not None:
            out.file_index.extend([fi] * len(rows))
        if enc:
            out.encodings[str(f)] = enc
        out.size_bytes += f.stat().st_size
    if not out.rows:
        raise DataError(f"{source}: no rows found. The file holds no examples; check that it is the right file.")
    return out


def read_file(path: Path) -> tuple[list, list[int], dict[int, str], bool, str | None]:
    """(rows, numbers, parse_errors, numbers_are_lines, encoding) for one file."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(SUPPORTED_SUFFIXES)}.")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes). Upload or point to the file that holds the data.")
    if suffix == ".parquet":
        return _read_parquet(path) + (False, None)
    if suffix == ".xlsx":
        return _read_xlsx(path) + (False, None)
    raw = path.read_bytes()
    text, enc = decode_bytes(raw, str(path))
    if not text.strip():
        raise DataError(f"{path}: the file holds only whitespace; no rows to read.")
    if suffix == ".jsonl":
        return _read_jsonl(text) + (True, enc)
    if suffix == ".json":
        return _read_json(text, path) + (enc,)
    if suffix in (".csv", ".tsv"):
        return _read_csv(text, "\t" if suffix == ".tsv" else ",", path) + (False, enc)
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]  # .txt
    return [{"text": ln} for _, ln in lines], [i for i, _ in lines], {}, True, enc


def _read_jsonl(text: str) -> tuple[list, list[int], dict[int, str]]:
    rows: list = []
    numbers: list[int] = []
    errors: dict[int, str] = {}
    for n, line in enumerate(text.split("\n"), 1):
        if not line or line.isspace():
            continue
        try:
            rows.append(_loads(line))
        except _JSONError as e:
            errors[len(rows)] = f"line is not valid JSON ({_json_reason(e)})"
            rows.append(_UNPARSED)
        numbers.append(n)
    return rows, numbers, errors


def _json_reason(e: Exception) -> str:
    msg = str(e).split(": line")[0]
    return msg[:120]


def _read_json(text: str, path: Path) -> tuple[list, list[int], dict[int, str], bool]:
    try:
        data = _loads(text)
    except _JSONError as e:
        stripped = text.lstrip()
        first = stripped.split("\n", 1)[0]
        if stripped.startswith("{") and "\n" in stripped.strip():
            try:  # JSON Lines saved as .json
                _loads(first)
                rows, numbers, errors = _read_jsonl(text)
                return rows, numbers, errors, True
            except _JSONError:
                pass
        line, col = _position(e, text)
        hint = "the file looks truncated (it ends too early); re-export or re-download it" if _truncated(text) else \
            "fix the JSON there (a missing comma, quote or bracket is typical)"
        raise DataError(f"{path}: not valid JSON at line {line}, column {col}: {_json_reason(e)}. {hint.capitalize()}.") from None
    if isinstance(data, list):
        return data, list(range(1, len(data) + 1)), {}, False
    if isinstance(data, dict):
        arrays = [v for v in data.values() if isinstance(v, list)]
        if arrays and len(arrays) == len(data) and all(all(isinstance(r, dict) for r in a[:50]) for a in arrays):
            rows = [r for a in arrays for r in a]  # {"train": [...], "test": [...]}
            return rows, list(range(1, len(rows) + 1)), {}, False
        return [data], [1], {}, False  # a single example
    raise DataError(f"{path}: the JSON holds a {type(data).__name__}; expected an array of rows (objects).")


def _truncated(text: str) -> bool:
    t = text.rstrip()
    return not t.endswith(("]", "}"))


def _position(e: Exception, text: str) -> tuple[int, int]:
    m = re.search(r"line (\d+) column (\d+)", str(e))
    if m:
        return int(m.group(1)), int(m.group(2))
    pos = getattr(e, "pos", None)
    if pos is None:
        m = re.search(r"char (\d+)", str(e))
        pos = int(m.group(1)) if m else len(text)
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _read_csv(text: str, sep: str, path: Path) -> tuple[list, list[int], dict[int, str]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: no header row.") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable {sep!r}-separated file ({e}).") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(f"{path}: the first row (the header) is empty; it must name the columns.")
    dupes = {h for h in header if header.count(h) > 1 and h}
    if dupes:
        raise DataError(f"{path}: the header names {', '.join(sorted(dupes))} more than once; column names must be unique.")
    rows: list = []
    numbers: list[int] = []
    errors: dict[int, str] = {}
    n = 0
    while True:
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(f"{path}: cannot read the record at line {reader.line_num}: {e}. Check its quotes.") from None
        if not rec or all(not c.strip() for c in rec):
            continue
        n += 1
        if len(rec) != len(header):
            errors[len(rows)] = f"has {len(rec)} fields but the header has {len(header)} (a stray separator or quote?)"
            rows.append(_UNPARSED)
        else:
            rows.append(dict(zip(header, rec)))
        numbers.append(n)
    return rows, numbers, errors


def _cell(v: Any) -> Any:
    # Spreadsheet cells: numbers and dates become text, since a user cannot "quote" them in Excel.
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v if isinstance(v, str) else str(v)


def _read_xlsx(path: Path) -> tuple[list, list[int], dict[int, str]]:
    try:
        import openpyxl
    except ImportError:  # pragma: no cover
        raise DataError(f"{path}: reading .xlsx needs openpyxl (pip install openpyxl), or save the sheet as CSV.") from None
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # zipfile.BadZipFile, KeyError, InvalidFileException ...
        raise DataError(f"{path}: not a readable .xlsx workbook ({type(e).__name__}: {e}). Re-save it from Excel.") from None
    try:
        it = wb.worksheets[0].iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(it, ())]
        while header and not header[-1]:
            header.pop()
        if not header:
            raise DataError(f"{path}: the first sheet has no header row naming the columns.")
        rows, numbers = [], []
        for n, rec in enumerate(it, 1):
            vals = list(rec[: len(header)])
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in vals):
                continue
            vals += [None] * (len(header) - len(vals))
            rows.append({h: _cell(v) for h, v in zip(header, vals) if h})
            numbers.append(n)
        return rows, numbers, {}
    finally:
        wb.close()


def _read_parquet(path: Path) -> tuple[list, list[int], dict[int, str]]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow.ArrowInvalid and friends
        raise DataError(f"{path}: not a readable Parquet file ({e}).") from None
    return rows, list(range(1, len(rows) + 1)), {}


def _read_hub(hub_id: str, subset: str | None, split: str | None) -> Loaded:
    m = HUB_ID_RE.match(hub_id)
    assert m
    repo, subset = m.group("repo"), subset or m.group("subset")
    split = split or m.group("split") or "train"
    try:
        import datasets

        ds = datasets.load_dataset(repo, subset, split=split)
    except Exception as e:  # offline, unknown id, gated, bad split ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{hub_id}: could not load the Hugging Face dataset ({msg}). It needs a network and a correct id "
            "(owner/name[:subset][@split]); offline, download it and give the file path instead."
        ) from None
    rows = ds.to_list()
    if not rows:
        raise DataError(f"{hub_id}: split {split!r} has no rows.")
    return Loaded(source=hub_id, files=[f"hf://{repo}" + (f":{subset}" if subset else "") + f"@{split}"], rows=rows,
                  numbers=list(range(1, len(rows) + 1)), line_numbered=[False])
