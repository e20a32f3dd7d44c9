"""A parking layout per day, drawn at random: does such a log identify a layout that beats ETD by 10 %?

    .venv/bin/python bench/layout_experiment.py                 # 300 episodes, ~5 min on 2 cores
    .venv/bin/python bench/layout_experiment.py --episodes 150 --seeds 16

The per-spell experiment (``etd@exp=1``) draws a parking floor at every idle spell, so its log holds the
value of one spell's floor with everything else parking at random; docs/algorithm.md ("The parking floor as
one choice") measures that even the exact one-step value ranks layouts wrongly (the packed 5,6,7,8 beats the
spread 3,5,7,9 when every car keeps to it; one spell against random teammates says the opposite). A layout
is worth what it is worth when every car keeps to it all day, so this bench randomises *that*: each
collected episode (a simulated down-peak hour, collection seeds ``--start``...) runs ETD with idle car c
parked at floor L_c, the layout L drawn uniformly per episode. Then, offline:

1. the episode's average wait is regressed on the layout (how many cars wait at each floor, how many pairs
   of cars share a floor, and how many are one floor apart; ordinary least squares, car-symmetric), the
   coefficients printed with SE;
2. every layout (multiset of floors) is ranked by the fit; the best one, and the fit's predicted gain over
   ETD's lobby layout with a bootstrap interval over episodes;
3. closed loop on tuning seeds (paired with ETD): the chosen layout beside the best fixed layouts of
   docs/elevator.md's headroom table.

What it says about the product: whether an operator who randomises the parking layout per day (a cheap,
documented experiment) can pick a better one from a few hundred days of logs, without a simulator.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.elevator.controllers import ETD, ETDPark  # noqa: E402
from envs.registry import make_env  # noqa: E402
from envs.seeds import collection_seeds, tuning_seeds  # noqa: E402
from trainer.report import ci95, mean_std, print_table  # noqa: E402
from trainer.rollout import run_episode  # noqa: E402

ENV = "elevator:cb10x4:downpeak"
FEATURES = ("cars at floor 0..F-1", "pairs on one floor", "pairs one floor apart")


def episode(job: tuple[tuple[int, ...] | None, int]) -> float:
    """Average wait of one episode of ETD with that parking layout (None: ETD as it is)."""
    layout, seed = job
    env = make_env(ENV, assignment_obs=False)
    ctl = ETD() if layout is None else ETDPark(list(layout))
    return float(run_episode(env, ctl, seed).metrics["avg_wait"])


def layout_features(layouts: np.ndarray, n_floors: int) -> np.ndarray:
    """``[n, F + 2]``: cars per floor, pairs of cars on one floor, pairs one floor apart."""
    counts = np.stack([(layouts == f).sum(1) for f in range(n_floors)], 1)
    gap = np.abs(layouts[:, :, None] - layouts[:, None, :])
    upper = np.triu(np.ones(layouts.shape[1], bool), 1)
    same = ((gap == 0) & upper).sum((1, 2))
    adjacent = ((gap == 1) & upper).sum((1, 2))
    return np.column_stack([counts, same, adjacent]).astype(np.float64)


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OLS coefficients and their SE (the per-floor counts sum to the number of cars, so no constant)."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    dof = max(len(y) - np.linalg.matrix_rank(x), 1)
    cov = np.linalg.pinv(x.T @ x) * (resid @ resid) / dof
    return coef, np.sqrt(np.clip(np.diag(cov), 0, None))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=300, help="collected episodes, one random layout each")
    p.add_argument("--start", type=int, default=5000, help="first collection seed")
    p.add_argument("--seeds", type=int, default=16, help="tuning seeds for the closed loop")
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    from tqdm.auto import tqdm

    env = make_env(ENV, assignment_obs=False)
    n_floors, n_cars = env.building.n_floors, env.building.n_cars
    rng = np.random.default_rng(args.start)
    layouts = rng.integers(0, n_floors, (args.episodes, n_cars))
    seeds = collection_seeds(args.episodes, args.start)
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = [(tuple(map(int, lay)), s) for lay, s in zip(layouts, seeds, strict=True)]
        waits = np.array(
            list(tqdm(pool.map(episode, jobs), total=len(jobs), desc="collect (random layouts)"))
        )
    x = layout_features(layouts, n_floors)
    coef, se = fit(x, waits)
    names = [f"cars at {f}" for f in range(n_floors)] + list(FEATURES[1:])
    print_table(
        [
            {"feature": n, "coefficient (s)": f"{c:+.3f}", "SE": f"{s:.3f}"}
            for n, c, s in zip(names, coef, se, strict=True)
        ],
        title=f"average wait ~ layout, {args.episodes} episodes with a random layout each",
    )
    every = np.array(list(itertools.combinations_with_replacement(range(n_floors), n_cars)))
    feats = layout_features(every, n_floors)
    predicted = feats @ coef
    best = every[int(np.argmin(predicted))]
    lobby = layout_features(np.zeros((1, n_cars), int), n_floors)[0]
    gains = []
    for _ in range(args.bootstrap):
        pick = rng.integers(0, args.episodes, args.episodes)
        c, _ = fit(x[pick], waits[pick])
        p_every = feats @ c
        gains.append(float(p_every.min() - lobby @ c))
    lo, hi = np.percentile(gains, [2.5, 97.5])
    print(
        f"best layout by the fit: {','.join(map(str, best))} (predicted {predicted.min():.2f} s; against all cars "
        f"at the lobby {predicted.min() - lobby @ coef:+.2f} s, bootstrap 95% [{lo:+.2f}, {hi:+.2f}]); "
        f"top five: {'; '.join(','.join(map(str, every[k])) for k in np.argsort(predicted)[:5])}"
    )
    candidates = {"etd": None, f"chosen {','.join(map(str, best))}": tuple(map(int, best))}
    candidates.update(
        {f"park {lay}": tuple(int(f) for f in lay.split(",")) for lay in ("3,5,7,9", "5,6,7,8")}
    )
    tune = tuning_seeds(args.seeds)
    with ProcessPoolExecutor(args.workers) as pool:
        jobs = [(lay, s) for lay in candidates.values() for s in tune]
        results = np.array(list(tqdm(pool.map(episode, jobs), total=len(jobs), desc="tuning seeds")))
    results = results.reshape(len(candidates), len(tune))
    rows = []
    for name, w in zip(candidates, results, strict=True):
        diff = w - results[0]
        lo, hi = ci95(diff)
        rows.append(
            {
                "controller (ETD's assignment)": name,
                "avg wait (s)": mean_std(w),
                "vs ETD": f"{w.mean() / results[0].mean():.3f}x",
                "paired diff (s) [95% CI]": "—"
                if name == "etd"
                else f"{diff.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]",
            }
        )
    print_table(rows, title=f"{ENV}, tuning seeds {tune[0]}-{tune[-1]}")


if __name__ == "__main__":
    main()
