"""What is one policy-improvement step over ETD worth? Simulator-in-the-loop rollouts (a design aid).

    .venv/bin/python bench/elevator_rollout_bound.py                     # down-peak, tuning seeds 20000-20001
    .venv/bin/python bench/elevator_rollout_bound.py --seeds 4 --samples 8 --horizon 120 --workers 2
    .venv/bin/python bench/elevator_rollout_bound.py --clairvoyant       # knows the real future (an upper bound)

At every decision step the rollout controller considers ETD's joint action and every one-car deviation
from it. Each candidate is played on copies of the building for ``--horizon`` simulated seconds, ETD
deciding after the first step, and scored by the passengers' accumulated waiting (the linear-wait reward) over the same window.
The copies do **not** know the real future: each gets its passengers-to-come from a fresh draw of the
same traffic profile (``ElevatorEnv.resample_future``), ``--samples`` draws per step shared by all
candidates (common random numbers). They do know the present exactly, including how many passengers
wait where and where they go, which the cars' observations do not show (hall buttons and the oldest
wait only). A deviation is taken only when its paired advantage over ETD's action is clear (mean >
``--z`` standard errors). That is the classic rollout algorithm: one policy improvement step over ETD
with ETD's value estimated by simulation from the full present state, so it bounds from above what a
learner that recovered Q^ETD from observations could gain in one step. ``--clairvoyant`` keeps the real
future in the copies (no sampling): an upper bound no controller can reach.

Also prints which deviations the rollouts chose (car mode, ETD's action -> chosen action): they show
where the headroom over ETD lies. Runs on tuning seeds only. Slow: ~8 CPU-min per episode at the
defaults (2,000 decision steps x (1 + deviations) candidates x samples x horizon).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODES = {0: "idle", 1: "moving", 2: "doors open"}


def etd_actions(etd, env, obs, infos) -> dict[str, int]:
    dist = etd.distribution(env, obs, infos)
    return {a: int(np.argmax(dist[a])) for a in env.possible_agents}


def rollout_value(etd, start, first: dict[str, int], horizon: float) -> float:
    """Reward collected on a copy of ``start``: ``first``, then ETD, over exactly ``horizon`` simulated
    seconds (to the tick): every candidate is scored over the same window, so none gains by stopping
    earlier (a decision step normally runs on to the next decision)."""
    sim = copy.deepcopy(start)
    end, dt = sim.sim_time() + horizon, sim.core.dt
    total, actions = 0.0, first
    while sim.agents:
        ticks_left = int(round((end - sim.sim_time()) / dt))
        if ticks_left <= 0:
            break
        sim.max_ticks_per_step = max(1, ticks_left - 1)  # the decision tick + the forced ticks after it
        obs, rewards, _, _, infos = sim.step(actions)
        total += sim.team_reward(rewards)
        actions = etd_actions(etd, sim, obs, infos)
    return total


def run_seed(job: tuple) -> dict:
    from envs.elevator.controllers import ETD
    from envs.registry import make_env

    env_id, seed, samples, horizon, z, clairvoyant = job
    etd = ETD()
    out = {}
    for mode in ("etd", "rollout"):
        env = make_env(env_id, reward="wait", assignment_obs=False)  # only rules act here: skip the bits
        obs, infos = env.reset(seed=seed)
        started, steps, kinds = time.process_time(), 0, Counter()
        while env.agents:
            base = etd_actions(etd, env, obs, infos)
            act = base
            candidates = [base]
            for agent in env.possible_agents:
                for b in np.flatnonzero(infos[agent]["action_mask"]):
                    if b != base[agent]:
                        candidates.append({**base, agent: int(b)})
            if mode == "rollout" and len(candidates) > 1:
                starts = []
                for k in range(1 if clairvoyant else samples):
                    start = copy.deepcopy(env)
                    if not clairvoyant:  # sampled futures: seeds far from every seed list of envs.seeds
                        start.resample_future(1_000_000_000 + (seed * 10_000 + steps) * samples + k)
                    starts.append(start)
                values = np.array([[rollout_value(etd, s, c, horizon) for s in starts] for c in candidates])
                gain = values[1:] - values[0]  # paired with ETD's own action
                if clairvoyant:
                    clear = gain[:, 0] > 1e-12
                else:
                    se = gain.std(axis=1, ddof=1) / np.sqrt(samples)
                    clear = gain.mean(axis=1) > z * se + 1e-12
                if clear.any():
                    best = int(np.argmax(np.where(clear, gain.mean(axis=1), -np.inf)))
                    act = candidates[1 + best]
                    car = next(i for i, a in enumerate(env.possible_agents) if act[a] != base[a])
                    agent = env.possible_agents[car]
                    names = env.action_names
                    mode_name = MODES.get(int(env.core.l_mode[car]), "?")
                    kinds[f"{mode_name}: {names[base[agent]]} -> {names[act[agent]]}"] += 1
            obs, _, _, _, infos = env.step(act)
            steps += 1
        m = env.episode_metrics()
        out[mode] = {
            "avg_wait": m["avg_wait"],
            "avg_sq_wait": m["avg_sq_wait"],
            "steps": steps,
            "deviations": sum(kinds.values()),
            "kinds": dict(kinds.most_common()),
            "cpu_s": time.process_time() - started,
        }
    return {"seed": seed, **out}


def main() -> None:
    from envs.seeds import tuning_seeds
    from trainer.report import mean_std, print_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="elevator:cb10x4:downpeak")
    parser.add_argument("--seeds", type=int, default=2, help="number of tuning seeds")
    parser.add_argument("--samples", type=int, default=8, help="sampled futures per decision step")
    parser.add_argument("--horizon", type=float, default=120.0, help="simulated seconds per rollout")
    parser.add_argument("--z", type=float, default=2.0, help="deviate when mean gain > z standard errors")
    parser.add_argument("--clairvoyant", action="store_true", help="rollouts see the real future")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.samples < 2 and not args.clairvoyant:
        parser.error("--samples must be at least 2 (the deviation test needs a standard error)")
    jobs = [
        (args.env, s, args.samples, args.horizon, args.z, args.clairvoyant) for s in tuning_seeds(args.seeds)
    ]
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(run_seed, jobs))
    label = "clairvoyant rollout" if args.clairvoyant else f"rollout ({args.samples} sampled futures)"
    rows = []
    for r in results:
        rows.append(
            {
                "seed": r["seed"],
                "etd avg wait (s)": f"{r['etd']['avg_wait']:.2f}",
                f"{label} (s)": f"{r['rollout']['avg_wait']:.2f}",
                "ratio": f"{r['rollout']['avg_wait'] / r['etd']['avg_wait']:.3f}",
                "deviations / steps": f"{r['rollout']['deviations']} / {r['rollout']['steps']}",
                "cpu (s)": f"{r['rollout']['cpu_s']:.0f}",
            }
        )
    ratios = [r["rollout"]["avg_wait"] / r["etd"]["avg_wait"] for r in results]
    rows.append({"seed": "mean", "ratio": mean_std(ratios)})
    print_table(rows, title=f"{args.env}: one-step rollout over ETD, horizon {args.horizon:g} s")
    kinds: Counter = Counter()
    for r in results:
        kinds.update(r["rollout"]["kinds"])
    print_table(
        [{"deviation (car mode: etd -> chosen)": k, "count": n} for k, n in kinds.most_common()],
        title="where the rollouts left ETD",
    )


if __name__ == "__main__":
    main()
