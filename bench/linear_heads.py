"""Linear advantage heads fitted in closed form: do they see what the networks' heads cannot?

    .venv/bin/python bench/linear_heads.py --set baseline_inputs=state+exogenous
    .venv/bin/python bench/linear_heads.py --behaviour etd@exp=1 --features pooled floor car obs \
        --set baseline_inputs=state+exogenous
    .venv/bin/python bench/linear_heads.py --behaviour etd@exp=1 --features obs+ordinal dec --parts 2 \
        --weights precision --set baseline_inputs=state+exogenous   # does the fit replicate across logs?
    .venv/bin/python bench/linear_heads.py --behaviour etd@exp=1 --features obs+ordinal obs --stop-effects \
        --weights precision --noise-by-value --set baseline_inputs=state+exogenous   # rows weighted by their noise

The log is bench/advantage_truth.py's of ``--behaviour`` (300 episodes of ``etd@exp=0.2`` by default, or of
``etd@exp=1``: the p = 1 log of docs/algorithm.md, "Linear heads, and a log with more randomised decisions"),
collected here if absent, and the truth shown is that behaviour's (``bench/advantage_truth.py --futures 32
--states 40 --behaviour B`` caches it).

The residual estimator's network heads never beat the all-zero advantage on held-out episodes
(bench/heads_holdout.py): Adam on a gradient that is mostly noise keeps them at the noise's size. This
bench fits the same R-learner regression, ``G - b(s, z) ~ sum_a (1[a_i = a] - e_i(a)) A_i(a | x)``, with
``A_i(a | x) = theta_a . x`` linear in a small feature vector ``x``, by ridge regression in closed form on
every row where a car's logged choice was random. The ridge strength is chosen on held-out episodes
(5 folds of whole episodes; the R-loss needs no simulator), and the chosen fit is compared with the cached
paired-simulation truth of ``bench/advantage_truth.py --futures 32 --states 40`` (held-out tuning states):
correlation, sign accuracy on the clear pairs. Feature sets:

* ``pooled``: the constant only: one effect per action, the pooled regression of bench/return_bias.py;
* ``floor``: the constant, where the car decides (one-hot floor), its direction and its mode;
* ``car``: the constant and the car's own block of the observation (position, direction, mode, load, car
  calls, decision floor), z-scored;
* ``obs``: the constant and the car's whole observation (and the hall calls, the other cars, the time of
  day), z-scored: what ``adv_heads = "linear"`` uses (trainer/algos/linear_heads.py);
* ``obs+agent``: and the car's one-hot;
* ``obs+ordinal``: ``obs`` with the decision floor as ``adv_ordinal`` reads it: a quadratic in the floor
  (3 coefficients per action) instead of one per floor;
* ``dec``: the constant, direction and mode one-hots and that quadratic only (10 coefficients per action).

The bench fits one model for all cars (the trainer's prior); it needs the truth cache, like
bench/heads_holdout.py. ``--stop-effects`` adds, per floor, the fit's effect of stopping against going on
for an empty car moving up (where the log says to park; docs/algorithm.md, "Where the down-peak gain
comes from"). Feature sets with ``+rel`` add where the other cars are relative to the deciding floor
(``relative``), ``+rel+dfx`` those counts per decision floor. ``--weights precision`` weights each row by
1 / the residual's variance given the baseline's value (``adv_weights = "precision"``), and
``--noise-by-value`` prints that variance by value beside the simulator's own noise (docs/algorithm.md,
"Calm rows and busy rows"). ``--parts N`` splits the log into N disjoint logs and fits each feature set on
every part: the per-floor stop effects side by side, and at the row level whether the fits' variation
*within* a floor (what the rest of the observation adds) agrees between parts (docs/algorithm.md, "One
advantage per decision").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from envs.elevator.features import IDLE_ABOVE, empty_moving_up, teammates_relative  # noqa: E402
from trainer.algos.linear_heads import linear_features, precision_weights  # noqa: E402
from trainer.report import jackknife_se  # noqa: E402

RIDGES = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)


FLOORS = 10  # cb10x4; the observation's layout: envs/elevator/core.py, ElevatorCore.observe
CAR_BLOCK = 8 + 2 * FLOORS  # position, direction (3), mode (3), load, car calls (F), decision floor (F)


def relative(obs: np.ndarray, n_agents: int) -> np.ndarray:
    """The ``+rel`` features: envs/elevator/features.py's ``teammates_relative`` (what ``adv_teammates`` adds)."""
    return teammates_relative(obs, FLOORS, n_agents)


def trainer_features(obs: np.ndarray, mean, std, ordinal: list[tuple[int, int]]) -> np.ndarray:
    """trainer/algos/linear_heads.py's ``linear_features`` on numpy rows (the constant first)."""
    as_t = torch.as_tensor
    return linear_features(as_t(obs), as_t(mean), as_t(std), ordinal).numpy()


def features(kind: str, obs: np.ndarray, agent: np.ndarray, mean, std, n_agents: int) -> np.ndarray:
    """``[n, dx]``: the constant, then the feature set ``kind`` of the module docstring."""
    parts = [np.ones((len(obs), 1))]
    if "+rel" in kind:
        rel = relative(obs, n_agents)
        parts.append(rel)
        if "+rel+dfx" in kind:  # each decision floor its own coefficients on the counts above / below / at
            dfloor = obs[:, 8 + FLOORS : CAR_BLOCK]
            parts.append((dfloor[:, :, None] * rel[:, None, [0, 3, 4, 5, 6, 7]]).reshape(len(obs), -1))
    decision_floor = [(8 + FLOORS, CAR_BLOCK)]  # read as adv_ordinal reads it (the trainer's features)
    if kind.startswith("obs"):  # +ordinal: with the decision floor as a quadratic
        ordinal = decision_floor if "+ordinal" in kind else []
        parts.append(trainer_features(obs, mean, std, ordinal)[:, 1:])
    if kind.startswith("dec"):  # direction and mode one-hots and the decision floor's quadratic
        parts.append(
            np.concatenate([obs[:, 1:7], trainer_features(obs, mean, std, decision_floor)[:, -3:]], 1)
        )
    if kind.startswith("floor"):  # direction and mode one-hots, then the decision floor's
        parts.append(obs[:, np.r_[1:7, 8 + FLOORS : CAR_BLOCK]])
    if "+agent" in kind:
        parts.append(np.eye(n_agents)[agent])
    return np.concatenate(parts, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", type=Path, help="default: bench/advantage_truth.py's log of --behaviour")
    p.add_argument("--episodes", type=int, default=300)
    p.add_argument("--features", nargs="+", default=["pooled", "obs", "obs+agent"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--futures", type=int, default=32)
    p.add_argument(
        "--behaviour", default="etd@exp=0.2", help="the log's experiment, whose cached truth is shown"
    )
    p.add_argument("--states", type=int, default=40)
    p.add_argument(
        "--parts",
        type=int,
        default=0,
        help="instead: split the log into this many disjoint parts and fit each --features set on each "
        "(baseline included), printing how far the per-floor stop effect moves from part to part and whether "
        "the fits' row-to-row variation within a floor agrees between parts",
    )
    p.add_argument(
        "--weights",
        choices=("equal", "precision"),
        default="equal",
        help="row weights of the fit: equal, or 1 / the residual's variance given the baseline's value "
        "(linear_heads.precision_weights: generalised least squares)",
    )
    p.add_argument(
        "--noise-by-value",
        action="store_true",
        help="also print the residual's std at idle cars' random rows by bins of the baseline's value, beside "
        "the noise of one spell's return given the whole simulator state (bench/parking_truth.py's raw file)",
    )
    p.add_argument(
        "--stop-effects",
        action="store_true",
        help="also print, per floor, the chosen fit's effect of stopping against continuing for an empty car "
        "moving up, with its jackknife SE over the folds (where to park, as the log resolves it)",
    )
    args = p.parse_args()
    import advantage_truth

    from trainer.algos import linear_heads
    from trainer.algos.inspo import InSPO
    from trainer.logs import load_log

    torch.set_num_threads(2)
    extra = dict(item.split("=", 1) for item in args.set)
    config = advantage_truth.estimator_config("residual", extra, iterations=1, seed=0)
    t0 = time.time()
    algo = InSPO(config)
    suffix = "" if args.behaviour == advantage_truth.BEHAVIOUR else f"-{args.behaviour}"
    log = args.log or ROOT / "bench" / ".cache" / f"advantage-truth-log{suffix}"
    log = advantage_truth.collect_log(log, args.episodes, 2, behaviour=args.behaviour)
    data = load_log(log)
    if args.parts:  # needs the parking truth's file only, not the state-level truth
        for kind in args.features:
            replication(data, config, args.parts, kind, args.folds, args.weights)
        return
    light, futures = advantage_truth.cached_elevator_truth(config, args.futures, args.states, args.behaviour)
    algo.setup(data, None)
    fit = algo.prepare_residuals()
    d = algo.data
    obs, agents, acts, e, y, fold, value = random_rows(algo, args.folds)
    w = row_weights(args.weights, value, y)
    mean, std = obs.mean(0), obs.std(0)
    std[std < 1e-6] = 1.0
    n_episodes = int(d.episode.max()) + 1
    print(
        f"{n_episodes} episodes, value r2 {fit['value_r2']:.3f}, residual std {y.std():.4f}, "
        f"{len(y):,} random rows, weights {args.weights} (effective rows {len(w) * w.mean() ** 2 / (w**2).mean():,.0f}) "
        f"[{time.time() - t0:.0f}s]"
    )
    if args.noise_by_value:
        noise_by_value(obs, value, y, float(d.reward_scale))
    s_obs = np.stack([s["obs"] for s in light]).astype(np.float64)
    s_agent = np.array([s["agent"] for s in light])
    n_act = e.shape[-1]
    for kind in args.features:
        x = features(kind, obs, agents, mean, std, d.n_agents)
        # the trainer's normal equations (trainer/algos/linear_heads.py) with one block per fold
        g = linear_heads.block_grams(x, acts, e, y, w, fold, n_blocks=args.folds)
        _, gains = linear_heads.choose_ridge(g, folds=args.folds, ridges=RIDGES)
        best = None
        print(f"\n{kind}: {g.zz.shape[1]} coefficients")
        for ridge, gain in gains.items():  # held-out R-loss minus that of zero heads
            theta = linear_heads.solve(g.zz.sum(0), g.zy.sum(0), ridge)
            est = features(kind, s_obs, s_agent, mean, std, d.n_agents) @ theta.reshape(n_act, -1).T
            truth_rows = advantage_truth.truth_rows(light, futures, d.reward_scale, {"lin": est})
            sup = [r for r in truth_rows if r["behaviour_prob"] > 0]
            s = advantage_truth.summarize(sup, ["lin"])["lin"]
            print(
                f"  ridge {ridge:8.0e}: held-out R-loss - zero {gain:+.3e}; truth corr {s['corr']:+.3f}, "
                f"sign {s['sign_acc']:.0%} of {s['n_clear']}, mean {s['mean']:+.5f}"
            )
            if best is None or gain < best[0]:
                best = (gain, ridge, s)
        print(
            f"  chosen by held-out R-loss: ridge {best[1]:.0e}: corr {best[2]['corr']:+.3f}, sign {best[2]['sign_acc']:.0%}"
        )
        if args.stop_effects:
            rel = relative(obs, d.n_agents) if "+rel" in kind else None
            print_stop_effects(x, obs, e, g, best[1], args.folds, linear_heads, rel, float(d.reward_scale))


VALUE_BINS = (-np.inf, -0.2, -0.1, -0.05, -0.02, -0.01, -0.005, np.inf)  # raw reward units


def noise_by_value(obs: np.ndarray, value: np.ndarray, residual: np.ndarray, scale: float) -> None:
    """The residual's std at the random rows of idle cars (where parking starts), by the baseline's value,
    next to bench/parking_truth.py's noise of a spell's return at states of that value when the whole
    simulator state is known (its raw file; RMS over floors and states): how far the log's baseline is
    from the best any baseline could do, calm state by busy state. Raw reward units."""
    from parking_truth import RAW, spell_noise

    q = np.load(RAW)["q"] if RAW.exists() else None
    state_value = q.mean((1, 2)) if q is not None else None
    idle = obs[:, 4] > 0.5
    v, r = value * scale, residual * scale
    print("\nresidual std at idle cars' random rows by the baseline's value (raw units)")
    print("  value in          rows   residual std | truth states  noise, state known")
    for lo, hi in zip(VALUE_BINS[:-1], VALUE_BINS[1:], strict=True):
        sel = idle & (v > lo) & (v <= hi)
        line = (
            f"  ({lo:>6}, {hi:>6}] {sel.sum():>8,}   {r[sel].std() if sel.sum() > 1 else np.nan:.4f}      |"
        )
        if q is not None:
            states = (state_value > lo) & (state_value <= hi)
            noise = spell_noise(q[states]) if states.any() else np.nan
            line += f" {states.sum():>5}         {noise:.4f}"
        print(line)


def row_weights(kind: str, value: np.ndarray, residual: np.ndarray) -> np.ndarray:
    return precision_weights(value, residual) if kind == "precision" else np.ones(len(residual))


def random_rows(algo, folds: int):
    """The (row, agent) pairs whose logged action was random, after ``prepare_residuals``: their own
    observation, action, propensities and residual, a fold of whole episodes for each, and the
    baseline's value there (the return minus the residual)."""
    d = algo.data
    e_all = algo.propensity_all.numpy().astype(np.float64)
    acts = d.actions.numpy()
    taken = np.take_along_axis(e_all, acts[..., None], -1)[..., 0]
    rows, agents = np.nonzero(taken < 1 - 1e-6)
    y = algo._residuals(torch.as_tensor(rows)).numpy().astype(np.float64)[np.arange(len(rows)), agents]
    n_episodes = int(d.episode.max()) + 1
    fold = np.random.default_rng(0).permutation(n_episodes)[d.episode.numpy()[rows]] % folds
    obs = d.obs.numpy()[rows, agents].astype(np.float64)
    value = d.returns.numpy()[rows].astype(np.float64) - y
    return obs, agents, acts[rows, agents], e_all[rows, agents], y, fold, value


def crossing_up_empty(obs: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows where an empty car moving up crosses a floor and the behaviour might stop or go on, and that
    floor (CONTINUE = 0, STOP = 1: envs/elevator/core.py)."""
    sel, floor = empty_moving_up(obs, FLOORS)
    return sel & (e[:, 0] > 0) & (e[:, 1] > 0), floor


def truth_stop_effects(reward_scale: float) -> np.ndarray | None:
    """Per floor f, the parking truth's (docs/results/parking_truth.json) value of stopping at f against going
    on to a uniformly drawn floor above it, in the fit's units; None if the truth file is absent."""
    path = ROOT / "docs" / "results" / "parking_truth.json"
    if not path.exists():
        return None
    q = np.array(json.loads(path.read_text())["pooled"]) / reward_scale
    return np.array([q[f] - q[f + 1 :].mean() for f in range(len(q) - 1)])


def replication(data, config, parts: int, kind: str, folds: int, weights: str = "equal") -> None:
    """Split the log's episodes into ``parts`` disjoint logs and run the whole estimate on each (baseline,
    ridge choice and fit): how far the per-floor stop effect moves from one log to another, and whether
    each part ranks the floors as the parking truth does.

    Then the row level: every part's fit is evaluated on the same rows (all parts' rows where an empty car
    moving up may stop), and the stop effect's deviation from its floor's mean is compared between parts.
    The closed-form step acts on each row's value, so if these deviations do not agree between two
    disjoint logs, the policy's row-to-row variation within a floor is the fit's noise, not the state."""
    import dataclasses

    from trainer.algos import linear_heads
    from trainer.algos.inspo import InSPO

    effects, scale, fits, crossing = [], 1.0, [], []
    for k in range(parts):
        keep = np.arange(data.n_episodes) % parts == k
        part = dataclasses.replace(
            data,
            **{name: getattr(data, name)[keep] for name in EPISODE_ARRAYS if getattr(data, name) is not None},
            episode_ids=[i for i, kept in zip(data.episode_ids, keep, strict=True) if kept],
        )
        algo = InSPO(config)
        algo.setup(part, None)
        algo.prepare_residuals()
        scale = float(algo.data.reward_scale)
        obs, agents, acts, e, y, fold, value = random_rows(algo, folds)
        mean, std = obs.mean(0), obs.std(0)
        std[std < 1e-6] = 1.0
        x = features(kind, obs, agents, mean, std, algo.data.n_agents)
        g = linear_heads.block_grams(x, acts, e, y, row_weights(weights, value, y), fold, n_blocks=folds)
        ridge, _ = linear_heads.choose_ridge(g, folds=folds, ridges=RIDGES)
        theta = linear_heads.solve(g.zz.sum(0), g.zy.sum(0), ridge).reshape(e.shape[1], -1).T
        fitted = x @ theta
        sel, floor = crossing_up_empty(obs, e)
        fits.append((theta, mean, std, algo.data.n_agents))
        crossing.append((obs[sel], agents[sel], floor[sel]))
        effects.append(
            [
                (fitted[sel & (floor == f), 1] - fitted[sel & (floor == f), 0]).mean()
                for f in range(1, FLOORS - 1)
            ]
        )
        print(f"part {k + 1}/{parts}: {int(keep.sum())} episodes, ridge {ridge:.0e}")
    effects = np.array(effects)  # [parts, floors 1..F-2]
    truth = truth_stop_effects(scale)
    print(
        f"\n{kind}: stop - continue, empty car moving up, x 1e-3 in the fit's units, one column per part of the log:"
    )
    for j, f in enumerate(range(1, FLOORS - 1)):
        line = " ".join(f"{1e3 * v:+.2f}" for v in effects[:, j])
        print(f"  floor {f}: {line}; spread (SD) {1e3 * effects[:, j].std(ddof=1):.2f}", end="")
        print("" if truth is None else f"; truth {1e3 * truth[f]:+.2f}")
    if truth is not None:  # does each part's fit rank the floors as the truth does, and how far is it off?
        t = truth[1 : FLOORS - 1]
        for k, row in enumerate(effects):
            corr = np.corrcoef(row, t)[0, 1] if row.std() > 0 else float("nan")
            rms = 1e3 * np.sqrt(np.mean((row - t) ** 2))
            print(f"  part {k + 1}: correlation with the truth over floors {corr:+.2f}, RMS error {rms:.2f}")
    row_level_agreement(kind, fits, crossing)


def row_level_agreement(kind: str, fits: list, crossing: list) -> None:
    """Each part's stop - continue on all parts' crossing rows, split into its floor's mean and the row's
    deviation from it; the deviations' correlation between parts (pairwise mean) and their size."""
    obs = np.concatenate([o for o, _, _ in crossing])
    agents = np.concatenate([a for _, a, _ in crossing])
    floor = np.concatenate([f for _, _, f in crossing])
    effect = []
    for theta, mean, std, n_agents in fits:
        fitted = features(kind, obs, agents, mean, std, n_agents) @ theta
        effect.append(fitted[:, 1] - fitted[:, 0])
    effect = np.array(effect)  # [parts, rows]
    floor_mean = np.zeros_like(effect)
    for f in np.unique(floor):
        floor_mean[:, floor == f] = effect[:, floor == f].mean(1, keepdims=True)
    within = effect - floor_mean
    pairs = [(a, b) for a in range(len(effect)) for b in range(a + 1, len(effect))]
    # features that cannot tell rows of one floor apart leave nothing to compare
    varies = within.std(1).min() > 1e-9
    corr = np.mean([np.corrcoef(within[a], within[b])[0, 1] for a, b in pairs]) if varies else float("nan")
    print(
        f"  row level, {len(floor):,} rows: within-floor deviation SD {1e3 * within.std(1).mean():.2f} "
        f"(floor means SD {1e3 * floor_mean.std(1).mean():.2f}), x 1e-3; correlation of the deviations "
        f"between parts {corr:+.2f}"
    )


EPISODE_ARRAYS = (
    "obs", "actions", "masks", "rewards", "team_rewards", "states", "terminated", "truncated", "behavior_prob",
    "filled", "ts",
)  # fmt: skip


def print_stop_effects(
    x, obs, e, g, ridge: float, folds: int, linear_heads, rel=None, scale: float = 1.0
) -> None:
    """Per floor: mean fitted A(STOP) - A(CONTINUE) over the rows where an empty car moving up crosses it
    and the behaviour might do either, and its jackknife SE (each fold's rows left out in turn); then the
    correlation over floors with the parking truth's per-floor effect, if its file exists."""
    n_act = e.shape[1]
    full = x @ linear_heads.solve(g.zz.sum(0), g.zy.sum(0), ridge).reshape(n_act, -1).T
    leave_out = []
    for k in range(folds):
        keep = [b for b in range(folds) if b != k]
        theta = linear_heads.solve(g.zz[keep].sum(0), g.zy[keep].sum(0), ridge)
        leave_out.append(x @ theta.reshape(n_act, -1).T)
    crossing, floor = crossing_up_empty(obs, e)
    print("  stop - continue, empty car moving up (x 1e-3; jackknife SE; rows; behaviour's P(stop)):")
    effects = {}
    for f in range(1, FLOORS - 1):
        sel = crossing & (floor == f)
        if not sel.any():
            continue
        effect = effects[f] = 1e3 * (full[sel, 1] - full[sel, 0]).mean()
        parts = np.array([1e3 * (a[sel, 1] - a[sel, 0]).mean() for a in leave_out])
        se = jackknife_se(parts)
        print(f"    floor {f}: {effect:+.2f} ({se:.2f}); {sel.sum():,} rows; {e[sel, 1].mean():.2f}")
        if rel is not None:  # split by whether an idle teammate waits above this floor
            for name, part in (
                ("idle car above", rel[:, IDLE_ABOVE] > 0),
                ("none above", rel[:, IDLE_ABOVE] == 0),
            ):
                sub = sel & part
                if sub.any():
                    eff = 1e3 * (full[sub, 1] - full[sub, 0]).mean()
                    ps = np.array([1e3 * (a[sub, 1] - a[sub, 0]).mean() for a in leave_out])
                    se_ = jackknife_se(ps)
                    print(f"      {name}: {eff:+.2f} ({se_:.2f}); {sub.sum():,} rows")
    truth = truth_stop_effects(scale)
    if truth is not None and len(effects) > 2:
        floors = sorted(effects)
        corr = np.corrcoef([effects[f] for f in floors], truth[floors])[0, 1]
        print(f"  correlation over floors with the parking truth's per-floor effect: {corr:+.2f}")


if __name__ == "__main__":
    main()
