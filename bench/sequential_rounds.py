"""InSPO's sequential order across logging rounds: one car's parking floor settled per round.

    .venv/bin/python bench/sequential_rounds.py --out runs/rounds [--episodes 300 --first-log LOG]

On one log, every car's parking is improved against teammates that park as the log does (at random floors),
and the one-step values that gives rank the floors for a car among random teammates, not for a car whose
teammates keep their own floors (docs/algorithm.md, "The parking floor as one choice"). InSPO's answer to
that is its sequential update: improve one agent at a time against the teammates' *updated* policies. A
single log cannot show those updated policies; the deployment loop can, one round at a time:

* round k (k = 1..C): the building runs ETD with cars 0..k-2 parked at the floors the earlier rounds
  settled, and the parking experiment at p = 1 on the other cars (``ParkingExperiment(..., cars=...)``);
* the round's log is fitted as bench/parking_choice.py fits one: a short InSPO run of the down-peak context
  config gives the residuals and precision weights, the chain of stop/continue links gives
  ``Q(f | teammates) = theta . phi(f)``, now measured with the settled cars keeping their floors;
* car k-1 takes the floor that fit ranks first with the settled cars idle at their floors.

Each round is a policy-improvement step for one car against behaviour that is already the improved
policy for the others, so in truth no round is worse than the one before (up to the fit's error). After C
rounds every car has a floor: ``--evaluate`` plays that layout, with each round's partial layout, on
tuning seeds (bench/learned_parking.py). Rounds are resumable: what a round wrote is reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from parking_choice import (  # noqa: E402
    best_floor,
    episode_blocks,
    fit,
    format_theta,
    link_rows,
    load_run_streamed,
)

from envs.seeds import tuning_seeds  # noqa: E402

ENV = "elevator:cb10x4:downpeak"
CONFIG = ROOT / "bench" / "configs" / "elevator-downpeak-experiment-p1-context.toml"


def round_spec(floors: list[int | None]) -> str:
    """The round's controller: ETD with the settled cars parked at their floors and the parking experiment
    (p = 1) on the rest (``etd-park:6.-.-.-@exp=1``; envs/elevator/registry.py)."""
    return "etd-park:" + ".".join("-" if f is None else str(f) for f in floors) + "@exp=1"


def round_controller(floors: list[int | None]):
    from envs.controllers import build_controller

    return build_controller(ENV, round_spec(floors))


def collect_round(out: Path, floors: list[int | None], episodes: int, first_seed: int, workers: int) -> None:
    """The round's log, collected as ``inspo collect --controller <round spec>`` collects (all or nothing,
    so a log that exists is complete and reused)."""
    from trainer.collect import collect

    if not out.exists():
        collect(
            ENV, out, controller=round_spec(floors), episodes=episodes, start_seed=first_seed, workers=workers
        )


def residual_run(log: Path, run: Path, threads: int) -> None:
    """A one-iteration InSPO run on the round's log: its baseline is fitted before the first iteration, which is
    what the fit reads (its residuals and precision weights)."""
    if (run / "checkpoints" / "last.pt").exists():
        return
    inspo = Path(sys.executable).parent / "inspo"
    cmd = [str(inspo), "train", "--algo", "inspo", "--data", str(log), "--out", str(run)]
    cmd += ["--config", str(CONFIG), "--set", "iterations=1", "--seed", "0", "--threads", str(threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _avg_wait(floors: list[int | None], seed: int) -> float:
    from envs.registry import make_env
    from trainer.rollout import run_episode

    return run_episode(make_env(ENV), round_controller(floors), seed).metrics["avg_wait"]


def closed_loop_floors(settled: list[int], n_floors: int, n_cars: int, seeds: list[int], workers: int):
    """The simulator's verdict on the round's choice: the next car at each floor (the settled cars at theirs,
    the rest under the experiment), average wait per floor over ``seeds`` (paired: same seeds per floor)."""
    layouts = [settled + [f] + [None] * (n_cars - 1 - len(settled)) for f in range(n_floors)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        waits = [[pool.submit(_avg_wait, layout, s) for s in seeds] for layout in layouts]
        for f in tqdm(as_completed([w for row in waits for w in row]), total=len(layouts) * len(seeds),
                      desc="closed loop per floor", unit="ep"):  # fmt: skip
            f.result()
        return np.array([[w.result() for w in row] for row in waits])


def fit_round(log: Path, run: Path) -> dict:
    """``theta`` (and its jackknife SE) of ``Q(f | teammates)`` from the round's random links."""
    import torch

    torch.set_num_threads(2)
    algo = load_run_streamed(run, log)
    z, residual, w, episode = link_rows(algo)
    theta, se = fit(z, residual, w, episode_blocks(episode, episode.max() + 1))
    return {"rows": len(residual), "theta": theta.tolist(), "se": se.tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the rounds' logs, runs and fits")
    p.add_argument("--episodes", type=int, default=300, help="episodes (days) logged per round")
    p.add_argument("--first-seed", type=int, default=40000, help="collection seed of round 1's first episode")
    p.add_argument(
        "--first-log",
        type=Path,
        help="round 1's log, if one of the experiment on every car (etd@exp=1) exists already",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--evaluate", type=int, default=0, help="tuning seeds to play the layouts on (0: none)")
    p.add_argument(
        "--oracle",
        type=int,
        default=0,
        help="tuning seeds on which to play every floor for each round's car (the simulator's verdict; 0: none)",
    )
    args = p.parse_args()

    from envs.registry import make_env

    env = make_env(ENV)
    n_cars, n_floors = env.building.n_cars, env.building.n_floors
    args.out.mkdir(parents=True, exist_ok=True)
    floors: list[int | None] = [None] * n_cars
    rounds = []
    for k in range(n_cars):
        folder = args.out / f"round-{k + 1}"
        folder.mkdir(exist_ok=True)
        log = folder / "log"
        if k == 0 and args.first_log is not None:
            log = args.first_log
        else:
            seed = args.first_seed + k * args.episodes
            print(
                f"round {k + 1}: collecting {args.episodes} episodes of {round_controller(floors).describe()}"
            )
            collect_round(log, floors, args.episodes, seed, args.workers)
        residual_run(log, folder / "run", args.workers)
        fitted = folder / "fit.json"
        if not fitted.exists():
            fitted.write_text(json.dumps(fit_round(log, folder / "run")))
        result = json.loads(fitted.read_text())
        theta, se = np.array(result["theta"]), np.array(result["se"])
        settled = [f for f in floors if f is not None]
        floor, q = best_floor(theta, settled, n_floors, n_cars)
        floors[k] = floor
        print(f"round {k + 1}: {result['rows']:,} random links; x1e-3: {format_theta(theta, se)}")
        print(
            "  Q over floors given the settled cars (x1e-3): "
            + " ".join(f"{v * 1e3:+.2f}" for v in q - q.mean())
        )
        print(f"  car {k} settles at floor {floor}; layout so far {floors}")
        entry = {"round": k + 1, "log": str(log), **result, "floor": floor, "layout": list(floors)}
        if args.oracle:
            verdict = folder / f"closed-loop-{args.oracle}.npy"
            if not verdict.exists():
                seeds = tuning_seeds(args.oracle)
                np.save(verdict, closed_loop_floors(settled, n_floors, n_cars, seeds, args.workers))
            waits = np.load(verdict)
            diff = waits - waits.mean(0)  # paired: each seed's mean over floors removed
            se = diff.std(1, ddof=1) / np.sqrt(waits.shape[1])
            print(
                "  closed loop, avg wait per floor (s; SE paired): "
                + " ".join(f"{m:.2f}({e:.2f})" for m, e in zip(waits.mean(1), se, strict=True))
            )
            print(
                f"  the simulator's best floor {int(np.argmin(waits.mean(1)))}; "
                f"correlation of Q with -wait over floors {np.corrcoef(q, -waits.mean(1))[0, 1]:+.2f}"
            )
            entry["closed_loop_wait"] = waits.mean(1).tolist()
        rounds.append(entry)
    (args.out / "rounds.json").write_text(json.dumps(rounds, indent=1))
    layout = ",".join(map(str, floors))
    print(f"\nlayout after {n_cars} rounds: {layout}")
    if args.evaluate:
        cmd = [sys.executable, str(ROOT / "bench" / "learned_parking.py"), "--seeds", str(args.evaluate)]
        cmd += ["--layouts", layout, "3,5,7,9", "5,6,7,8", "--workers", str(args.workers)]
        cmd += ["--out", str(args.out / "layouts.png")]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
