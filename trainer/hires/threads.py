"""The threads the hi-res import uses for independent work (devices, the card's code counts).

The compiled kernels (trainer/hires/kernels.py, ``nogil=True``) and numpy's whole-array passes run
without the GIL, so independent devices can use a second core, as pyarrow's and DuckDB's readers do.
Results never depend on the threads: each device writes its own arrays, and whatever touches the
import card is done (or replayed) in device order on the calling thread (docs/benchmarks.md, "Hi-res
event import").
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

MAX_THREADS = 2  # as many as the readers the import is compared with use (bench/hires_import.py)

_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def workers(tasks: int) -> int:
    """Threads for ``tasks`` independent pieces of work: 1 means run them on the calling thread."""
    return max(1, min(tasks, os.cpu_count() or 1, MAX_THREADS))


def pool() -> ThreadPoolExecutor:
    """One pool for the process, started on first use and kept: starting two threads per import and
    joining them cost about 2 ms of CPU per bench import (docs/benchmarks.md). Idle threads cost nothing."""
    global _pool
    with _lock:  # imports running at once on several threads share it (tasks never wait on tasks)
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="hires-import")
        return _pool


def _forget_pool() -> None:
    """A forked child has none of the parent's threads: it starts its own pool if it needs one."""
    global _pool, _lock
    _pool, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)
