"""The Docker image: no image builder can run on the CI machine (podman from Debian builds there but its
containers cannot start: cgroups in hybrid mode; and base images cannot be pulled), so the Dockerfile is
linted with hadolint (tests/security/test_policy.py) and its install step is checked here to be the same
install.sh users run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


def test_the_image_installs_with_install_sh_into_its_own_venv():
    text = DOCKERFILE.read_text()
    run_lines = [ln for ln in text.splitlines() if ln.startswith("RUN ") and "install.sh" in ln]
    assert run_lines and all("TUNESMITH_TORCH=cuda" in ln for ln in run_lines), run_lines
    # install.sh installs into $VIRTUAL_ENV when one is set: the image must point it at the venv on PATH.
    venv = re.search(r"VIRTUAL_ENV=(\S+)", text)
    assert venv and f"PATH={venv.group(1)}/bin" in text
