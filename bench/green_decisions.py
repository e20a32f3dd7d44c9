"""What a signal controller does where the logged experiment's alternatives differ from max-pressure.

    .venv/bin/python bench/green_decisions.py --net grid4x4 \
        --controllers max-pressure-keep 'bench/.cache/results/traffic-grid4x4-experiment-keep/runs/inspo-s*' \
        'bench/.cache/results/traffic-grid4x4-experiment-keep/runs/bc-matched-s*'

The mechanism behind a closed-loop number (docs/algorithm.md, "Traffic: greens the log varies"). At every
decision where an intersection may switch, the decision is classed by what max-pressure and the experiment's
alternatives would do there (envs/traffic/experiment.py):

- *near-tie switch*: max-pressure leaves a green within one vehicle of the best phase's pressure, and
  ``max-pressure-keep`` (the ``keep`` alternative) would keep it;
- *long green*: the green has run 25 s and max-pressure keeps it, where ``max-pressure-cap`` (the ``end``
  alternative) would end it;
- *other*: every other switchable decision.

For each controller (a rule spec, a run directory, or a quoted glob of run directories: one method over
training seeds): the share of near-tie switches where it keeps the green, of long greens where it ends
them, and of the other decisions where it acts as max-pressure; where it does not, whether it holds a green
max-pressure ends, switches where max-pressure holds, or serves another phase than max-pressure's.
Greedy policies, tuning seeds only (``envs.seeds.tuning_seeds``), 900-s episodes.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.controllers import Controller, best_legal  # noqa: E402
from envs.traffic.controllers import CAP_S, best_other, near_tie_switch  # noqa: E402
from trainer.report import markdown_table, print_table  # noqa: E402

SECONDS = 900
KINDS = ("near-tie switch", "long green", "other")
# at "other" decisions, how a controller departs from max-pressure: it holds where max-pressure switches,
# switches where max-pressure holds, or switches to another phase than max-pressure's
DEPARTURES = ("holds", "switches", "another phase")


def classify(mask: np.ndarray, pressure: np.ndarray, green: int, since: float) -> tuple[str, int, int] | None:
    """(kind, max-pressure's phase, the alternative's phase) of one intersection's decision, from its legal
    phases, pressures, current green and seconds in it; None where it cannot switch."""
    if mask.sum() < 2:
        return None
    rule = best_legal(pressure, mask)
    if near_tie_switch(pressure, mask, green):
        return "near-tie switch", rule, green
    if rule == green and since >= CAP_S:
        return "long green", rule, best_other(pressure, mask, green)
    return "other", rule, rule


class Tally(Controller):
    """Plays ``inner`` and counts, per decision class, whether its action is the rule's or the alternative's."""

    def __init__(self, inner: Controller):
        self.inner, self.counts = inner, Counter()

    def reset(self, env, seed):
        self.inner.reset(env, seed)

    def observe(self, env, rewards, terminations, truncations):
        self.inner.observe(env, rewards, terminations, truncations)

    def describe(self):
        return self.inner.describe()

    def distribution(self, env, obs, infos):
        return self.inner.distribution(env, obs, infos)

    def act(self, env, obs, infos, rng):
        actions, probs = self.inner.act(env, obs, infos, rng)
        self.last_distribution = self.inner.last_distribution
        pressure, greens, since = env.phase_pressure(), env.current_phases(), env.time_in_phase()
        for i, agent in enumerate(env.possible_agents):
            action, green = actions[agent], int(greens[i])
            mask = np.asarray(infos[agent]["action_mask"], bool)
            seen = classify(mask, pressure[i], green, since[i])
            if seen is not None:
                kind, rule, alternative = seen
                took = "rule" if action == rule else "alternative" if action == alternative else "neither"
                self.counts[kind, took] += 1
                if kind == "other" and took == "neither":  # how it departs from max-pressure there
                    how = "holds" if action == green else "switches" if rule == green else "another phase"
                    self.counts["departs", how] += 1
        return actions, probs


def sources(spec: str) -> list[str]:
    """A rule spec or run directory as it is; a glob as the run directories it matches."""
    return sorted(glob.glob(spec)) if any(c in spec for c in "*?[") else [spec]


def label(spec: str) -> str:
    """A table label: a run directory or glob as ``<config>/<run>``, a rule spec as it is."""
    parts = Path(spec).parts
    return "/".join(parts[-3::2]) if len(parts) >= 3 and parts[-2] == "runs" else spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", default="grid4x4", choices=["grid4x4", "cologne8"])
    p.add_argument("--controllers", nargs="+", required=True, help="rule specs, run dirs or quoted globs")
    p.add_argument("--seeds", type=int, default=8, help="tuning seeds per controller")
    args = p.parse_args(argv)
    from envs.registry import make_env
    from envs.seeds import tuning_seeds
    from trainer.policies import load_controller
    from trainer.rollout import run_episode

    env_id = f"sumo:{args.net}"
    env = make_env(env_id, num_seconds=SECONDS)
    rows = []
    try:
        for spec in ["max-pressure", *args.controllers]:
            runs = sources(spec)
            if not runs:
                p.error(f"{spec!r} matches no run directory")
            counts, delays = Counter(), []
            for source in runs:
                tally = Tally(load_controller(source, env_id, env=env))
                delays += [run_episode(env, tally, s).metrics["delay"] for s in tuning_seeds(args.seeds)]
                counts += tally.counts
            shares = {}
            for kind in KINDS:
                total = sum(counts[kind, t] for t in ("rule", "alternative", "neither"))
                took = "rule" if kind == "other" else "alternative"
                shares[kind] = f"{counts[kind, took] / total:.0%} of {total}" if total else "–"
            departs = sum(counts["departs", h] for h in DEPARTURES)
            how = " / ".join(f"{counts['departs', h] / departs:.0%}" for h in DEPARTURES) if departs else "–"
            row = {
                "controller": label(spec),
                "runs": len(runs),
                "trip delay (s)": f"{np.mean(delays):.2f}",
                "near-tie switches kept": shares["near-tie switch"],
                "long greens ended": shares["long green"],
                "other decisions as max-pressure": shares["other"],
                "departures there: holds / switches / another phase": how,
            }
            rows.append(row)
    finally:
        env.close()
    title = f"{env_id}, {SECONDS} s, {args.seeds} tuning seeds per run: greedy actions by decision"
    print_table(rows, title=title)
    print(f"\n{title}\n\n{markdown_table(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
