"""Collection throughput: the local process pool vs Ray actors on the same chunks (same log bytes).

Usage (the figures in docs/benchmarks.md and docs/scale-out.md)::

    .venv/bin/python bench/scale.py --env elevator:cb10x4:downpeak --episodes 24 --chunk-size 2 --workers 2

Measures (1) one process, serially: the per-episode cost; (2) the local spawn pool with ``--workers``
processes; (3) Ray with ``--workers`` actors on a local Ray started with that many CPUs (Ray's own
start-up is timed apart: a cluster pays it once, not per collection). Both parallel runs include
starting their worker processes. Prints episodes/s, the Ray/pool ratio, checks the two logs are
byte-identical, and estimates what N machines give from the measured per-episode cost and the
measured Ray overhead per chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.collect import collect  # noqa: E402


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def _timed(**kwargs) -> float:
    started = time.perf_counter()
    collect(progress=False, **kwargs)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="elevator:cb10x4:downpeak")
    p.add_argument("--controller", default="etd@eps=0.1")
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--chunk-size", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--serial-episodes", type=int, default=4, help="episodes of the one-process run")
    p.add_argument("--machines", default="1,4,16,64", help="cluster sizes for the estimate")
    p.add_argument("--cores-per-machine", type=int, default=16)
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="inspo-scale-"))
    common = {"env_id": args.env, "controller": args.controller, "chunk_size": args.chunk_size}
    try:
        serial = _timed(out=tmp / "serial", episodes=args.serial_episodes, workers=1, **common)
        per_episode = serial / args.serial_episodes
        pool = _timed(out=tmp / "pool", episodes=args.episodes, workers=args.workers, **common)
        started = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - started
        on_ray = _timed(
            out=tmp / "ray", episodes=args.episodes, workers=args.workers, backend="ray", **common
        )
        ray.shutdown()
        identical = _files(tmp / "pool") == _files(tmp / "ray")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    chunks = -(-args.episodes // args.chunk_size)
    # What Ray adds per chunk over the pool, measured under the same conditions (same chunks, CPUs).
    overhead_per_chunk = max(0.0, on_ray - pool) * args.workers / chunks
    figures = {
        "env": args.env,
        "controller": args.controller,
        "episodes": args.episodes,
        "chunk_size": args.chunk_size,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "serial_s_per_episode": per_episode,
        "pool_s": pool,
        "pool_episodes_per_s": args.episodes / pool,
        "ray_start_s": ray_start,
        "ray_s": on_ray,
        "ray_episodes_per_s": args.episodes / on_ray,
        "ray_over_pool": pool / on_ray,
        "ray_overhead_s_per_chunk": overhead_per_chunk,
        "byte_identical": identical,
    }
    print(json.dumps(figures, indent=2))
    figures["estimate"] = {}
    for chunk in sorted({args.chunk_size, 16}):
        work = chunk * per_episode
        efficiency = work / (work + overhead_per_chunk)
        print(
            f"\nestimate, chunks of {chunk} episodes ({args.cores_per_machine} cores per machine, one "
            f"simulation per core; efficiency = chunk work / (chunk work + Ray overhead) = {efficiency:.2f}):"
        )
        for n in (int(x) for x in args.machines.split(",")):
            cores = n * args.cores_per_machine
            rate = cores / per_episode * efficiency
            figures["estimate"][f"chunk{chunk}_machines{n}_episodes_per_s"] = rate
            print(
                f"  {n:>3} machines ({cores:>4} cores): ~{rate:,.1f} episodes/s = {rate * 3600:,.0f} episodes/h"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
