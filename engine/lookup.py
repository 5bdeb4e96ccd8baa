"""Does a name given to `tunesmith chat` (or the studio's chat) name anything? Answered in seconds.

    check_model_name("NO_SUCH_RUN")   # ModelError: no run or local model is named ...

Local things first (the demo model, folders, the hub cache), then, only for a
name shaped like a hub id and only when not offline, one hub lookup with a
short timeout: transformers' own loading retries an unreachable hub for about
a minute before failing with a message that does not mention runs.
Imports neither torch nor transformers, so the CLI answers before loading them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import paths
from .config import DEMO_MODEL
from .errors import ModelError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?")
HUB_LOOKUP_TIMEOUT_S = 5.0


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~", ".")) or s.count("/") > 1 or "\\" in s


def check_model_name(target: str) -> None:
    """Return when `target` may be a model (loading says the rest); ModelError when nothing has that name."""
    local = paths.demo_model_dir() if target == DEMO_MODEL else Path(os.path.expanduser(target))
    if local.exists():
        return  # loading says what is wrong with a folder
    nothing = (f"No run or local model is named {target!r}. `tunesmith runs` lists runs; a model is a folder "
               f"with config.json, a hub id (owner/name) or {DEMO_MODEL}")
    if _looks_like_path(target) or not _HUB_ID.fullmatch(target):
        raise ModelError(nothing + ".")
    import huggingface_hub as hf
    from huggingface_hub import errors as hf_errors

    if isinstance(hf.try_to_load_from_cache(target, "config.json"), str):
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelError(nothing + f"; {target} is not in the local hub cache either (HF_HUB_OFFLINE is set).")
    try:
        hf.model_info(target, timeout=HUB_LOOKUP_TIMEOUT_S)
    except hf_errors.GatedRepoError:
        return  # it exists; loading explains the access it needs
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError):
        raise ModelError(nothing + f"; the hub has no model {target!r} either.") from None
    except Exception as e:  # no network, DNS failure, timeout
        raise ModelError(nothing + f"; the hub could not be reached to look for it ({type(e).__name__}).") from None


def check_chat_target(target: str) -> None:
    """A run (id, prefix or name) or a model; ModelError in seconds when it is neither."""
    from . import jobs

    if jobs.resolve_run(target) is None:
        check_model_name(target)
