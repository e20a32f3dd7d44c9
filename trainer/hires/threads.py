"""How many threads the hi-res import uses for independent work (devices, the card's code counts).

The compiled kernels (trainer/hires/kernels.py, ``nogil=True``) and numpy's whole-array passes run
without the GIL, so independent devices can use a second core, as pyarrow's and DuckDB's readers do.
Results never depend on the thread count: each device writes its own arrays, and whatever touches the
import card is done (or replayed) in device order on the calling thread (docs/benchmarks.md, "Hi-res
event import").
"""

from __future__ import annotations

import os

MAX_THREADS = 2  # more buys nothing measurable for a handful of devices and costs CPU per thread


def workers(tasks: int) -> int:
    """Threads for ``tasks`` independent pieces of work: 1 means run them on the calling thread."""
    return max(1, min(tasks, os.cpu_count() or 1, MAX_THREADS))
