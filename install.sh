#!/usr/bin/env bash
# Install Tunesmith into the current Python environment (a venv is best).
#
#   bash install.sh            # CPU machine: PyTorch's CPU build, then Tunesmith with GGUF support
#   TUNESMITH_TORCH=cuda bash install.sh   # GPU machine / Docker: PyTorch's default CUDA build
#
# The same steps run in CI (.ci/run) and in the Docker image, so what CI proves is what users get.
# llama-cpp-python (the `gguf` extra: llama.cpp's quantizer and loader) has no wheels on PyPI and
# builds from source: about 7 minutes on 2 cores the first time; pip caches the wheel.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  if [ "${TUNESMITH_TORCH:-cpu}" = "cuda" ]; then
    python -m pip install -q torch
  else
    # A bare `torch` requirement would pull several GB of CUDA wheels onto a CPU machine.
    python -m pip install -q "torch==${TUNESMITH_TORCH_VERSION:-2.13.0}"
  fi
fi
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" python -m pip install -q -e ".[test,gguf]"
