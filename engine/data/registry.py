"""Dataset registry: names -> files, in LLaMA-Factory's dataset_info.json format.

Two files are read, the second overriding the first by name:

    data/dataset_info.json                 bundled samples (read-only)
    $TUNESMITH_HOME/dataset_info.json      the user's registrations (uploads, `register_upload`)

An entry looks like LLaMA-Factory's, so people can bring theirs unchanged:

    "my_set": {
      "file_name": "my_set.json",          # relative to the dataset_info.json folder, or absolute
      "hf_hub_url": "owner/name",          # instead of file_name (needs a network)
      "subset": "...", "split": "train",   # for hub datasets
      "formatting": "alpaca" | "sharegpt" | "openai",
      "ranking": true,                      # preference pairs (chosen / rejected)
      "columns": {"prompt": "instruction", "query": "input", "response": "output",
                  "history": ..., "system": ..., "messages": ..., "tools": ...,
                  "chosen": ..., "rejected": ...},
      "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
               "assistant_tag": "gpt", "observation_tag": "observation",
               "function_tag": "function_call", "system_tag": "system"},
      "description": "...", "language": ["en", "zh"]       # Tunesmith extras, optional
    }

LLaMA-Factory keys that change what a dataset means are kept, never dropped:
`columns.kto_tag` (a KTO desirable/undesirable label per row) is stored and
supervised training refuses the dataset (it would learn the undesirable
replies too) until a KTO objective exists; `columns.images` / `videos` /
`audios` (multimodal rows) are refused at import and at training, naming the
column (the `<image>` placeholders must not be trained as text);
`num_samples` draws that many rows (seeded; with repeats past the dataset's
size, as LLaMA-Factory does) whenever the dataset is used for training.

`register_upload(path, name, format=..., mapping=...)` stores a person's
column mapping the same way (`llamafactory_info(mapping)` builds the keys).

An alpaca entry whose only column is `prompt` is raw text for continued
pretraining (LLaMA-Factory's c4_demo convention); `"format": "text"` says so
explicitly.

What it does not know: whether a hub dataset exists (checked when loaded).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import atomic, paths
from ..errors import DataError
from .formats import FORMATS, ColumnMapping

USER_INFO_NAME = "dataset_info.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass
class DatasetEntry:
    """One registered dataset."""

    name: str
    path: str | None  # absolute file or folder path; None for hub datasets
    format: str  # alpaca | sharegpt | openai | text | preference
    description: str = ""
    language: list[str] = field(default_factory=list)
    hub_id: str | None = None
    subset: str | None = None
    split: str = "train"
    mapping: ColumnMapping | None = None  # from columns/tags; None = detect
    source: str = "bundled"  # bundled | user
    kto_tag: str | None = None  # column holding KTO's desirable (true) / undesirable (false) label
    media: dict[str, str] = field(default_factory=dict)  # images/videos/audios -> column (unsupported)
    num_samples: int | None = None  # rows drawn for training (LLaMA-Factory's num_samples)

    def notes(self) -> list[str]:
        """What a person should know about this entry beyond its format (shown by import-info)."""
        out = []
        if self.kto_tag:
            out.append(f"KTO labels in column {self.kto_tag!r} kept (kto_tag); supervised training refuses this "
                       "dataset until the kto objective exists")
        if self.num_samples is not None:
            out.append(f"num_samples {self.num_samples}: training draws that many rows")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": self.path, "format": self.format, "description": self.description,
            "language": list(self.language), "hub_id": self.hub_id, "subset": self.subset,
            "split": self.split, "source": self.source, "kto_tag": self.kto_tag, "media": dict(self.media),
            "num_samples": self.num_samples,
        }


def user_info_path() -> Path:
    return paths.home() / USER_INFO_NAME


def bundled_info_path() -> Path:
    return paths.data_dir() / USER_INFO_NAME


def _read_info(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}). Fix or delete the file to reset the registrations.") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object mapping dataset names to entries, got {type(data).__name__}.")
    return data


def entry_from_info(name: str, info: dict[str, Any], base: Path, source: str) -> DatasetEntry:
    """Build a DatasetEntry from one LLaMA-Factory style dict (`base` = its folder)."""
    if not isinstance(info, dict):
        raise DataError(f"{base / USER_INFO_NAME}: entry {name!r} must be an object with file_name or hf_hub_url.")
    columns = dict(info.get("columns") or {})
    tags = dict(info.get("tags") or {})
    formatting = str(info.get("formatting") or "alpaca").lower()
    fmt = str(info.get("format") or "").lower()
    if not fmt:
        if info.get("ranking"):
            fmt = "preference"
        elif formatting == "alpaca" and set(columns) == {"prompt"}:
            fmt = "text"
        elif formatting in ("sharegpt", "openai"):
            fmt = formatting
        else:
            fmt = "alpaca"
    if fmt not in FORMATS:
        raise DataError(f"dataset_info entry {name!r}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    path = None
    hub = info.get("hf_hub_url")
    if info.get("file_name"):
        p = Path(str(info["file_name"])).expanduser()
        path = str(p if p.is_absolute() else (base / p).resolve())
    elif not hub:
        raise DataError(f"dataset_info entry {name!r}: needs file_name (a file or folder) or hf_hub_url.")
    mapping = None
    if columns or tags:
        mapping = ColumnMapping.from_llamafactory(fmt, formatting, columns, tags)
    lang = info.get("language") or []
    num = info.get("num_samples")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 1):
        raise DataError(f"dataset_info entry {name!r}: num_samples must be a positive whole number, got {num!r}.")
    return DatasetEntry(
        name=name, path=path, format=fmt, description=str(info.get("description") or ""),
        language=[lang] if isinstance(lang, str) else list(lang), hub_id=hub,
        subset=info.get("subset"), split=str(info.get("split") or "train"), mapping=mapping, source=source,
        kto_tag=str(columns["kto_tag"]) if columns.get("kto_tag") else None,
        media={k: str(columns[k]) for k in MEDIA_COLUMNS if columns.get(k)}, num_samples=num,
    )


MEDIA_COLUMNS = ("images", "videos", "audios")


def media_refusal(entry: DatasetEntry) -> str:
    cols = ", ".join(f"{k}: {v!r}" for k, v in entry.media.items())
    return (f"image/video/audio datasets are not supported yet (columns {cols}); training on its text alone "
            "would teach the <image>/<video>/<audio> placeholders as words")


def rows_for_training(entry: DatasetEntry | None, rows: list, seed: int, objective: str = "sft") -> list:
    """The rows a registered dataset gives a training run: refuses media and (for supervised
    objectives) KTO-labelled datasets, and applies num_samples. Raises DataError naming the dataset."""
    if entry is None:
        return rows
    if entry.media:
        raise DataError(f"dataset {entry.name!r}: {media_refusal(entry)}.")
    if entry.kto_tag and objective != "kto" and not all("kto_label" in r for r in rows if isinstance(r, dict)):
        # labels we could not read: supervised training might learn the bad replies as good ones
        raise DataError(f"dataset {entry.name!r} is KTO data (each reply labelled good or bad in column "
                        f"{entry.kto_tag!r}), but its rows' labels could not be read; supervised training would "
                        "learn the bad replies too. Pick objective kto, or check the kto_tag column.")
    if entry.num_samples is not None and rows:
        import random

        rng = random.Random(seed)
        n = entry.num_samples
        idx = rng.sample(range(len(rows)), min(n, len(rows)))
        idx += [rng.randrange(len(rows)) for _ in range(n - len(idx))]  # repeats past the dataset's size
        rows = [rows[i] for i in idx]
    return rows


def list_datasets() -> list[DatasetEntry]:
    """Bundled datasets plus the user's registrations (user entries win on a name clash)."""
    entries: dict[str, DatasetEntry] = {}
    for path, source in ((bundled_info_path(), "bundled"), (user_info_path(), "user")):
        for name, info in _read_info(path).items():
            entries[name] = entry_from_info(name, info, path.parent, source)
    return list(entries.values())


def get_dataset(name: str) -> DatasetEntry | None:
    for e in list_datasets():
        if e.name == name:
            return e
    return None


def _check_name(name: str, overwrite: bool) -> None:
    if not _NAME_RE.match(name):
        raise DataError(
            f"dataset name {name!r}: use letters, digits, '_', '-' or '.', up to 64 characters, starting with a letter or digit."
        )
    if name in _read_info(bundled_info_path()):
        raise DataError(f"dataset name {name!r} is a bundled dataset; pick another name.")
    if name in _read_info(user_info_path()) and not overwrite:
        raise DataError(f"dataset name {name!r} is already registered in {user_info_path()}; pick another name (or replace it: tunesmith data register FILE --name NAME --replace).")


def register_dataset(name: str, info: dict[str, Any], overwrite: bool = False) -> DatasetEntry:
    """Add (or replace) one entry in $TUNESMITH_HOME/dataset_info.json, written atomically."""
    _check_name(name, overwrite)
    path = user_info_path()
    current = _read_info(path)
    entry = entry_from_info(name, info, path.parent, "user")  # validate before writing
    current[name] = info
    atomic.write_text(path, json.dumps(current, ensure_ascii=False, indent=2) + "\n")
    return entry


def import_dataset_info(path: str | Path, overwrite: bool = False,
                        only: list[str] | None = None) -> tuple[list[DatasetEntry], dict[str, str]]:
    """Register every entry (or the names in `only`) of a LLaMA-Factory dataset_info.json,
    unchanged except for absolute paths.

    Relative file_name values are resolved against that file's folder. Returns
    (imported entries, {skipped name: reason}); entries that cannot work here
    (ModelScope or script datasets, image/video/audio datasets, missing files,
    name clashes) are skipped with a reason, and nothing is written unless at
    least one entry imports. Every key of an imported entry is kept (kto_tag,
    num_samples, ...); `entry.notes()` says what they mean here.
    """
    src = Path(path)
    if src.is_dir():
        src = src / USER_INFO_NAME
    if not src.is_file():
        raise DataError(f"{src}: no such file; give the path of a dataset_info.json.")
    infos = _read_info(src)
    if not infos:
        raise DataError(f"{src}: no dataset entries in it.")
    current = _read_info(user_info_path())
    bundled = _read_info(bundled_info_path())
    imported: list[DatasetEntry] = []
    skipped: dict[str, str] = {}
    if only is not None:
        missing = [n for n in only if n not in infos]
        if missing:
            raise DataError(f"{src}: no entries named {', '.join(missing)}.")
        infos = {n: infos[n] for n in only}
    for name, info in infos.items():
        if not isinstance(info, dict):
            skipped[name] = "not an object"
            continue
        media = [k for k in MEDIA_COLUMNS if (info.get("columns") or {}).get(k)]
        if media:
            cols = ", ".join(f"{k}: {info['columns'][k]!r}" for k in media)
            skipped[name] = f"image/video/audio datasets are not supported yet (columns {cols})"
            continue
        if not info.get("file_name") and not info.get("hf_hub_url"):
            skipped[name] = "only file_name and hf_hub_url sources are supported (not ms_hub_url / script_url)"
            continue
        if not _NAME_RE.match(name) or name in bundled or (name in current and not overwrite):
            skipped[name] = "the name is invalid, bundled or already registered"
            continue
        info = dict(info)
        if info.get("file_name"):
            p = Path(str(info["file_name"])).expanduser()
            p = p if p.is_absolute() else (src.parent / p).resolve()
            if not p.exists():
                skipped[name] = f"{p} does not exist"
                continue
            info["file_name"] = str(p)
        try:
            imported.append(entry_from_info(name, info, src.parent, "user"))
        except DataError as e:
            skipped[name] = str(e)
            continue
        current[name] = info
    if imported:
        atomic.write_text(user_info_path(), json.dumps(current, ensure_ascii=False, indent=2) + "\n")
    return imported, skipped


def llamafactory_info(mapping: ColumnMapping) -> dict[str, Any]:
    """`formatting`, `columns`, `tags` (and `ranking`) of a dataset_info.json entry for `mapping`.

    LLaMA-Factory reads chat lists as "sharegpt" with tags naming the keys, so an
    OpenAI-style file is stored as formatting "sharegpt" with role/content tags;
    `format` (a Tunesmith extra) keeps the name Tunesmith uses.
    """
    info: dict[str, Any] = {
        "format": mapping.format,
        "formatting": "sharegpt" if mapping.messages and mapping.format != "text" else "alpaca",
        "columns": mapping.to_columns(),
    }
    if mapping.format == "preference":
        info["ranking"] = True
    if mapping.messages and mapping.format != "text":
        m = mapping
        info["tags"] = {"role_tag": m.role_tag, "content_tag": m.content_tag, "user_tag": m.user_tag,
                        "assistant_tag": m.assistant_tag, "system_tag": m.system_tag,
                        "observation_tag": m.observation_tag, "function_tag": m.function_tag}
    return info


def _refuse_unusable(src: Path, loaded, mapping: ColumnMapping) -> None:
    """DataError when no row of `loaded` is usable with `mapping` (a wrong mapping), naming the first problems."""
    from .examples import check_rows
    from .formats import Detection

    es = check_rows(str(src), src.name, loaded, Detection(mapping.format, mapping, overridden=True))
    if any(ex is not None for ex in es.examples):
        return
    shown = "; ".join(f"{Path(p.file).name} {'line' if p.line else 'row'} {p.row}: {p.message}"
                      for p in es.problems[:3])
    cols = ", ".join(f"{k}={v}" for k, v in mapping.describe().items())
    raise DataError(f"{src.name}: read as {mapping.format} ({cols}), none of its {es.n_rows} rows is usable "
                    f"({shown}). Pick the format and the columns that match the file.")


def register_upload(path: str | Path, name: str, overwrite: bool = False, format: str | None = None,
                    mapping: ColumnMapping | dict | str | None = None) -> DatasetEntry:
    """Copy an uploaded file into $TUNESMITH_HOME/uploads/<name>/ and register it.

    The file is read and its format detected first; a file that cannot be
    read (0 bytes, bad encoding, not JSON, ...) raises DataError and nothing is
    copied or registered. Rows with problems do not stop registration: the
    check report lists them and training refuses them until the user agrees.

    `format` (None/"auto" = detect) and `mapping` (a ColumnMapping, or a
    {field: column} override of the format's defaults as in ColumnMapping.parse)
    store the person's choice instead of the detection, as LLaMA-Factory
    `formatting` / `columns` / `tags`. A chosen mapping under which no row at
    all is usable is refused (DataError naming the file and the first rows'
    problems) and nothing is written.
    """
    from .formats import detect_format
    from .readers import read_source

    src = Path(path)
    if not src.is_file():
        raise DataError(f"upload {src}: no such file.")
    _check_name(name, overwrite)
    loaded = read_source(src)  # raises on unreadable files
    fmt = None if format in (None, "", "auto") else format
    chosen: ColumnMapping | None = None
    if isinstance(mapping, ColumnMapping):
        if mapping.format not in FORMATS:
            raise DataError(f"unknown format {mapping.format!r}; use one of: auto, {', '.join(FORMATS)}.")
        chosen = dataclasses.replace(mapping)  # pruned below: leave the caller's alone
    elif mapping is not None or fmt is not None:
        chosen = ColumnMapping.parse(fmt or detect_format(loaded.rows, path_hint=src).format, mapping)
    if chosen is not None:
        present = {k for row in loaded.rows[:2000] if isinstance(row, dict) for k in row}
        for col in ("query", "system", "history", "tools"):  # the format's optional defaults the file lacks
            if getattr(chosen, col) and getattr(chosen, col) not in present:
                setattr(chosen, col, None)
        _refuse_unusable(src, loaded, chosen)
        detected = chosen
    else:
        detected = detect_format(loaded.rows, path_hint=src).mapping
    dest_dir = paths.uploads_dir() / name
    with atomic.atomic_dir(dest_dir, overwrite=True) as tmp:
        shutil.copyfile(src, tmp / src.name)
    info: dict[str, Any] = {"file_name": str(dest_dir / src.name), **llamafactory_info(detected),
                            "description": f"Uploaded {src.name}"}
    try:
        return register_dataset(name, info, overwrite=True)
    except BaseException:
        shutil.rmtree(dest_dir, ignore_errors=True)
        raise
