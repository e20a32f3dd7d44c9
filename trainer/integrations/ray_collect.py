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


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` ('auto', 'ray://host:10001', ...) or start a local one.

    Returns True when this call started Ray (so the caller shuts it down again); an already
    initialised session (a test fixture, a notebook) is reused as it is.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)
    return True


def disconnect() -> None:
    require_ray().shutdown()


def run_chunks(
    env_id: str,
    env_kwargs: dict,
    chunks: Sequence,
    epsilon: float | None,
    out: str,
    site: str | None,
    workers: int | None = None,
    ship_files: bool = False,
) -> Iterator[list]:
    """Run every chunk on a pool of actors; yield each chunk's episode results as it finishes.

    ``ship_files=True`` always sends the part files back through Ray instead of letting actors that
    see ``out`` write there (for object-store-only clusters; also how the tests exercise that path).
    """
    ray = require_ray()
    if not chunks:
        return
    cpus = int(ray.available_resources().get("CPU", 1)) or 1
    n_actors = max(1, min(workers or cpus, len(chunks)))
    actor_cls = ray.remote(num_cpus=1, max_restarts=0)(ChunkWorker)
    actors = [actor_cls.remote() for _ in range(n_actors)]
    out_path = Path(out)
    probe = f".ray-probe-{uuid.uuid4().hex}"
    if not ship_files:
        (out_path / probe).touch()
    try:
        pending = {}
        queue = list(chunks)
        for actor in actors:  # one chunk in flight per actor; the next goes to whichever finishes
            if queue:
                pending[actor.run.remote(env_id, env_kwargs, queue.pop(0), epsilon, out, site, probe)] = actor
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(done[0])
            results, files = ray.get(done[0])
            if queue:
                pending[actor.run.remote(env_id, env_kwargs, queue.pop(0), epsilon, out, site, probe)] = actor
            if files:
                _place(out_path, files)
            yield results
    finally:
        (out_path / probe).unlink(missing_ok=True)
        for actor in actors:
            ray.kill(actor)
