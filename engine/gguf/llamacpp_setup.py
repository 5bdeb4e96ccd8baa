"""llama.cpp support on first use: check the build prerequisites, then install llama-cpp-python.

    from tunesmith.engine.gguf import llamacpp_setup
    llamacpp_setup.status()                  # LlamaCppStatus: installed?, what is missing, the command
    llamacpp_setup.install(progress=print)   # pip install with live progress; LlamaCppSetupError names the cause

Tunesmith writes F32/F16/BF16/Q8_0 GGUF files itself. The K-quants (Q4_K_M, ...), Q4_0 and the
llama.cpp check (load each file back and compare it with the Hugging Face model) need llama.cpp,
reached through llama-cpp-python. PyPI carries only its source, so pip builds it: a C and C++
compiler are required, and cmake (pip fetches cmake from PyPI when the machine has none). That build
is why this is not part of the core install: it takes about 7 minutes on 2 idle cores and half an
hour on a busy machine, and a studio should not wait for it. pip caches the built wheel, so a second
environment on the same machine gets it in seconds.

Prebuilt alternatives on PyPI were tried (2026-11) and do not fit: llama-cpp-py-sync's wheels are
tagged manylinux2014 but need glibc 2.38 (Debian 12 has 2.36, so they install and then fail to
load); xllamacpp's wheel runs models but does not export llama.cpp's quantizer.

What it does not know: whether the compiler found can build llama.cpp (a very old gcc fails in the
build, and the error then says so), or GPU builds (CMAKE_ARGS=-DGGML_CUDA=on is the user's choice).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from tunesmith.engine.errors import ExportError

REQUIREMENT = "llama-cpp-python>=0.3.0"
# Portable build: the cached wheel may be reused on another CPU (a Docker image, a second machine),
# where -march=native code would crash with "illegal instruction".
DEFAULT_CMAKE_ARGS = "-DGGML_NATIVE=OFF"
TYPICAL_TIME = "about 7 minutes on 2 idle cores, up to 30 on a busy machine; seconds when pip has the wheel cached"
INSTALL_HINT = "`tunesmith setup gguf` (or the Export tab's button)"

_lock = threading.Lock()


class LlamaCppSetupError(ExportError):
    """llama-cpp-python could not be installed; the message names what is missing."""


@dataclass
class LlamaCppStatus:
    installed: bool
    missing: list[str] = field(default_factory=list)  # prerequisites not found: the build cannot start
    notes: list[str] = field(default_factory=list)  # found-but-worth-knowing (cmake from PyPI, ...)

    def summary(self) -> str:
        if self.installed:
            return "llama.cpp support is installed: K-quants and the llama.cpp check are available."
        if self.missing:
            return ("llama.cpp support is not installed, and it cannot be built here yet: "
                    + "; ".join(self.missing) + ".")
        return ("llama.cpp support is not installed: F16/BF16/Q8_0 export works now, with the llama.cpp check "
                f"'not run yet'. Installing it builds llama-cpp-python ({TYPICAL_TIME}).")


def llama_cpp_available() -> bool:
    """True when llama-cpp-python imports in this process (after an install too)."""
    importlib.invalidate_caches()
    try:
        import llama_cpp  # noqa: F401
    except Exception:
        return False
    return True


def _compiler_hint() -> str:
    if sys.platform == "darwin":
        return "install Apple's command line tools: xcode-select --install"
    if shutil.which("apt-get"):
        return "on Debian/Ubuntu: sudo apt-get install build-essential cmake"
    if shutil.which("dnf"):
        return "on Fedora/RHEL: sudo dnf install gcc gcc-c++ make cmake"
    return "install gcc and g++ (or clang) with your system's package manager"


def missing_prerequisites() -> tuple[list[str], list[str]]:
    """(missing, notes): what stops a build of llama-cpp-python on this machine, checked before it starts."""
    missing, notes = [], []
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    cxx = os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)
    if not cc or not shutil.which(cc):
        missing.append(f"a C compiler (cc, gcc or clang) is not installed ({_compiler_hint()})")
    if not cxx or not shutil.which(cxx):
        missing.append(f"a C++ compiler (c++, g++ or clang++) is not installed ({_compiler_hint()})")
    if not shutil.which("cmake"):
        notes.append("cmake is not installed; pip fetches it from PyPI for the build (a few seconds)")
    return missing, notes


def status() -> LlamaCppStatus:
    if llama_cpp_available():
        return LlamaCppStatus(True)
    missing, notes = missing_prerequisites()
    return LlamaCppStatus(False, missing, notes)


def install_command() -> list[str]:
    return [sys.executable, "-m", "pip", "install", "-v", "--progress-bar", "off", REQUIREMENT]


def install_command_text() -> str:
    """The same install as one line a person can paste into a terminal."""
    return f"CMAKE_ARGS={DEFAULT_CMAKE_ARGS} {sys.executable} -m pip install '{REQUIREMENT}'"


# cmake's "[ 42%] Building ..." (make) and ninja's "[17/180] Building ..."
_PCT = re.compile(r"^\s*\[\s*(\d{1,3})%\]")
_FRAC = re.compile(r"^\s*\[(\d+)/(\d+)\]")


def _build_fraction(line: str) -> float | None:
    if m := _PCT.match(line):
        return int(m.group(1)) / 100
    if m := _FRAC.match(line):
        total = int(m.group(2))
        return int(m.group(1)) / total if total else None
    return None


def _diagnose(tail: list[str]) -> str:
    """One sentence for the usual causes of a failed build, read from pip's output."""
    text = "\n".join(tail)
    if "No space left on device" in text:
        return "the disk filled up during the build; free a few GB (the build needs about 1 GB) and try again"
    if re.search(r"No CMAKE_(C|CXX)_COMPILER could be found|CMAKE_(C|CXX)_COMPILER not set", text):
        return f"cmake found no working C/C++ compiler ({_compiler_hint()})"
    if re.search(r"(Could not find|No matching distribution).*(llama-cpp-python|scikit-build|cmake)", text, re.I):
        return "pip could not download llama-cpp-python or its build tools; check the network / PyPI access"
    if "Killed" in text or "internal compiler error" in text:
        return "the compiler was killed, usually for lack of memory; close other programs or set CMAKE_BUILD_PARALLEL_LEVEL=1"
    return "the build failed; the last lines of its output are below"


def install(progress: Callable[[float, str], None] | None = None,
            log: Callable[[str], None] | None = None) -> None:
    """Install llama-cpp-python into this environment, reporting progress(fraction, message).

    Checks the prerequisites first and raises LlamaCppSetupError naming what is missing, without
    starting a build. Returns at once when it is already installed. Raises LlamaCppSetupError
    with the cause and the last lines of the build when pip fails.
    """
    report = progress or (lambda f, m: None)
    if llama_cpp_available():
        report(1.0, "llama.cpp support is already installed")
        return
    missing, notes = missing_prerequisites()
    if missing:
        raise LlamaCppSetupError("Cannot build llama.cpp support: " + "; ".join(missing) + ".")
    if not _lock.acquire(blocking=False):
        raise LlamaCppSetupError("llama.cpp support is being installed already; wait for that install to finish.")
    try:
        _run_pip(report, log, notes)
    finally:
        _lock.release()
    if not llama_cpp_available():
        raise LlamaCppSetupError(
            "llama-cpp-python was installed but does not import in this process; restart Tunesmith and try again.")
    report(1.0, "llama.cpp support installed")


def _run_pip(report: Callable[[float, str], None], log: Callable[[str], None] | None, notes: list[str]) -> None:
    env = dict(os.environ)
    env.setdefault("CMAKE_ARGS", DEFAULT_CMAKE_ARGS)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    t0 = time.time()
    for n in notes:
        report(0.0, n)
    report(0.0, f"installing llama-cpp-python ({TYPICAL_TIME})")
    tail: list[str] = []
    frac, phase = 0.0, "downloading"
    proc = subprocess.Popen(install_command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", env=env, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-40:]
            if log is not None:
                log(line)
            f = _build_fraction(line)
            if f is not None:
                # compiling is most of the time: 5% .. 95% of the bar
                frac, phase = max(frac, 0.05 + 0.9 * f), "compiling llama.cpp"
            elif "Building wheel" in line:
                frac, phase = max(frac, 0.05), "compiling llama.cpp"
            elif "Using cached llama_cpp_python" in line and line.endswith(".whl"):
                phase = "installing the cached wheel"
            elif line.startswith("Successfully installed"):
                frac, phase = 1.0, "installed"
            # short: it is a progress bar's label; the typical time was said when the install began
            report(min(frac, 0.99), f"{phase} · {time.time() - t0:.0f} s")
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        raise LlamaCppSetupError(
            f"Installing llama-cpp-python failed: {_diagnose(tail)}. F16/BF16/Q8_0 files already written are kept. "
            f"To retry by hand: {install_command_text()}\n" + "\n".join(tail[-12:]))
