"""The parking floor as one choice: its value per floor, given where the teammates wait, fitted from the chain.

    .venv/bin/python bench/parking_choice.py --run RUN --log LOG [--parts 2]

The logged experiment ``etd@exp=1`` draws a parking floor per idle spell and the log records it as a chain
of stop/continue decisions of an empty car moving up. InSPO's heads fit each link's effect, stop against
continue *under the log's own continuation* (a uniform floor above), and the closed form improves on that
one step: a car stops at the first floor that beats the log's average above it. Here the same residual
regression is written in terms of the value of the whole choice, ``Q(f | teammates)`` for each target
floor ``f``: with the experiment's uniform continuation, the link at floor ``d`` has effect
``Q(d) - mean_{f > d} Q(f)``, so with ``Q(f) = theta . phi(f)`` linear in features of the target floor
(the floor, its square, the idle teammates at it and one floor away from it, from the car's own
observation) the link's effect is ``theta . (phi(d) - mean_{f > d} phi(f))``: one weighted least-squares
fit on the same rows, residuals and precision weights as the trainer's (read from a trained run).

Printed, per part of the log (disjoint episodes) and for the whole: the coefficients with jackknife SE
over episode blocks, the ``Q`` profile over floors for a car with no idle teammate near, its correlation
with bench/parking_truth.py's profile (docs/results/parking_truth.json), and the layout the fit picks when
the cars choose one after another (each the best floor given where the others already wait).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from parking_mechanism import parking_rows  # noqa: E402

from envs.elevator.controllers import ETDPark  # noqa: E402
from envs.elevator.core import IDLE  # noqa: E402
from envs.elevator.features import teammate_floors  # noqa: E402
from trainer.report import jackknife_se  # noqa: E402

FEATURES = ("floor", "floor^2", "idle teammates at it", "idle teammates 1 floor away")
BLOCKS = 20


def target_features(floors: np.ndarray, pos: np.ndarray, idle: np.ndarray, n_floors: int) -> np.ndarray:
    """``[n, len(floors), k]``: :data:`FEATURES` of parking at each of ``floors`` for each row."""
    u = floors / (n_floors - 1)
    dist = np.abs(pos[:, None, :] - floors[None, :, None])  # [n, floors, C-1]
    at = ((dist < 0.5) & idle[:, None, :]).sum(-1)
    near = ((dist >= 0.5) & (dist < 1.5) & idle[:, None, :]).sum(-1)
    n = len(pos)
    return np.stack(
        [np.broadcast_to(u, (n, len(floors))), np.broadcast_to(u * u, (n, len(floors))), at, near], -1
    )


def link_features(obs: np.ndarray, floor: np.ndarray, n_floors: int, n_cars: int) -> np.ndarray:
    """``[n, k]``: phi(d) - mean over f > d of phi(f), the stop-against-continue link in terms of Q."""
    pos, idle = teammate_floors(obs, n_floors, n_cars)
    every = np.arange(n_floors, dtype=np.float64)
    phi = target_features(every, pos, idle, n_floors)  # [n, F, k]
    above = every[None, :] > floor[:, None]
    mean_above = (phi * above[..., None]).sum(1) / np.maximum(above.sum(1), 1)[:, None]
    return phi[np.arange(len(obs)), floor] - mean_above


def wls(x: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float = 1e-9) -> np.ndarray:
    """Weighted least squares (a vanishing ridge only keeps the solve defined)."""
    a = (x * w[:, None]).T @ x
    return np.linalg.solve(a + ridge * np.trace(a) / len(a) * np.eye(len(a)), (x * w[:, None]).T @ y)


def fit(z: np.ndarray, y: np.ndarray, w: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and their jackknife SE over episode blocks."""
    theta = wls(z, y, w)
    loo = np.stack([wls(z[block != b], y[block != b], w[block != b]) for b in range(BLOCKS)])
    return theta, jackknife_se(loo)


def best_floor(theta: np.ndarray, settled: list[int], n_floors: int, n_cars: int) -> tuple[int, np.ndarray]:
    """The floor ``theta . phi(f)`` ranks first with the ``settled`` cars idle at their floors (the other
    cars absent), and the values over floors."""
    pos = np.array([[float(f) for f in settled] + [-99.0] * (n_cars - 1 - len(settled))])
    idle = np.array([[True] * len(settled) + [False] * (n_cars - 1 - len(settled))])
    q = target_features(np.arange(n_floors, dtype=np.float64), pos, idle, n_floors)[0] @ theta
    return int(np.argmax(q)), q


def sequential_layout(theta: np.ndarray, n_floors: int, n_cars: int) -> list[int]:
    """Each car in turn takes the best floor given the floors the cars before it took."""
    taken: list[int] = []
    for _ in range(n_cars):
        taken.append(best_floor(theta, taken, n_floors, n_cars)[0])
    return taken


def format_theta(theta: np.ndarray, se: np.ndarray) -> str:
    """``floor +3.70 (1.08), ...``: the coefficients and their SE, x1e-3."""
    return ", ".join(
        f"{n} {t * 1e3:+.2f} ({s * 1e3:.2f})" for n, t, s in zip(FEATURES, theta, se, strict=True)
    )


class ChoiceParking(ETDPark):
    """ETD's assignment; an idle car parks at the floor the fitted ``Q(f | teammates)`` ranks first, given
    where the other idle cars wait now (re-read at every decision, as a served per-step policy would)."""

    def __init__(self, theta_file: str | Path):
        super().__init__()
        # --save's file, or bench/parking_truth.py's (the truth's coefficients); "A+B": their mean (a damped
        # second round)
        files = [Path(f) for f in str(theta_file).split("+")]
        saved = [json.loads(f.read_text()) for f in files]
        self.theta = np.mean([np.array(d.get("target_features", d)["theta"]) for d in saved], 0)
        self.name = "etd, parking by " + "+".join(f.stem for f in files)

    def park_floor(self, v, c):
        others = [k for k in range(v.C) if k != c]
        pos = np.array([[v.pos[k] for k in others]])
        idle = np.array([[v.mode[k] == IDLE and v.load[k] == 0 for k in others]])
        every = np.arange(v.F, dtype=np.float64)
        return int(np.argmax(target_features(every, pos, idle, v.F)[0] @ self.theta))


def load_run_streamed(run: Path, log: Path):
    """The run's InSPO as its last checkpoint left it, on its training log read as the trainer reads it
    (the log's memory-mapped array cache and row store: a log of a thousand episodes does not fit in RAM
    as ``load_log`` decodes it)."""
    from trainer.algos.config import make_config
    from trainer.algos.exogenous import wanted
    from trainer.algos.inspo import InSPO
    from trainer.algos.store import open_stored_log
    from trainer.train_loop import DEFAULT_MEMORY_BUDGET_MB

    algo = InSPO(make_config("inspo", overrides=json.loads((run / "config.json").read_text())["config"]))
    c = algo.config
    data = open_stored_log(
        log, c.gamma, c.discount, c.horizon_s, DEFAULT_MEMORY_BUDGET_MB, exogenous=wanted(c)
    )
    algo.setup(data)
    algo.load(run / "checkpoints" / "last.pt")
    return algo


def link_rows(algo) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The log's random stop/continue links of an empty car moving up (floors 1 to F-2): their regressors
    ``(stop - E[stop]) * link_features``, the trainer's residuals and precision weights, and each row's
    episode."""
    import torch

    from trainer.algos import linear_heads

    d = algo.data
    empty_up, random, floor_all, n_floors = parking_rows(algo)
    masks, obs = d.masks.numpy(), d.obs.numpy()
    rows, cars = np.nonzero(empty_up & random & masks[..., 0] & masks[..., 1])
    floor = floor_all[rows, cars]
    keep = (floor >= 1) & (floor <= n_floors - 2)
    rows, cars, floor = rows[keep], cars[keep], floor[keep]
    e_stop = algo.propensity_all[rows, cars, 1].double().numpy()
    stop = (d.actions[rows, cars].numpy() == 1).astype(np.float64)
    residual = algo._residuals(torch.as_tensor(rows))[np.arange(len(rows)), cars].double().numpy()
    value = algo.baseline_value[rows].double().numpy()
    value = value if value.ndim == 1 else value[np.arange(len(rows)), cars]
    w = linear_heads.precision_weights(value, residual)
    z = (stop - e_stop)[:, None] * link_features(obs[rows, cars], floor, n_floors, d.n_agents)
    return z, residual, w, d.episode[rows].numpy()


def episode_blocks(episode: np.ndarray, n_episodes: int) -> np.ndarray:
    """Each row's jackknife block: its episode's, drawn once (seed 0) over the log's ``n_episodes``."""
    return np.random.default_rng(0).permutation(n_episodes)[episode] % BLOCKS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a trained InSPO run (its residuals and weights)")
    p.add_argument("--log", type=Path, required=True, help="the run's training log")
    p.add_argument("--parts", type=int, default=2)
    p.add_argument("--save", type=Path, help="write the whole log's coefficients here (JSON)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    algo = load_run_streamed(args.run, args.log)
    d = algo.data
    n_floors = parking_rows(algo)[3]
    z, residual, w, episode = link_rows(algo)
    truth = np.array(json.loads((ROOT / "docs" / "results" / "parking_truth.json").read_text())["pooled"])
    print(f"{len(residual):,} random rows where an empty car moving up decides at floors 1-{n_floors - 2}")
    parts = [("whole log", np.ones(len(residual), bool))]
    parts += [(f"part {k + 1}/{args.parts}", episode % args.parts == k) for k in range(args.parts)]
    every = np.arange(n_floors, dtype=np.float64)
    for label, sel in parts:
        theta, se = fit(z[sel], residual[sel], w[sel], episode_blocks(episode[sel], episode.max() + 1))
        none = np.zeros((1, d.n_agents - 1))
        profile = target_features(every, none - 99, none.astype(bool), n_floors)[0] @ theta
        corr = np.corrcoef(profile, truth)[0, 1]
        print(f"\n{label}: {int(sel.sum()):,} rows; x1e-3: {format_theta(theta, se)}")
        print(
            "  Q over floors, no idle teammate near (x1e-3): "
            + " ".join(f"{q * 1e3:+.2f}" for q in profile - profile.mean())
        )
        print(f"  correlation with the parking truth over floors: {corr:+.2f}")
        print(f"  layout chosen car by car: {sequential_layout(theta, n_floors, d.n_agents)}")
        if args.save:
            path = (
                args.save
                if label == "whole log"
                else args.save.with_stem(f"{args.save.stem}-{label[5]}of{args.parts}")
            )
            path.write_text(json.dumps({"features": FEATURES, "theta": theta.tolist(), "se": se.tolist()}))


if __name__ == "__main__":
    main()
