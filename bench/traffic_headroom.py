"""How much better than max-pressure can a signal rule be, before asking a learner to find it?

    .venv/bin/python bench/traffic_headroom.py                      # grid4x4 and cologne8, 900 s, 32 seeds
    .venv/bin/python bench/traffic_headroom.py --nets grid4x4 --seeds 8

The traffic acceptance (docs/results.md) asks InSPO for 0.95x max-pressure's trip delay on grid4x4 and 0.98x
on cologne8. A learner can only find what its log varies, so this bench first looks for a rule change with
headroom, as bench/elevator_headroom.py does for ETD's delay term: max-pressure switches on a near-tie and
pays the yellow for it; ``max-pressure-keep`` keeps the current green while its pressure is within a margin
of the best phase's (envs/traffic/controllers.py); the margin-0 row keeps it only on exact ties, which
max-pressure breaks towards the lowest phase index. The opposite change, ``max-pressure-cap``, ends a green
that has run 25 s for the best other phase. Also shown: the softmax over pressures that the ``explored``
dataset logs (``@temp``), and a longer minimum green.

Every rule runs on the same tuning seeds (``envs.seeds.tuning_seeds``, never evaluation seeds), with the
traffic results' episode length (900 s); rules are deterministic but for the softmax rows, whose draws come
from a separate RNG, so the per-seed difference to max-pressure is paired. Prints one table per net.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.controllers import one_hot  # noqa: E402
from envs.traffic.controllers import MaxPressure, MaxPressureCap, MaxPressureKeep  # noqa: E402
from trainer.report import ci95, markdown_table, mean_std, print_table  # noqa: E402

SECONDS = 900  # the traffic results' episode length (bench/configs/traffic-grid4x4.toml)
_ENV: dict[str, object] = {}


class LongerMinGreen(MaxPressure):
    """Max-pressure that keeps every green at least ``seconds`` (the env's own minimum is 7 s with yellow)."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.name = f"max-pressure, min green {seconds:g} s"

    def distribution(self, env, obs, infos):
        out = super().distribution(env, obs, infos)
        green, since = env.current_phases(), env.time_in_phase()
        for i, agent in enumerate(env.possible_agents):
            if since[i] < self.seconds:
                out[agent] = one_hot(env.n_actions, int(green[i]))
        return out


def rules() -> list[tuple[str, object]]:
    from envs.controllers import build_controller

    return [
        ("max-pressure (logged)", build_controller("sumo:grid4x4", "max-pressure")),
        ("keep on ties (margin 0)", MaxPressureKeep(margin=0.0)),
        ("max-pressure-keep (1 vehicle)", MaxPressureKeep(margin=1.0)),
        ("keep within 2 vehicles", MaxPressureKeep(margin=2.0)),
        ("softmax, temp 0.5", build_controller("sumo:grid4x4", "max-pressure@temp=0.5")),
        (
            "softmax, temp 1 (`explored`)",
            build_controller("sumo:grid4x4", "max-pressure@temp=1"),
        ),
        ("min green 15 s", LongerMinGreen(15)),
        ("green capped at 20 s", MaxPressureCap(20.0)),
        ("max-pressure-cap (25 s)", MaxPressureCap(25.0)),
        ("green capped at 30 s", MaxPressureCap(30.0)),
    ]


def run_one(net: str, index: int, seed: int) -> tuple[str, int, int, float]:
    """Trip delay of rule ``index`` on ``net`` and ``seed`` (a worker keeps its env across tasks)."""
    from envs.registry import make_env
    from trainer.rollout import run_episode

    if net not in _ENV:
        for old in _ENV.values():
            old.close()
        _ENV.clear()
        _ENV[net] = make_env(f"sumo:{net}", num_seconds=SECONDS)
    _, rule = rules()[index]
    return net, index, seed, run_episode(_ENV[net], rule, seed).metrics["delay"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["grid4x4", "cologne8"])
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[32], help="tuning seeds: one count, or one per net"
    )
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    from envs.seeds import tuning_seeds

    counts = args.seeds
    if len(counts) == 1:
        counts = counts * len(args.nets)
    seeds = {net: tuning_seeds(n) for net, n in zip(args.nets, counts, strict=True)}
    names = [name for name, _ in rules()]
    tasks = [(net, i, s) for net in args.nets for s in seeds[net] for i in range(len(names))]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(run_one, *zip(*tasks, strict=True)))
    delay = {(net, i, s): d for net, i, s, d in done}
    for net in args.nets:
        base = np.array([delay[(net, 0, s)] for s in seeds[net]])
        rows = []
        for i, name in enumerate(names):
            values = np.array([delay[(net, i, s)] for s in seeds[net]])
            lo, hi = ci95(values - base)
            rows.append(
                {
                    "rule": name,
                    "trip delay (s)": mean_std(values),
                    "ratio": f"{values.mean() / base.mean():.3f}x",
                    "paired diff [95% CI]": "—"
                    if i == 0
                    else f"{(values - base).mean():+.2f} [{lo:+.2f}, {hi:+.2f}]",
                }
            )
        title = f"sumo:{net}, {SECONDS} s, {len(seeds[net])} tuning seeds from {seeds[net][0]}"
        print_table(rows, title=title)
        print(f"\n{title}\n\n{markdown_table(rows)}\n")
    print(f"{len(tasks)} episodes in {time.perf_counter() - t0:.0f} s with {args.workers} workers")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
