"""Where should an idle car park? The truth of the whole parking choice, by paired simulation.

    .venv/bin/python bench/parking_truth.py                      # 40 held-out spell starts, 32 futures, ~10 min
    .venv/bin/python bench/parking_truth.py --states 20 --futures 16
    .venv/bin/python bench/parking_truth.py --reuse-raw           # the summary again from the saved returns

The logged experiment ``etd@exp=1`` draws one parking floor at the start of every idle spell
(envs/elevator/experiment.py), and the learner sees it as a chain of per-floor stop/continue decisions.
bench/linear_heads.py ``--stop-effects`` shows that chain's fitted effects alternate in sign from floor to
floor (docs/algorithm.md, "Where the down-peak gain comes from"). This bench measures the choice the
experiment actually randomises, the parking floor of a spell, from the states where it is made:

1. Held-out spell starts: episodes of ``etd@exp=1`` on tuning seeds (20000+), a snapshot where an idle
   car's choice is random (bench/advantage_truth.py's ``snapshots``), the teammates' actions at that step
   fixed to one draw of the behaviour.
2. For every floor ``f``, ``--futures`` paired rollouts from a copy of the building with the car's spell
   target forced to ``f`` and the behaviour everywhere else (and for this car once the spell ends),
   discounted as the learner discounts, in its reward units: ``Q(s, park at f)``.
3. Printed: how much the floor matters (the spread of ``Q`` over floors against its paired SE), which
   floors are best on average (pooled over states, relative to the state's mean over floors), how often
   each floor is a state's best, and whether the best floor depends on where the teammates wait (the
   best floor's distance from the nearest other idle car, against that of a floor drawn uniformly), and
   ``Q`` regressed on bench/parking_choice.py's features of the target floor (the floor, its square, idle
   teammates at it and one floor away): the truth of the coefficients that bench fits from the log.

Tuning seeds only, never evaluation seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

BEHAVIOUR = "etd@exp=1"
RAW = ROOT / "bench" / ".cache" / "parking_truth_raw.npz"  # every rollout's return, [states, floors, futures]


def parked_rollout(job) -> float:
    """Discounted reward of one future with the car's spell target forced to ``floor``."""
    from advantage_truth import future_copy, return_after

    env0, ctl0, car, actions, floor, future, discount, horizon_s, gamma = job
    env, ctl, rng, obs, infos = future_copy(env0, ctl0, future)
    ctl.distribution(env, obs, infos)  # opens the car's spell: every candidate target
    ctl.spells[car] = {floor: 1.0}  # the draw, made for it
    dist = ctl.distribution(env, obs, infos)
    first = dict(actions)
    agent = env.possible_agents[car]
    first[agent] = int(np.argmax(dist[agent]))
    return return_after(env, ctl, first, rng, discount, horizon_s, gamma)


def other_idle_floors(snap) -> list[float]:
    """Floors of the car's idle teammates (no riders) at the snapshot."""
    from envs.elevator.core import IDLE

    core = snap["env"].core
    return [
        float(core.pos[0, c])
        for c in range(core.C)
        if c != snap["car"] and core.mode[0, c] == IDLE and core.load[0, c] == 0
    ]


def teammate_interaction(snaps, value: np.ndarray, floors: int) -> dict:
    """The truth's ``Q(f)`` regressed on bench/parking_choice.py's features of the target floor (the floor,
    its square, idle teammates at it and one floor away), each state's mean over floors removed: the
    coefficients that fit estimates from the log, with SE by jackknife over states."""
    from parking_choice import FEATURES, target_features

    from trainer.report import jackknife_se

    every = np.arange(floors, dtype=np.float64)
    xs = []
    for snap in snaps:
        others = other_idle_floors(snap)
        pos = np.array([others + [-99.0] * (snap["env"].core.C - 1 - len(others))])  # -99: no car
        x = target_features(every, pos, pos > -50, floors)[0]
        xs.append(x - x.mean(0))
    x, y = np.stack(xs), value - value.mean(1, keepdims=True)

    def solve(keep):
        a, b = x[keep].reshape(-1, x.shape[-1]), y[keep].reshape(-1)
        return np.linalg.lstsq(a, b, rcond=None)[0]

    theta = solve(np.ones(len(snaps), bool))
    loo = np.stack([solve(np.arange(len(snaps)) != k) for k in range(len(snaps))])
    se = jackknife_se(loo)
    print("the truth's Q(f) on the target floor's features (x1e-3; SE over states):")
    print(
        "  "
        + ", ".join(
            f"{n} {t * 1e3:+.3f} ({e * 1e3:.3f})" for n, t, e in zip(FEATURES, theta, se, strict=True)
        )
    )
    return {"features": list(FEATURES), "theta": theta.tolist(), "se": se.tolist()}


def behaviour(choice: Path | None, p: float):
    """The behaviour whose spells are measured: the log's ``etd@exp=1``, or, with ``choice``, ETD parking
    idle cars by that fitted ``Q(f | teammates)`` (bench/parking_choice.py) with the parking experiment on
    top at probability ``p``: the one-step values a second round of logging would measure."""
    from advantage_truth import ENV

    from envs.controllers import build_controller
    from envs.elevator.experiment import ParkingExperiment

    if choice is None:
        return build_controller(ENV, BEHAVIOUR)
    from parking_choice import ChoiceParking

    return ParkingExperiment(ChoiceParking(choice), p)


def spells_per_episode(seeds, ctl0) -> float:
    """Idle spells the experiment opens per episode (each draws a parking floor), over ``seeds``."""
    from advantage_truth import ENV

    from envs.registry import make_env
    from trainer.rollout import action_rng

    counts = []
    for seed in seeds:
        env, ctl = make_env(ENV), copy.deepcopy(ctl0)
        obs, infos = env.reset(seed=seed)
        ctl.reset(env, seed)
        rng, opened = action_rng(seed), 0
        while env.agents:
            before = [s is None for s in ctl.spells]
            actions, _ = ctl.act(env, obs, infos, rng)
            opened += sum(b and s is not None for b, s in zip(before, ctl.spells, strict=True))
            obs, _, _, _, infos = env.step(actions)
        counts.append(opened)
    return float(np.mean(counts))


def spell_noise(q: np.ndarray) -> float:
    """The spread of one future's return around the mean over futures of its (state, floor), ``q`` being
    ``[states, floors, futures]``: root mean square over states and floors (what a mean over spells pays;
    the noise grows with how busy the state is, so a median would be lower)."""
    return float(np.sqrt((q.std(2, ddof=1) ** 2).mean()))


def episodes_needed(sd_profile: float, noise: float, spells: float, floors: int, corr: float) -> float:
    """Episodes for an unbiased per-floor mean with residual ``noise`` per spell to correlate ``corr``
    (in expectation) with a floor profile of spread ``sd_profile``: corr^2 = var / (var + SE^2)."""
    se = sd_profile * np.sqrt(1.0 / corr**2 - 1.0)
    return (noise / se) ** 2 * floors / spells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--states", type=int, default=40)
    p.add_argument("--futures", type=int, default=32)
    p.add_argument("--tuning-episodes", type=int, default=4)
    p.add_argument("--every", type=int, default=40)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reward-scale", type=float, help="divide returns by it (default: 1, raw team reward)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "parking_truth.json")
    p.add_argument(
        "--behaviour-choice",
        type=Path,
        help="measure the spells of ETD parking by this bench/parking_choice.py --save file (or a truth "
        "file of this bench) with the experiment on top at --p, instead of etd@exp=1: a second round",
    )
    p.add_argument(
        "--p", type=float, default=0.2, help="the experiment's probability with --behaviour-choice"
    )
    p.add_argument(
        "--raw",
        type=Path,
        default=RAW,
        help="every rollout's return, [states, floors, futures], for analyses after the run",
    )
    p.add_argument(
        "--reuse-raw",
        action="store_true",
        help="take the returns from --raw (an earlier run's, same states and futures) instead of simulating again",
    )
    args = p.parse_args()
    import advantage_truth
    from tqdm.auto import tqdm

    from envs.seeds import tuning_seeds

    c = advantage_truth.estimator_config("residual", {}, advantage_truth.ENV)
    ctl = behaviour(args.behaviour_choice, args.p)
    t0 = time.time()
    per_episode = -(-args.states // args.tuning_episodes)
    snaps = [
        s
        for seed in tuning_seeds(args.tuning_episodes)
        for s in advantage_truth.snapshots(seed, args.every, per_episode, ctl)
    ][: args.states]
    floors = snaps[0]["env"].building.n_floors
    jobs = [
        (
            s["env"],
            s["controller"],
            s["car"],
            s["actions"],
            f,
            40_000_000 + i * 100 + r,
            c.discount,
            c.horizon_s,
            c.gamma,
        )
        for i, s in enumerate(snaps)
        for f in range(floors)
        for r in range(args.futures)
    ]
    if args.reuse_raw:
        q = np.load(args.raw)["q"]
        if q.shape != (len(snaps), floors, args.futures):
            raise SystemExit(
                f"{args.raw} holds {q.shape}, not ({len(snaps)}, {floors}, {args.futures}): run without --reuse-raw"
            )
    else:
        with ProcessPoolExecutor(args.workers, mp_context=get_context("fork")) as pool:
            values = list(tqdm(pool.map(parked_rollout, jobs, chunksize=4), total=len(jobs), desc="rollouts"))
        q = np.array(values).reshape(len(snaps), floors, args.futures) / (args.reward_scale or 1.0)
        args.raw.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.raw, q=q)
    print(f"{len(snaps)} spell starts x {floors} floors x {args.futures} futures [{time.time() - t0:.0f}s]")

    centred = q - q.mean(1, keepdims=True)  # per future: each floor against the state's mean over floors
    value = centred.mean(2)  # [states, floors]
    se = centred.std(2, ddof=1) / np.sqrt(args.futures)
    spread = value.std(1, ddof=1)
    print(
        f"how much the floor matters: spread of Q over floors per state, median {np.median(spread):.4g} "
        f"against a paired SE of {np.median(se):.4g}; states where the best floor beats the state's mean "
        f"by > 2 SE: {int((value.max(1) > 2 * se[np.arange(len(snaps)), value.argmax(1)]).sum())} of {len(snaps)}"
    )
    pooled, pooled_se = value.mean(0), value.std(0, ddof=1) / np.sqrt(len(snaps))
    best = value.argmax(1)
    print("floor   pooled Q - state mean (SE over states)   best floor of how many states")
    for f in range(floors):
        print(f"  {f}     {pooled[f]:+.4g} ({pooled_se[f]:.2g})   {int((best == f).sum())}")
    near_best, near_random = [], []
    for s, b in zip(snaps, best, strict=True):
        others = other_idle_floors(s)
        if others:
            near_best.append(min(abs(b - o) for o in others))
            near_random.append(np.mean([min(abs(f - o) for o in others) for f in range(floors)]))
    if near_best:
        print(
            f"distance of the best floor from the nearest idle teammate: {np.mean(near_best):.2f} floors, "
            f"against {np.mean(near_random):.2f} for a uniform floor ({len(near_best)} states with an idle teammate)"
        )
    interaction = teammate_interaction(snaps, value, floors)
    # The noise one spell's outcome carries: around its state's mean (the state known), and around its
    # future's mean over floors (the arrivals to come known too).
    noise_state, noise_future = spell_noise(q), spell_noise(centred)
    spells = spells_per_episode(tuning_seeds(args.tuning_episodes), ctl)
    sd_profile = float(pooled.std(ddof=1))
    print(
        f"one spell's return: spread {noise_state:.3g} around its state's mean, {noise_future:.3g} around its "
        f"future's mean over floors; {spells:.0f} spell starts per episode; the pooled profile's spread over "
        f"floors {sd_profile:.3g}"
    )
    needed = {
        name: {str(r): episodes_needed(sd_profile, noise, spells, floors, r) for r in (0.5, 0.8, 0.9)}
        for name, noise in (("state known", noise_state), ("state and arrivals known", noise_future))
    }
    print("episodes of the experiment for an unbiased floor profile to correlate r with the truth")
    print("  baseline knows                 r = 0.5   r = 0.8   r = 0.9")
    for name, row in needed.items():
        print(f"  {name:<30}" + "".join(f"{row[r]:>9.0f} " for r in row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": "bench/parking_truth.py " + " ".join(sys.argv[1:]),
                "states": len(snaps),
                "futures": args.futures,
                "pooled": pooled.tolist(),
                "pooled_se": pooled_se.tolist(),
                "best_counts": np.bincount(best, minlength=floors).tolist(),
                "median_spread": float(np.median(spread)),
                "median_se": float(np.median(se)),
                "noise_state": noise_state,
                "noise_future": noise_future,
                "spells_per_episode": spells,
                "profile_spread": sd_profile,
                "episodes_needed": needed,
                "target_features": interaction,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
