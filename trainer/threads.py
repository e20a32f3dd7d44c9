"""Torch's intra-op thread count, set for a stretch of work and restored after.

Our networks are small MLPs: a second intra-op thread buys little and, on a busy 2-core machine,
spin-waits against the simulator or a parallel job. Measured here: rollouts 20x and training
10-20x slower with torch's default (one thread per core) than with one thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Torch on ``n`` intra-op threads for the duration; ``None`` or ``0`` leaves torch's setting."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_threaded():
    """Rollout loops: one small forward pass per step."""
    return torch_threads(1)
