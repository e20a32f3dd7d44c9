"""``inspo collect --backend ray``: the chunks of ``trainer.collect`` run on Ray actors.

The chunks are the ones ``plan_chunks`` makes and each is written by ``_run_chunk``, the same
function the local process pool runs, so a Ray collection is byte-identical to a local one with
the same seeds. Each actor is one worker process holding one simulator (libsumo allows one
simulation per process) and is reused for many chunks.

Where the driver and the actors see the same ``out`` directory (one machine, or a shared file
system) the actors write into it directly. Otherwise each actor writes its chunk into a local
temporary directory and returns the files' bytes; the driver puts them in place (temp name +
rename, like ``LogWriter``). The driver decides which by a probe file it creates in ``out``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from trainer.integrations import require_ray


class ChunkWorker:
    """One worker process, one simulator: runs chunks with ``trainer.collect._run_chunk``."""

    def run(
        self,
        env_id: str,
        env_kwargs: dict,
        chunk,
        epsilon: float | None,
        out: str,
        site: str | None,
        probe: str,
    ) -> tuple[list, dict[str, bytes] | None]:
        from trainer.collect import _run_chunk

        if (Path(out) / probe).exists():  # the driver's directory is visible here: write in place
            return _run_chunk(env_id, env_kwargs, chunk, epsilon, out, site), None
        with tempfile.TemporaryDirectory(prefix="inspo-chunk-") as tmp:
            results = _run_chunk(env_id, env_kwargs, chunk, epsilon, tmp, site)
            files = {str(p.relative_to(tmp)): p.read_bytes() for p in sorted(Path(tmp).rglob("*.parquet"))}
        return results, files

    def pid(self) -> int:
        return os.getpid()


def _place(out: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        final = out / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, final)


def connect(address: str | None = None, num_cpus: int | None = None, worker_output: bool = True) -> bool:
    """Join the cluster at ``address`` ('auto', 'ray://host:10001', ...) or start a local one.

    Returns True when this call started Ray (so the caller shuts it down again); an already
    initialised session (a test fixture, a notebook) is reused as it is. ``worker_output=False``
    stops Ray forwarding the workers' stdout/stderr to this process (errors still arrive as
    exceptions): for callers whose workers print nothing useful.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": worker_output}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    return True


def disconnect() -> None:
    require_ray().shutdown()


PLACEMENT_TIMEOUT_S = 60.0  # no actor placed for this long, and none working: the cluster has no CPU


def run_chunks(
    env_id: str,
    env_kwargs: dict,
    chunks: Sequence,
    epsilon: float | None,
    out: str,
    site: str | None,
    workers: int = 1,
    ship_files: bool = False,
    placement_timeout_s: float | None = None,
) -> Iterator[list]:
    """Run every chunk on a pool of at most ``workers`` actors; yield each chunk's results as it finishes.

    A chunk goes only to an actor that is running (placed on a CPU) and idle, so an actor the cluster
    cannot place yet holds no work: with fewer free CPUs than ``workers`` the placed actors do all the
    chunks. No actor placed within ``placement_timeout_s`` (default ``PLACEMENT_TIMEOUT_S``) is a
    ValueError. ``ship_files=True`` always
    sends the part files back through Ray instead of letting actors that see ``out`` write there (for
    object-store-only clusters; also how the tests exercise that path).
    """
    ray = require_ray()
    if not chunks:
        return
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    placement_timeout_s = PLACEMENT_TIMEOUT_S if placement_timeout_s is None else placement_timeout_s
    total_cpus = int(ray.cluster_resources().get("CPU", 0))
    n_actors = max(1, min(workers, total_cpus, len(chunks)))
    actor_cls = ray.remote(num_cpus=1, max_restarts=0)(ChunkWorker)
    actors = [actor_cls.remote() for _ in range(n_actors)]
    out_path = Path(out)
    probe = f".ray-probe-{uuid.uuid4().hex}"
    if not ship_files:
        (out_path / probe).touch()
    try:
        starting = {actor.pid.remote(): actor for actor in actors}  # resolves once the actor runs
        working: dict = {}
        queue = list(chunks)
        while queue or working:
            timeout = None if working else placement_timeout_s
            done, _ = ray.wait([*working, *starting], num_returns=1, timeout=timeout)
            if not done:
                raise ValueError(
                    f"the Ray cluster placed no collect worker in {placement_timeout_s:.0f} s "
                    f"({total_cpus} CPUs in total, none free): wait for running jobs or add nodes"
                )
            ref = done[0]
            if ref in starting:
                actor, results, files = starting.pop(ref), None, None
            else:
                actor = working.pop(ref)
                results, files = ray.get(ref)
            if queue:  # an idle, placed actor: hand it the next chunk
                working[actor.run.remote(env_id, env_kwargs, queue.pop(0), epsilon, out, site, probe)] = actor
            if files:
                _place(out_path, files)
            if results is not None:
                yield results
    finally:
        (out_path / probe).unlink(missing_ok=True)
        for actor in actors:
            ray.kill(actor)
