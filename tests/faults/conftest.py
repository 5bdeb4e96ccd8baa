"""Fixtures of the fault suite (helpers are in faultkit.py)."""

from __future__ import annotations

import subprocess

import pytest
from faultkit import SmallDisk, _mount_tmpfs


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    where = tmp_path_factory.mktemp("small-disk") / "mnt"
    why = _mount_tmpfs(where, 64)
    if why:
        pytest.skip(why)
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
