"""Reproduce the traffic baselines (docs/traffic.md): mean completed-trip delay per net and controller.

    python bench/traffic_baselines.py                       # grid4x4, cologne8, ingolstadt21; seeds 0-2
    python bench/traffic_baselines.py --nets grid4x4 --seeds 0 --no-native

Each episode is 3600 simulated s with sumo-rl's defaults (delta 5 / yellow 2 / min-green 5), run in
a spawn process pool (libsumo: one simulation per process). Prints a markdown table against the
published reference numbers (the `reference` column of docs/traffic.md, "Baselines"), writes ``results.csv`` and per-net PNGs
(delay per controller, queue over time) under ``--out``. ``--native`` adds sumo-rl's
``fixed_ts=True`` (SUMO running the net's program itself), the definition of "fixed" behind those numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# mean completed-trip delay (s), 3600 s, seeds 0-2: the reference figures of docs/traffic.md "Baselines"
REFERENCE = {
    ("grid4x4", "fixed"): 91.7,
    ("grid4x4", "max-pressure"): 38.5,
    ("cologne8", "fixed"): 49.1,
    ("cologne8", "max-pressure"): 26.6,
    ("ingolstadt21", "fixed"): 140.5,
    ("ingolstadt21", "max-pressure"): 86.0,
}
NATIVE = "fixed (native fixed_ts)"

_ENV = {}


def _env(net: str):
    from envs.registry import make_env

    if net not in _ENV:
        for old in _ENV.values():
            old.close()
        _ENV.clear()
        _ENV[net] = make_env(f"sumo:{net}")
    return _ENV[net]


def run_one(net: str, controller: str, seed: int):
    """One 3600-s episode in this worker process; returns (net, controller, seed, metrics, extras, seconds)."""
    t0 = time.perf_counter()
    if controller == NATIVE:
        metrics = run_native_fixed(net, seed)
        return net, controller, seed, metrics, {}, time.perf_counter() - t0
    from envs.controllers import build_controller
    from trainer.rollout import run_episode

    env = _env(net)
    result = run_episode(env, build_controller(env.env_id, controller), seed)
    return net, controller, seed, result.metrics, result.extras, time.perf_counter() - t0


def run_native_fixed(net: str, seed: int) -> dict:
    """sumo-rl with ``fixed_ts=True``: SUMO runs the net's static program (not loggable, see docs)."""
    import tempfile

    from envs.traffic.env import read_tripinfo
    from envs.traffic.nets import builtin_net
    from envs.traffic.sumo_setup import import_sumo

    for old in _ENV.values():
        old.close()
    _ENV.clear()
    _, sumo_rl = import_sumo()
    net_file, route_file, begin = builtin_net(net)
    with tempfile.TemporaryDirectory() as tmp:
        trip = Path(tmp) / "trip.xml"
        env = sumo_rl.SumoEnvironment(
            net_file=net_file,
            route_file=route_file,
            begin_time=begin,
            num_seconds=3600,
            fixed_ts=True,
            sumo_seed=seed,
            add_system_info=False,
            add_per_agent_info=False,
            sumo_warnings=False,
            additional_sumo_cmd=f"--tripinfo-output {trip} --tripinfo-output.write-unfinished --no-step-log",
        )
        env.reset(seed=seed)
        while env.sim_step < begin + 3600:
            env.step({})
        env.close()
        trips = read_tripinfo(trip)
    done = trips["arrived"]
    return {
        "delay": float(trips["time_loss"][done].mean()),
        "delay_all": float(trips["time_loss"].mean()),
        "throughput": float(done.sum()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["grid4x4", "cologne8", "ingolstadt21"])
    p.add_argument("--controllers", nargs="+", default=["fixed", "max-pressure"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--native", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", default="docs/traffic")
    args = p.parse_args(argv)

    controllers = list(args.controllers) + ([NATIVE] if args.native else [])
    tasks = [(n, c, s) for n in args.nets for c in controllers for s in args.seeds]
    # longest first: ingolstadt21 episodes take ~10x a cologne8 one
    tasks.sort(key=lambda t: {"ingolstadt21": 0}.get(t[0], 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(run_one, *zip(*tasks, strict=True)))
    wall = time.perf_counter() - t0

    rows = []
    with open(out / "results.json", "w") as f:  # with the queue traces, to redraw plots without rerunning
        json.dump(
            [
                dict(zip(("net", "controller", "seed", "metrics", "extras", "seconds"), r, strict=True))
                for r in done
            ],
            f,
        )
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["net", "controller", "seed", "delay", "delay_all", "throughput", "avg_queue", "seconds"])
        for net, ctrl, seed, m, _, sec in sorted(done, key=lambda r: r[:3]):
            w.writerow(
                [net, ctrl, seed, m["delay"], m["delay_all"], m["throughput"], m.get("avg_queue", ""), sec]
            )
    print(
        f"| net | controller | delay (s), seeds {','.join(map(str, args.seeds))} | per seed | "
        "reference | deviation | delay incl. unfinished | trips |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for net in args.nets:
        for ctrl in controllers:
            ms = [m for n, c, _, m, _, _ in sorted(done, key=lambda r: r[:3]) if n == net and c == ctrl]
            d = np.array([m["delay"] for m in ms])
            ref = REFERENCE.get((net, "fixed" if ctrl == NATIVE else ctrl))
            dev = f"{100 * (d.mean() / ref - 1):+.1f} %" if ref else "-"
            rows.append((net, ctrl, d.mean(), ref))
            print(
                f"| {net} | {ctrl} | {d.mean():.1f} ± {d.std():.1f} | {' / '.join(f'{x:.1f}' for x in d)} | "
                f"{ref if ref else '-'} | {dev} | {np.mean([m['delay_all'] for m in ms]):.1f} | "
                f"{np.mean([m['throughput'] for m in ms]):.0f} |"
            )
    from envs.traffic.plots import plot_eval
    from trainer.rollout import EpisodeResult

    for net in args.nets:
        by_ctrl = {}
        for n, c, s, m, extras, _ in sorted(done, key=lambda r: r[:3]):
            if n == net and c != NATIVE:
                by_ctrl.setdefault(c, []).append(EpisodeResult(s, c, 0.0, 720, m, extras))
        paths = plot_eval(by_ctrl, out / net, title=f"{net}: 3600 s, seeds {args.seeds}")
        print(f"plots: {', '.join(map(str, paths))}")
    print(f"{len(tasks)} episodes in {wall:.0f} s wall with {args.workers} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
