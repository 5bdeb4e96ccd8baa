"""Zip an export folder for download, without reading it into memory.

    zip_folder(Path("exports/RUN/adapter"))   # -> exports/RUN/adapter.zip

The zip is written next to the folder under a temporary name and renamed, so a
download never gets half an archive; an archive newer than every file in its
folder is reused. Files are stored, not compressed: model weights do not
compress, and storing streams a multi-GB folder at disk speed.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path


def _newest_mtime(folder: Path) -> float:
    return max((f.stat().st_mtime for f in folder.rglob("*") if f.is_file()), default=0.0)


def zip_folder(folder: Path, dest: Path | None = None) -> Path:
    """`folder` as FOLDER.zip (or `dest`); its entries are relative to the folder's parent, so it unzips
    to one folder named like the original."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    dest = Path(dest) if dest else folder.with_name(folder.name + ".zip")
    if dest.exists() and dest.stat().st_mtime >= _newest_mtime(folder):
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    zf.write(f, arcname=str(Path(folder.name) / f.relative_to(folder)))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
