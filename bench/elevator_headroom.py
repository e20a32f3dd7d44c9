"""How much better than the best logged elevator heuristic can a policy be, using only logged behaviours?

    .venv/bin/python bench/elevator_headroom.py                       # downpeak, uppeak, lunch; 8 tuning seeds
    .venv/bin/python bench/elevator_headroom.py --profiles downpeak --seeds 16

The acceptance of the closed loop (docs/results.md) asks InSPO for 0.9x the best logged heuristic (ETD)
on down-peak. This bench checks that such a policy exists *inside the logs' support*: ETD's call
assignment (logged by ``etd@...``) combined with idle cars parking at a floor (what ``sector@...`` logs
do), a "stitch" of two logged behaviours that an offline learner could in principle recover. It also
shows ETD's own sensitivity to its delay weight, alone and with parking: the headroom beyond parking.
Rules are deterministic, so every row runs the same passengers (common random numbers) and the paired
difference to ETD is exact per seed.

Runs on tuning seeds (``envs.seeds.tuning_seeds``), never evaluation seeds: this is a design aid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.elevator.controllers import ETD, ETDPark, Sector  # noqa: E402
from envs.registry import make_env  # noqa: E402
from envs.seeds import tuning_seeds  # noqa: E402
from trainer.report import ci95, mean_std, print_table  # noqa: E402
from trainer.rollout import run_episode  # noqa: E402


class SectorParkingETD(ETD):
    """ETD's assignment; an idle car with nothing to do goes to its sector's base (Sector's parking)."""

    name = "etd+park sector bases"

    def park_floor(self, v, c):
        return Sector().park_floor(v, c)


def controllers() -> list[tuple[str, object]]:
    return [
        ("etd (logged)", ETD()),
        ("sector (logged)", Sector()),
        ("etd delay weight 0", ETD(delay_weight=0.0)),
        ("etd+park sector bases", SectorParkingETD()),
        ("etd+park floors 1,2,3,4", ETDPark([1, 2, 3, 4])),
        ("etd+park floors 2,2,2,2", ETDPark([2, 2, 2, 2])),
        ("etd+park floors 3,5,7,9 (etd-park)", ETDPark()),
        ("etd+park floors 0,3,5,8", ETDPark([0, 3, 5, 8])),
        ("etd+park floors 5,6,7,8", ETDPark([5, 6, 7, 8])),
        # beyond parking: ETD's assignment without its delay term, with and without parking (what the
        # experiment's ``@assign=q`` alternative puts in a log, envs/elevator/experiment.py)
        ("etd delay weight 0 + park 3,5,7,9", ETDPark(delay_weight=0.0)),
        ("etd delay weight 0 + park 5,6,7,8", ETDPark([5, 6, 7, 8], delay_weight=0.0)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default="downpeak,uppeak,lunch")
    parser.add_argument("--seeds", type=int, default=8, help="number of tuning seeds")
    args = parser.parse_args()
    seeds = tuning_seeds(args.seeds)
    for profile in args.profiles.split(","):
        env = make_env(f"elevator:cb10x4:{profile}", assignment_obs=False)  # rules only: no ETD bits needed
        waits = {
            name: [run_episode(env, ctl, s).metrics["avg_wait"] for s in seeds] for name, ctl in controllers()
        }
        base = np.asarray(waits["etd (logged)"])
        rows = []
        for name, w in waits.items():
            diff = np.asarray(w) - base
            lo, hi = ci95(diff)
            rows.append(
                {
                    "controller": name,
                    "avg wait (s)": mean_std(w),
                    "vs etd": f"{np.mean(w) / base.mean():.3f}x",
                    "paired diff (s) [95% CI]": "—"
                    if name.startswith("etd (")
                    else f"{diff.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]",
                }
            )
        print_table(rows, title=f"elevator:cb10x4:{profile}, tuning seeds {seeds[0]}-{seeds[-1]}")


if __name__ == "__main__":
    main()
