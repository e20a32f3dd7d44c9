"""Elevator simulator speed: env-ticks/s for one building and batched, full rules, vs real time.

Usage: .venv/bin/python bench/elevator_speed.py [--env elevator:cb10x4:downpeak] [--episodes 3] [--ticks 2000] [--batches 256 1024]

* single (scalar core): the B = 1 pure-Python core that backs the ParallelEnv, random legal action per tick.
* episode (ParallelEnv): whole episodes (5 min warm-up + 1 simulated hour + drain) through
  ``env.step`` with random legal actions at every decision step, seeds 0..``--episodes``-1: the "one
  simulated hour" figure is the median episode's CPU time per simulated hour. The random-action
  choice (numpy per agent per step) is inside the timed loop: about a tenth of the figure.
* batched (numpy core): B buildings in lockstep, random legal actions per car and tick.

Ratio to real time = simulated seconds per second (summed over the batch). Both wall-clock and
process CPU time are reported: on a shared machine the wall figure is deflated by other jobs, the
CPU figure (``time.process_time``, time this process actually ran) much less so.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np

from envs.elevator.core import ElevatorCore
from envs.elevator.registry import make_env


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bench_single(env_id: str, ticks: int) -> tuple[float, float, float]:
    """Returns (ticks, wall s, cpu s)."""
    env = make_env(env_id)
    core = env.core
    core.reset([0])
    rng = np.random.default_rng(0)

    def run():
        for n in range(ticks):
            if core.l_done:
                core.reset([n])
            core.tick([int(rng.choice(np.flatnonzero(m))) for m in core.l_mask])

    return (ticks, *_timed(run))


def bench_episode(env_id: str, seed: int = 0) -> tuple[float, float, float, int]:
    """Returns (ticks, wall s, cpu s, decision steps) of one whole episode through env.step."""
    env = make_env(env_id)
    state = {"infos": env.reset(seed=seed)[1]}
    rng = np.random.default_rng(seed)

    def run():
        while env.agents:
            infos = state["infos"]
            acts = {a: int(rng.choice(np.flatnonzero(infos[a]["action_mask"]))) for a in env.agents}
            state["infos"] = env.step(acts)[4]

    wall, cpu = _timed(run)
    return env.core.ticks, wall, cpu, env.decision_steps


def bench_batched(env_id: str, batch: int, ticks: int) -> tuple[float, float, float]:
    """Returns (env-ticks, wall s, cpu s)."""
    env = make_env(env_id)
    core = ElevatorCore(env.building, env.traffic, batch=batch)
    core.reset(list(range(batch)))
    rng = np.random.default_rng(0)
    for _ in range(20):  # warm-up: let cars spread out
        core.step(np.argmax(core.mask * rng.random(core.mask.shape), axis=2))

    def run():
        for _ in range(ticks):
            core.step(np.argmax(core.mask * rng.random(core.mask.shape), axis=2))

    return (batch * ticks, *_timed(run))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="elevator:cb10x4:downpeak")
    p.add_argument("--ticks", type=int, default=2000, help="ticks per batched measurement")
    p.add_argument("--single-ticks", type=int, default=20000)
    p.add_argument(
        "--episodes", type=int, default=3, help="whole episodes through the ParallelEnv (seeds 0..N-1)"
    )
    p.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    args = p.parse_args()
    print(
        f"env {args.env}; {platform.machine()}; numpy {np.__version__}; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'mode':<28}{'ticks/s wall':>14}{'ticks/s cpu':>14}{'x real (cpu)':>14}")

    def row(name: str, ticks: float, wall: float, cpu: float, extra: str = "") -> None:
        print(f"{name:<28}{ticks / wall:>14,.0f}{ticks / cpu:>14,.0f}{ticks * 0.5 / cpu:>14,.0f}{extra}")

    row("single (scalar core)", *bench_single(args.env, args.single_ticks))
    episodes = [bench_episode(args.env, seed) for seed in range(args.episodes)]
    for ticks, wall, cpu, steps in episodes:
        row(
            "episode (ParallelEnv)",
            ticks,
            wall,
            cpu,
            f"   {ticks * 0.5 / 3600:.2f} simulated h: {wall:.2f} s wall, {cpu:.2f} s cpu, {steps} decision steps",
        )
    ticks, wall, cpu, _ = sorted(episodes, key=lambda e: e[2])[len(episodes) // 2]
    cpus = [e[2] for e in episodes]
    print(
        f"{ticks * 0.5 / 3600:.2f} simulated h: median of {len(episodes)} episodes {cpu:.2f} s cpu "
        f"({min(cpus):.2f}-{max(cpus):.2f}), {wall:.2f} s wall -> {cpu / (ticks * 0.5 / 3600):.2f} s cpu "
        "per simulated hour (goal <= 1)"
    )
    for b in args.batches:
        row(f"batched B={b} (numpy core)", *bench_batched(args.env, b, max(1, args.ticks * 256 // b)))


if __name__ == "__main__":
    main()
