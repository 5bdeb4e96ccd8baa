"""Whether this thread is recomputing a checkpointed layer for its backward.

kernels/checkpoint.py (and kernels/layer_graphs.py, when it captures that
recompute) enter `recomputing_scope()`; ops whose output only feeds a residual
add read `recomputing()` and skip work nobody will read (kernels/lora_mlp.py).
The flag is per thread: the recompute runs in the thread that runs the
backward, and a model used by another thread meanwhile (the studio's chat,
say) must not see it.
"""
from __future__ import annotations

import contextlib
import threading

_state = threading.local()


def recomputing() -> bool:
    """True while this thread recomputes a checkpointed layer for its backward."""
    return getattr(_state, "depth", 0) > 0


@contextlib.contextmanager
def recomputing_scope():
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1
