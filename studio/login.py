"""The studio's login: user:password from the command line, or a generated password kept hashed.

    user, check, new_password = login_from_file(Path("/data/studio-login.json"))
    check("tunesmith", "the password")  -> True / False

The Docker image sets TUNESMITH_LOGIN_FILE=/data/studio-login.json: on the
first start with no TUNESMITH_AUTH, `tunesmith webui` generates a password,
prints it once, and stores only its scrypt hash (with a random salt) in that
file, readable by its owner alone; later starts check logins against the hash
and print where it is kept. Delete the file to get a new password.

What it does not do: manage several users, or store a password given with
--auth / TUNESMITH_AUTH (those are compared as given).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Callable

from tunesmith.engine.errors import ConfigError

LOGIN_FILE_ENV = "TUNESMITH_LOGIN_FILE"
DEFAULT_USER = "tunesmith"
# scrypt cost: n=2**14, r=8 takes ~30 ms and 16 MB per check (the OWASP minimum is n=2**13 at r=8),
# slow for a guesser with the file, quick for a person logging in.
_N, _R, _P = 2**14, 8, 1


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def hash_password(password: str, salt: bytes | None = None) -> str:
    """"scrypt$n$r$p$salt$hash" (base64 parts)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a hash_password() string; False for a malformed one."""
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 2**20, dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def login_from_file(path: Path, user: str = DEFAULT_USER) -> tuple[str, Callable[[str, str], bool], str | None]:
    """(user, check(user, password), the new password or None) for the login kept in `path`.

    Creates the file with a new random password when it does not exist (written
    to a temporary name with mode 0600, then renamed). Raises ConfigError for a
    file that cannot be read or written.
    """
    new_password = None
    try:
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            user, stored = str(saved["user"]), str(saved["password_hash"])
        else:
            new_password = secrets.token_urlsafe(18)  # 144 bits: no guessing, even without the back-off
            stored = hash_password(new_password)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"user": user, "password_hash": stored}, f)
            os.replace(tmp, path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not a Tunesmith login file"
        raise ConfigError(f"{LOGIN_FILE_ENV}: cannot use {path} ({why}). Fix or delete it (a new password is "
                          "then generated), or set TUNESMITH_AUTH=user:password.") from None

    def check(u: str, password: str) -> bool:
        # Both compared every time: the answer's timing does not tell which one was wrong.
        same_user = hmac.compare_digest(u.encode(), user.encode())
        return verify_password(password, stored) and same_user

    return user, check, new_password
