"""Does the residual estimator's return target keep the sign of an action's effect? Pooled, per lambda.

    .venv/bin/python bench/return_bias.py [--log LOG] [--lams 1 0.95 0.9 0.8] [--set KEY=VALUE ...]
    .venv/bin/python bench/return_bias.py --lams 1 --baselines state state+exogenous

The residual estimator regresses ``G - V(s)`` on ``1[a_i = a] - e_i(a)`` (docs/algorithm.md, "The
residual advantage estimator"). With exact propensities ``e`` that regression is unbiased for any
baseline ``V(s)``, but only when ``G`` itself is: a lambda-return below 1 bootstraps on the baseline at
the *next* state, ``V(s')``, and ``s'`` depends on the action. Where the baseline cannot see what the
action changed (one car one floor higher is a tiny part of the building's value), bootstrapping credits
the action's cost in the next seconds and drops its later benefit.

This bench measures that bias without any network in the way: on the log of
``bench/advantage_truth.py`` (``etd@exp=0.2``, down-peak; collected there if absent) it fits mu and the
cross-fitted ``V(s)`` exactly as InSPO does, then solves the pooled linear R-learner over every row
where a car's logged choice was random (``residual ~ theta_a (1[a_i = a] - e_i(a))`` for each idle-car
alternative ``a`` and the preferred action 0), with standard errors clustered by episode, for each
lambda. The paired-simulation truth of the same contrast (its mean over the held-out states of
``bench/advantage_truth.py``'s cache, when present) is printed beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

CONTINUE, UP, DOWN = 0, 2, 3  # envs/elevator/core.py's action ids: an idle car holds, goes up or down


def pooled_effects(algo, alternatives=(UP, DOWN)) -> dict[int, tuple[float, float, int]]:
    """``{a: (effect of a vs CONTINUE, its episode-clustered SE, rows)}`` from the fitted residuals."""
    d = algo.data
    res = algo.residual.numpy().astype(np.float64)
    e = algo.propensity_all.numpy().astype(np.float64)  # [K, N, A]
    acts, episode = d.actions.numpy(), d.episode.numpy()
    taken = np.take_along_axis(e, acts[..., None], -1)[..., 0]
    out = {}
    for a in alternatives:
        rows, agents = np.nonzero((taken < 1 - 1e-6) & (e[..., a] > 0) & (e[..., CONTINUE] > 0))
        x = np.stack(
            [
                (acts[rows, agents] == a) - e[rows, agents, a],
                (acts[rows, agents] == CONTINUE) - e[rows, agents, CONTINUE],
            ],
            1,
        )
        y = res[rows]
        inv = np.linalg.inv(x.T @ x)
        beta = inv @ x.T @ y
        scores = np.zeros((int(episode.max()) + 1, 2))
        np.add.at(scores, episode[rows], x * (y - x @ beta)[:, None])
        cov = inv @ scores.T @ scores @ inv
        contrast = np.array([1.0, -1.0])
        out[a] = (float(contrast @ beta), float(np.sqrt(contrast @ cov @ contrast)), len(rows))
    return out


def truth_means(args, scale: float) -> dict[int, tuple[float, float, int]]:
    """The paired-simulation truth's mean of ``Q(a) - Q(CONTINUE)`` over its held-out states (reward-scale
    units, the mean's SE, states), from bench/advantage_truth.py's cache for ``--futures``/``--states``."""
    import advantage_truth

    try:
        light, futures = advantage_truth.cached_elevator_truth(
            advantage_truth.estimator_config("residual"), args.futures, args.states
        )
    except SystemExit as missing:  # the pooled effects stand without it
        print(missing)
        return {}
    out = {}
    for a in (UP, DOWN):
        diffs = [
            (futures[si][a] - futures[si][CONTINUE]) / scale
            for si, s in enumerate(light)
            if a in futures[si] and CONTINUE in futures[si] and s["dist"][a] > 0
        ]
        if diffs:
            se = np.sqrt(sum(d.var(ddof=1) / len(d) for d in diffs)) / len(diffs)
            out[a] = (float(np.mean([d.mean() for d in diffs])), float(se), len(diffs))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", type=Path, default=ROOT / "bench" / ".cache" / "advantage-truth-log")
    p.add_argument("--episodes", type=int, default=300, help="episodes of the log when it is collected here")
    p.add_argument("--lams", type=float, nargs="+", default=[1.0, 0.95, 0.9, 0.8])
    p.add_argument(
        "--baselines",
        nargs="+",
        default=["state"],
        choices=["state", "state+exogenous"],
        help="what the cross-fitted baseline sees (each with every lambda); state+exogenous: also the "
        "passengers arriving after the decision (the log's exogenous table)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of mu, the folds and V(s)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="estimator option")
    p.add_argument(
        "--futures", type=int, default=32, help="the cached truth's futures (bench/advantage_truth.py)"
    )
    p.add_argument("--states", type=int, default=40, help="the cached truth's held-out states")
    args = p.parse_args()
    import advantage_truth
    import torch

    from trainer.algos.inspo import InSPO
    from trainer.logs import load_log

    torch.set_num_threads(1)
    t0 = time.time()
    log = advantage_truth.collect_log(args.log, args.episodes, args.workers)
    data = load_log(log)
    extra = dict(item.split("=", 1) for item in args.set)
    rows, scale = [], 1.0
    for baseline in args.baselines:
        for lam in args.lams:
            options = {**extra, "lam": lam, "baseline_inputs": baseline}
            config = advantage_truth.estimator_config("residual", options, iterations=1, seed=args.seed)
            algo = InSPO(config)
            algo.setup(data, None)
            fit = algo.prepare_residuals()
            scale = algo.data.reward_scale
            name = f"lambda {lam:g}" + (", +exo" if baseline != "state" else "")
            rows.append((name, fit, pooled_effects(algo)))
            print(
                f"{name}: the baseline explains {fit['value_r2']:.3f} of the target [{time.time() - t0:.0f}s]"
            )
            del algo
    truth = truth_means(args, scale)
    names = {UP: "up", DOWN: "down"}
    print(f"\npooled effect vs hold ({log.name}; reward-scale units, episode-clustered SE; z = effect / SE)")
    print(
        f"{'target':20s} {'residual std':>12s}  " + "  ".join(f"{names[a] + ' vs hold':>26s}" for a in names)
    )
    for name, fit, eff in rows:
        cells = "  ".join(
            f"{eff[a][0]:+.5f} ± {eff[a][1]:.5f} (z {eff[a][0] / eff[a][1]:+.1f})" for a in names
        )
        print(f"{name:20s} {fit['residual_std']:12.4f}  {cells}")
    if truth:
        cells = "  ".join(
            f"{truth[a][0]:+.5f} ± {truth[a][1]:.5f} ({truth[a][2]} st.)" if a in truth else " " * 26
            for a in names
        )
        print(f"{'truth':20s} {'':12s}  {cells}")


if __name__ == "__main__":
    main()
