"""Collect logs: run controllers in a simulator and write the Parquet log (docs/log-format.md).

Episodes are cut into fixed chunks of consecutive seeds; each chunk is written by one writer
with its own part files, named after the chunk's seeds. The chunking depends only on the seeds,
never on the number of worker processes, so a collection is byte-identical whether it ran in 1
process or 8, and collections appended to one log (other seeds) never overwrite each other's
files; seeds a log already holds are refused before anything runs.
libsumo allows one simulation per process, so each worker process builds its own env.

A collection that fails (a bad controller spec, an env error, an interrupt) leaves ``out`` as it found
it: a new log is written into a hidden folder beside ``out`` and moved into place only when every
episode is written; into an existing log, the files this collection added are removed again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from contract.logformat import LogWriter, site_name
from envs.controllers import build_controller
from envs.registry import dataset_plan, make_env
from envs.site import partition_env_id
from trainer.logs.reader import part_files
from trainer.rollout import EpisodeResult, episode_seed, log_meta, run_episode, seed_episode_id


@dataclass(frozen=True)
class Chunk:
    """Consecutive episodes of one controller spec, written by one writer."""

    index: int
    controller: str
    seeds: tuple[int, ...]


def plan_chunks(plan: Sequence[tuple[str, int]], start_seed: int, chunk_size: int) -> list[Chunk]:
    """Turn (controller spec, episodes) pairs into chunks of consecutive, never repeated seeds."""
    chunks, seed = [], start_seed
    for spec, episodes in plan:
        for first in range(0, episodes, chunk_size):
            n = min(chunk_size, episodes - first)
            chunks.append(Chunk(len(chunks), spec, tuple(range(seed + first, seed + first + n))))
        seed += episodes
    return chunks


def chunk_writer_id(chunk: Chunk) -> str:
    """Part files of a chunk are named after its seeds: unique within a log that several collections
    append to (a chunk index is not: every collection starts at chunk 0), and the same for the same seeds."""
    return f"seeds{chunk.seeds[0]:06d}-{chunk.seeds[-1]:06d}"


def logged_episode_ids(out: str | os.PathLike, site: str) -> set[str]:
    """Episode ids already in ``out`` for ``site`` (empty for a new log); files found as the reader finds them."""
    ids: set[str] = set()
    for part in part_files(Path(out), "env_steps"):
        if f"site={site}" in part.parts:
            ids.update(pq.read_table(part, columns=["episode_id"]).column("episode_id").to_pylist())
    return ids


def _refuse_logged_seeds(out: str | os.PathLike, site: str, chunks: list[Chunk]) -> None:
    """Appending the same seeds again would log two episodes under one id: refuse, name the seeds."""
    planned = {seed_episode_id(s): s for c in chunks for s in c.seeds}
    logged = logged_episode_ids(out, site)
    clash = sorted(planned[e] for e in logged if e in planned)
    if clash:
        # the first seed past both this plan and every seed the log holds (a suggestion that works)
        logged_seeds = [s for s in map(episode_seed, logged) if s is not None]
        free = max([*planned.values(), *logged_seeds]) + 1
        raise ValueError(
            f"{out} already holds {len(clash)} of these episodes for site {site!r} (seeds {clash[0]}..{clash[-1]}); "
            f"collect other seeds into it (e.g. --seed {free}) or write to a new directory"
        )


def _refuse_other_site(out: str | os.PathLike, site: str, env_id: str, env_kwargs: dict) -> None:
    """Appending another building (or network, or game shape) to a log would make it unreadable: refuse it
    before anything runs, naming the option (envs/site.py). Another demand on the same site is fine."""
    from envs.site import SiteMismatchError, compare

    parts = [p for p in part_files(Path(out), "agent_steps") if f"site={site}" in p.parts]
    raw = pq.read_schema(parts[0]).metadata.get(b"site_spec") if parts else None
    if raw is None:
        return
    env = _worker_env(env_id, env_kwargs)  # reused by an in-process collection
    try:
        note = compare(json.loads(raw), env.site_spec, left=str(out), right="this collection")
    except SiteMismatchError as err:
        raise ValueError(f"{err}; collect into a new directory") from None
    if note:
        print(note, file=sys.stderr)


def _run_chunk(
    env_id: str, env_kwargs: dict, chunk: Chunk, epsilon: float | None, out: str, site: str | None
) -> list[EpisodeResult]:
    env = _worker_env(env_id, env_kwargs)
    controller = build_controller(env_id, chunk.controller, epsilon=epsilon)
    results = []
    with LogWriter(out, log_meta(env), site=site, writer_id=chunk_writer_id(chunk)) as writer:
        for seed in chunk.seeds:
            results.append(run_episode(env, controller, seed, writer=writer))
    return results


@contextmanager
def _all_or_nothing(out: Path) -> Iterator[Path]:
    """Yield the folder to write into; on failure, leave ``out`` as it was (see the module docstring)."""
    if not out.exists():
        staging = out.parent / f".{out.name}.collecting-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.replace(staging, out)
        return
    before = set(out.rglob("*"))
    try:
        yield out
    except BaseException:
        # deepest first, so folders this collection created are empty when their turn comes
        for path in sorted(set(out.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


_ENV_CACHE: dict[tuple, object] = {}


def _worker_env(env_id: str, env_kwargs: dict):
    """One env per worker process, reused across its chunks (libsumo: one simulation per process)."""
    key = (env_id, json.dumps(env_kwargs, sort_keys=True, default=repr))  # values may be lists (payoff=...)
    if key not in _ENV_CACHE:
        _ENV_CACHE.clear()
        _ENV_CACHE[key] = make_env(env_id, **env_kwargs)
    return _ENV_CACHE[key]


def collect(
    env_id: str,
    out: str | os.PathLike,
    controller: str | None = None,
    episodes: int | None = None,
    dataset: str | None = None,
    epsilon: float | None = None,
    start_seed: int = 0,
    workers: int = 1,
    chunk_size: int = 16,
    site: str | None = None,
    env_kwargs: dict | None = None,
    progress: bool = True,
    on_result: Callable[[EpisodeResult], None] | None = None,
    backend: str = "local",
    address: str | None = None,
) -> list[EpisodeResult]:
    """Collect a log; either ``controller`` + ``episodes`` or a named ``dataset`` of the env.

    ``backend="ray"`` runs the same chunks on Ray actors (``trainer.integrations.ray_collect``):
    ``address`` joins a cluster ('auto', 'ray://head:10001'), else a local Ray with ``workers`` CPUs.
    ``workers`` is the number of simulators running at once on either backend (on Ray, at most the
    cluster's free CPUs).
    """
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if dataset is not None:
        plan = dataset_plan(env_id, dataset)
    elif controller is not None and episodes is not None:
        plan = [(controller, episodes)]
    else:
        raise ValueError("give either --dataset or both --controller and --episodes")
    for spec, episodes in plan:
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes} for {spec!r}")
        build_controller(env_id, spec, epsilon=epsilon)  # a bad spec fails here, before anything runs
    env_kwargs = env_kwargs or {}
    chunks = plan_chunks(plan, start_seed, chunk_size)
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file, not a log directory")
    site = site or site_name(partition_env_id(env_id))  # a site file's rows go under site=site-<name>
    _refuse_logged_seeds(out, site, chunks)
    if backend == "local" and workers <= 1:
        _worker_env(env_id, env_kwargs)  # bad env options fail here, before the progress bar (env reused)
    _refuse_other_site(out, site, env_id, env_kwargs)
    with _all_or_nothing(Path(out)) as folder:
        results = _collect_chunks(
            env_id,
            env_kwargs,
            chunks,
            epsilon,
            str(folder),
            site,
            workers,
            progress,
            on_result,
            backend,
            address,
        )
    results.sort(key=lambda r: r.seed)
    return results


def _collect_chunks(
    env_id: str,
    env_kwargs: dict,
    chunks: list[Chunk],
    epsilon: float | None,
    out: str,
    site: str | None,
    workers: int,
    progress: bool,
    on_result: Callable[[EpisodeResult], None] | None,
    backend: str,
    address: str | None,
) -> list[EpisodeResult]:
    total = sum(len(c.seeds) for c in chunks)
    results: list[EpisodeResult] = []
    bar = tqdm(total=total, desc=f"collect {env_id}", unit="ep", disable=not progress)
    if backend == "ray":
        from trainer.integrations import ray_collect

        started = ray_collect.connect(address, num_cpus=workers)
        try:
            for chunk_results in ray_collect.run_chunks(
                env_id, env_kwargs, chunks, epsilon, out, site, workers
            ):
                for r in chunk_results:
                    results.append(r)
                    bar.update(1)
                    if on_result:
                        on_result(r)
        finally:
            if started:
                ray_collect.disconnect()
    elif workers <= 1:
        for chunk in chunks:
            for r in _run_chunk(env_id, env_kwargs, chunk, epsilon, out, site):
                results.append(r)
                bar.update(1)
                if on_result:
                    on_result(r)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_run_chunk, env_id, env_kwargs, c, epsilon, out, site) for c in chunks]
            try:
                for future in as_completed(futures):
                    for r in future.result():
                        results.append(r)
                        bar.update(1)
                        if on_result:
                            on_result(r)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # no writer still running when we clean up
                raise
    bar.close()
    return results
