"""Which files the studio may read and write on behalf of a browser.

    confine = Confinement.from_env(allow_dirs=["~/datasets"])   # + $TUNESMITH_ALLOW_DIRS
    confine.check_config(cfg)          # every path in a RunConfig built from the form
    confine.check_dataset("/etc/passwd")   -> PathNotAllowed naming the path and the fix
    confine.output_dir("~/exports/x")      -> the folder, or PathNotAllowed

Anyone who can reach the studio's API (a browser tab, a script, another user
of a shared machine) can send it any string where a dataset, a model folder or
an output folder goes. The CLI reads any path its user names; the studio reads
only from:

- datasets: the uploads folder ($TUNESMITH_HOME/uploads), the bundled data,
  registered dataset names (registering is an explicit act at the CLI or an
  upload), hub ids, and the folders the person allowed (`tunesmith webui
  --allow-dir DIR`, or TUNESMITH_ALLOW_DIRS, separated by the OS path
  separator);
- model folders: the embedded demo model, runs and exports under
  $TUNESMITH_HOME, hub ids, and the allowed folders;
- output folders (Export): $TUNESMITH_HOME/exports and the allowed folders.

TUNESMITH_HOME itself is not readable as data: it holds the run registry and,
in Docker, the login's hash. Paths are resolved (symlinks, `..`, `~`) before
the check, and a path outside is refused the same way whether or not it
exists, so the studio is no oracle for which files exist.

What it does not know: what a hub id downloads; hub ids are not local files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.engine import paths
from tunesmith.engine.config import DEMO_MODEL, RunConfig
from tunesmith.engine.errors import ConfigError

ALLOW_DIRS_ENV = "TUNESMITH_ALLOW_DIRS"
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".tsv", ".parquet", ".txt", ".xlsx")


class PathNotAllowed(ConfigError):
    """A path from the browser lies outside the folders the studio may use."""


def _resolve(p: str | Path) -> Path:
    # strict=False: a path that does not exist is judged by where it would be.
    return Path(os.path.expanduser(str(p))).resolve(strict=False)


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def env_allow_dirs() -> list[str]:
    return [d for d in os.environ.get(ALLOW_DIRS_ENV, "").split(os.pathsep) if d.strip()]


def _looks_like_path(ref: str) -> bool:
    """A reference meant as a local path (as opposed to a name or a hub id owner/name)."""
    return (ref.startswith(("/", ".", "~")) or "\\" in ref or ref.count("/") > 1
            or Path(ref).suffix.lower() in DATA_SUFFIXES or Path(os.path.expanduser(ref)).exists())


@dataclass
class Confinement:
    """The folders the studio may use; see the module docstring."""

    allow_dirs: list[Path] = field(default_factory=list)

    @classmethod
    def from_env(cls, allow_dirs: list[str] | None = None) -> "Confinement":
        """`allow_dirs` (from --allow-dir) plus $TUNESMITH_ALLOW_DIRS. Raises ConfigError for a
        folder that does not exist (a typo would otherwise silently allow nothing)."""
        dirs = []
        for d in [*(allow_dirs or []), *env_allow_dirs()]:
            p = _resolve(d)
            if not p.is_dir():
                raise ConfigError(f"--allow-dir / {ALLOW_DIRS_ENV}: {d} is not a folder.")
            if p == Path(p.anchor):
                raise ConfigError(f"--allow-dir / {ALLOW_DIRS_ENV}: {d} is the whole file system; "
                                  "allow the folders that hold your data instead.")
            dirs.append(p)
        return cls(list(dict.fromkeys(dirs)))

    # ---- the roots ---------------------------------------------------------------------

    def data_roots(self) -> list[Path]:
        return [_resolve(paths.uploads_dir()), _resolve(paths.data_dir()), *self.allow_dirs]

    def model_roots(self) -> list[Path]:
        return [_resolve(paths.demo_model_dir()), _resolve(paths.runs_dir()), _resolve(paths.exports_dir()),
                *self.allow_dirs]

    def output_roots(self) -> list[Path]:
        return [_resolve(paths.exports_dir()), *self.allow_dirs]

    # ---- checks --------------------------------------------------------------------------

    def _refuse(self, what: str, ref: str, roots: list[Path]) -> PathNotAllowed:
        folder = _resolve(ref)
        folder = folder if folder.is_dir() else folder.parent
        return PathNotAllowed(
            f"{what}: the studio may not use {ref} (it may use {', '.join(map(str, roots))}). "
            f"To allow it, start the studio with --allow-dir {folder} (or set {ALLOW_DIRS_ENV}); "
            "the tunesmith CLI reads any path.")

    def check_dataset(self, ref: str, what: str = "data.datasets") -> None:
        """Registered names and hub ids pass; a path must lie in a data root."""
        from tunesmith.engine.data import list_datasets

        ref = (ref or "").strip()
        if not ref or ref in {e.name for e in list_datasets()} or not _looks_like_path(ref):
            return
        if not _inside(_resolve(ref), self.data_roots()):
            raise self._refuse(what, ref, self.data_roots())

    def check_model(self, ref: str, what: str = "model.name_or_path") -> None:
        """The demo id and hub ids pass; a local folder must lie in a model root."""
        ref = (ref or "").strip()
        if not ref or ref == DEMO_MODEL or not _looks_like_path(ref):
            return
        if not _inside(_resolve(ref), self.model_roots()):
            raise self._refuse(what, ref, self.model_roots())

    def check_config(self, cfg: RunConfig) -> RunConfig:
        """Every path a config from the form names: model, datasets, validation file."""
        self.check_model(cfg.model.name_or_path)
        for ref in cfg.data.datasets:
            self.check_dataset(ref)
        if cfg.data.val_file:
            self.check_dataset(cfg.data.val_file, "data.val_file")
        return cfg

    def check_chat_target(self, target: str) -> None:
        """A run (by id or name) or a model; a model folder must lie in a model root."""
        from tunesmith.engine import jobs

        if jobs.resolve_run(target) is None:
            self.check_model(target, "Chat with")

    def output_dir(self, out: str | None) -> str | None:
        """The export folder the person typed (None: the default under exports), if allowed."""
        out = (out or "").strip()
        if not out:
            return None
        if not _inside(_resolve(out), self.output_roots()):
            raise self._refuse("Output folder", out, self.output_roots())
        return out
