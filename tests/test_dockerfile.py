"""The Docker image is not built or started by any test: on the CI machine podman (Debian's) can build an
image but cannot start a container (crun: "setrlimit RLIMIT_NPROC: Operation not permitted" in this
sandbox, whatever --ulimit/--cgroups says; checked 2026-11-29), and the CUDA base image cannot be pulled
(no registry is reachable). So the Dockerfile is linted with hadolint (tests/security/test_policy.py) and
its install step is checked here to be the same install.sh users run. Nothing here proves the image runs."""

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


def test_the_image_gets_the_kernels_compiler_with_cuda_torch():
    """Core installs leave triton out (a CPU machine never runs the kernels); install.sh adds the `gpu` extra
    wherever the torch it installed is a CUDA build, which the image's TUNESMITH_TORCH=cuda makes it."""
    install = (REPO / "install.sh").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r"^gpu = \[\"triton", pyproject, re.M)
    assert "torch.version.cuda" in install and "PIP_EXTRAS+=(gpu)" in install
