"""Kernel tests run on the CPU under the Triton interpreter when there is no CUDA.

TRITON_INTERPRET must be set before triton is first imported, so it is set
here, at collection time. Outputs are poisoned (NaN-filled) before every
kernel run, and every test starts from the same seed.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["TUNESMITH_POISON_OUTPUTS"] = "1"

import pytest  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def needs_cuda(*args):
    """pytest.param(...) marked to run only on a CUDA GPU."""
    return pytest.param(*args, marks=[pytest.mark.gpu, pytest.mark.skipif(DEVICE != "cuda", reason="needs CUDA")])
