"""SUMO speed: our env vs raw libsumo on the same net, and collection throughput with 1 vs 2 processes.

    python bench/sumo_speed.py                      # grid4x4 and cologne8, 1800 simulated s, 3 repeats (as in docs)
    python bench/sumo_speed.py --nets grid4x4 --seconds 3600 --repeats 1

"env" is ``TrafficEnv.step`` driven by the ``fixed`` controller (controller time excluded; a column
adds it). "raw" starts libsumo with the same options (net, routes, seed, tripinfo output) and only
calls ``simulationStep()``, replaying the signal changes the env made (recorded in an untimed run):
the same traffic, vehicle for vehicle (both rows' trip delays must match), with nothing around it.
Each measurement runs in a fresh spawn process (libsumo: one simulation per process); raw and env
alternate and the best of ``--repeats`` is kept, since the machine is shared. Speeds are simulated seconds per second of this process's CPU time
(``time.process_time``; libsumo runs in-process), which other jobs on a shared machine disturb far
less than wall time. Overhead vs raw = 1 - env / raw. Because separate processes still see different
load, the env run also times SUMO inside itself: the share of ``env.step`` time spent outside SUMO is
our overhead measured on the very same steps. "SUMO" there is the libsumo calls the raw run makes as
well (``simulationStep``, ``trafficlight.setRedYellowGreenState``, ``close``); the column after it counts
only ``simulationStep`` (the definition used before 2026-11-25). Collection throughput is wall time
(what a user waits).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sumo_cmd(net: str, seed: int, tripinfo: Path) -> list[str]:
    """The options our env starts SUMO with (sumo-rl's plus our tripinfo output)."""
    from envs.traffic.nets import builtin_net
    from envs.traffic.sumo_setup import sumo_binary

    net_file, route_file, begin = builtin_net(net)
    cmd = [sumo_binary(), "-n", net_file, "-r", route_file, "--max-depart-delay", "-1"]
    cmd += ["--waiting-time-memory", "1000", "--time-to-teleport", "-1", f"-b {begin}", "--seed", str(seed)]
    cmd += [
        "--no-warnings",
        "--tripinfo-output",
        str(tripinfo),
        "--tripinfo-output.write-unfinished",
        "--no-step-log",
    ]
    return cmd


def record_signals(
    net: str, seconds: int, seed: int, controller: str = "fixed"
) -> list[tuple[float, str, str]]:
    """(time, light, state) of every signal change our env makes in one episode (untimed run)."""
    from envs.controllers import build_controller
    from envs.registry import make_env
    from envs.traffic.sumo_setup import import_sumo
    from trainer.rollout import run_episode

    traci, _ = import_sumo()
    events = []
    original = traci.trafficlight.setRedYellowGreenState

    def recording(tl_id, state):
        events.append((traci.simulation.getTime(), tl_id, state))
        original(tl_id, state)

    traci.trafficlight.setRedYellowGreenState = recording
    env = make_env(f"sumo:{net}", num_seconds=seconds)
    run_episode(env, build_controller(env.env_id, controller), seed)
    env.close()
    return events


def raw_libsumo(net: str, seconds: int, seed: int, events: list[tuple[float, str, str]]) -> dict:
    """libsumo alone, replaying the env's signal changes: the same traffic, no env around it."""
    from envs.traffic.env import read_tripinfo
    from envs.traffic.sumo_setup import import_sumo

    traci, _ = import_sumo()
    with tempfile.TemporaryDirectory() as tmp:
        trip = Path(tmp) / "trip.xml"
        set_state = traci.trafficlight.setRedYellowGreenState
        traci.start(_sumo_cmd(net, seed, trip))
        begin = traci.simulation.getTime()
        by_time: dict[float, list[tuple[str, str]]] = {}
        for t, tl, state in events:
            by_time.setdefault(t, []).append((tl, state))
        t0 = time.process_time()
        for k in range(seconds):
            for tl, state in by_time.get(begin + k, ()):
                set_state(tl, state)
            traci.simulationStep()
        traci.close()  # SUMO writes the unfinished trips here; the env's last step does the same
        wall = time.process_time() - t0
        trips = read_tripinfo(trip)
    return {
        "sim_s_per_s": seconds / wall,
        "wall": wall,
        "delay": float(trips["time_loss"][trips["arrived"]].mean()),
    }


def our_env(net: str, seconds: int, seed: int, controller: str = "fixed") -> dict:
    from envs.controllers import build_controller
    from envs.registry import make_env
    from envs.traffic.sumo_setup import import_sumo
    from trainer.rollout import action_rng

    traci, _ = import_sumo()
    in_sumo = {"step": 0.0, "calls": 0.0}

    def timed(fn, key):  # SUMO's own share, timed inside the same run (robust to load drifts)
        def wrapper(*args):
            t = time.process_time()
            try:
                return fn(*args)
            finally:
                in_sumo[key] += time.process_time() - t

        return wrapper

    # the libsumo calls the raw run makes too: stepping, setting signal states, closing (SUMO then
    # writes the unfinished trips)
    traci.simulationStep = timed(traci.simulationStep, "step")
    traci.trafficlight.setRedYellowGreenState = timed(traci.trafficlight.setRedYellowGreenState, "calls")
    traci.close = timed(traci.close, "calls")
    env = make_env(f"sumo:{net}", num_seconds=seconds)
    ctrl = build_controller(env.env_id, controller)
    obs, infos = env.reset(seed=seed)
    in_sumo.update(step=0.0, calls=0.0)  # reset() set the programs; only env.step is measured
    ctrl.reset(env, seed)
    rng = action_rng(seed)
    step_wall = ctrl_wall = 0.0
    steps = 0
    while env.agents:
        t0 = time.process_time()
        actions, _ = ctrl.act(env, obs, infos, rng)
        env.state()
        t1 = time.process_time()
        obs, _, _, _, infos = env.step(actions)
        step_wall += time.process_time() - t1
        ctrl_wall += t1 - t0
        steps += 1
    delay = env.episode_metrics()["delay"]
    env.close()
    return {
        "sim_s_per_s": seconds / step_wall,
        "steps_per_s": steps / step_wall,
        "with_controller_sim_s_per_s": seconds / (step_wall + ctrl_wall),
        "outside_sumo": 1 - (in_sumo["step"] + in_sumo["calls"]) / step_wall,
        "outside_step": 1 - in_sumo["step"] / step_wall,
        "delay": delay,
    }


def collect_rate(workers: int, episodes: int, seconds: int, out: str) -> dict:
    from trainer.collect import collect

    t0 = time.perf_counter()
    results = collect(
        "sumo:grid4x4",
        out,
        controller="max-pressure@eps=0.1",
        episodes=episodes,
        workers=workers,
        chunk_size=1,
        env_kwargs={"num_seconds": seconds},
        progress=False,
    )
    wall = time.perf_counter() - t0
    steps = sum(r.length for r in results)
    return {"episodes_per_min": 60 * episodes / wall, "agent_steps_per_s": 16 * steps / wall, "wall": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["grid4x4", "cologne8"])
    p.add_argument("--seconds", type=int, default=1800)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--collect-episodes", type=int, default=8)
    p.add_argument("--collect-seconds", type=int, default=900)
    args = p.parse_args(argv)
    ctx = get_context("spawn")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print(
        "| net | raw libsumo (sim-s/s) | our env.step (sim-s/s) | env decisions/s | overhead vs raw | "
        "env.step time outside SUMO (same run, median) | outside simulationStep only | "
        "env + fixed controller (sim-s/s) | delay raw / env (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for net in args.nets:
        raws, envs = [], []
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            events = pool.submit(record_signals, net, args.seconds, 0).result()
        for _ in range(args.repeats):
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                raws.append(pool.submit(raw_libsumo, net, args.seconds, 0, events).result())
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                envs.append(pool.submit(our_env, net, args.seconds, 0).result())
        raw = max(raws, key=lambda m: m["sim_s_per_s"])
        env = max(envs, key=lambda m: m["sim_s_per_s"])
        for key in ("outside_sumo", "outside_step"):
            env[key] = sorted(m[key] for m in envs)[len(envs) // 2]
        print(
            f"| {net} | {raw['sim_s_per_s']:.0f} | {env['sim_s_per_s']:.0f} | {env['steps_per_s']:.0f} | "
            f"{100 * (1 - env['sim_s_per_s'] / raw['sim_s_per_s']):.1f} % | {100 * env['outside_sumo']:.1f} % | "
            f"{100 * env['outside_step']:.1f} % | "
            f"{env['with_controller_sim_s_per_s']:.0f} | {raw['delay']:.1f} / {env['delay']:.1f} |"
        )
    print()
    print(
        f"collection: sumo:grid4x4, max-pressure@eps=0.1, {args.collect_episodes} episodes x "
        f"{args.collect_seconds} s, Parquet log written"
    )
    print("| processes | episodes/min | agent-steps/s | wall (s) | speed-up |")
    print("|---|---|---|---|---|")
    base = None
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(1, mp_context=ctx) as pool:
            m = pool.submit(collect_rate, workers, args.collect_episodes, args.collect_seconds, tmp).result()
        base = base or m["wall"]
        print(
            f"| {workers} | {m['episodes_per_min']:.1f} | {m['agent_steps_per_s']:.0f} | {m['wall']:.1f} | "
            f"{base / m['wall']:.2f}x |"
        )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
