"""Where a learned elevator policy's gain comes from: its parking, or everything else?

    .venv/bin/python bench/learned_parking.py --config elevator-downpeak-experiment-p1
    .venv/bin/python bench/learned_parking.py --runs RUN [RUN ...] --experiment etd@exp=1 --seeds 8

At down-peak, the improvement over ETD that the logged experiment (``etd@exp=p``) puts in the log is
*where idle cars wait* (docs/elevator.md, "Headroom"). This bench splits a trained policy's closed-loop
result into that part and the rest, on tuning seeds (never evaluation seeds), paired with ETD per seed:

* ``ETD``, the logged experiment, and fixed parking rules (ETD's assignment; an idle car with nothing to
  do goes to its own floor: ``park 3,5,7,9``, ``etd-park``'s default, sends car c to floor 3 + 2c): how
  much parking alone is worth on these passengers;
* each run as trained (greedy), and ``<run> parking + ETD``: the run's actions for a car in an idle spell
  (from the moment it becomes idle with no riders, car calls or assigned hall call, until it gets work:
  the experiment's definition, envs/elevator/experiment.py), ETD's everywhere else. If the two rows
  agree, the rest of the policy is a clone of ETD and its parking is its whole contribution; beside each
  run, the share of its moves outside idle spells (where the car has a choice) that differ from ETD's in
  the same state, i.e. how close "the rest" is to ETD;
* with ``--choices FILE ...`` (bench/parking_choice.py ``--save``): ETD with each idle car parked at the
  floor a fitted ``Q(f | teammates)`` ranks first, given where the other idle cars wait at that moment:
  what the parking choice as one decision, fitted from the log, is worth in closed loop;
* where idle cars wait: the share of idle-car time at each floor (PNG and table), so a reader can see
  whether a learner found multi-floor parking at all (ETD waits at the lobby; the experiment anywhere).

With ``--config NAME`` the runs are bench/results.py's ``inspo-s*`` (and ``bc-s*``) of that config,
under bench/.cache/results/NAME/runs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from envs.controllers import Controller, build_controller  # noqa: E402
from envs.elevator.controllers import ETD, ETDPark, _View  # noqa: E402
from envs.elevator.core import ACTION_NAMES, IDLE, MOVING  # noqa: E402
from envs.registry import make_env  # noqa: E402
from envs.seeds import tuning_seeds  # noqa: E402
from trainer.report import ci95, mean_std, print_table  # noqa: E402

FIXED = ("3,5,7,9", "1,2,3,4", "2,2,2,2")  # rows of docs/elevator.md's headroom table; the first is etd-park


class LearnedParking:
    """A learned policy's actions for cars in an idle spell, ETD's for every other car (``reset`` and
    ``act`` only: the bench's own episode loop runs it).

    With ``hybrid=False`` the learned policy decides everywhere and this only counts, outside idle
    spells, the decisions with more than one legal move and those where the learned move differs from
    ETD's in the same state: how close "the rest of the policy" is to the clone of ETD it should be."""

    def __init__(self, learned: Controller, label: str, hybrid: bool = True):
        self.learned, self.etd, self.name, self.hybrid = learned, ETD(), label, hybrid
        self.in_spell: list[bool] = []
        self.outside, self.differs = 0, 0
        self.unlike: Counter[str] = Counter()  # the moves unlike ETD's, by situation

    def reset(self, env, seed):
        self.learned.reset(env, seed)
        self.etd.reset(env, seed)
        self.in_spell = [False] * env.building.n_cars

    def act(self, env, obs, infos, rng):
        learned, _ = self.learned.act(env, obs, infos, rng)
        etd, _ = self.etd.act(env, obs, infos, rng)
        v = _View(env)
        assigned = self.etd.assign(v)
        actions = {}
        for c, agent in enumerate(env.possible_agents):
            if v.car_calls[c] or assigned[c] or v.load[c]:
                self.in_spell[c] = False
            elif v.mode[c] == IDLE and v.idle_decide[c]:
                self.in_spell[c] = True
            if not self.hybrid and not self.in_spell[c] and infos[agent]["decision"]:
                self.outside += 1
                if learned[agent] != etd[agent]:
                    self.differs += 1
                    self.unlike[situation(v, c, assigned[c], etd[agent], learned[agent])] += 1
            actions[agent] = learned[agent] if self.in_spell[c] or not self.hybrid else etd[agent]
        return actions, {a: 1.0 for a in actions}


def situation(v, car: int, assigned: set, etd_move: int, learned_move: int) -> str:
    """A move unlike ETD's, described: the car's mode and load, how many calls ETD assigns it, both moves."""
    mode = "idle" if v.mode[car] == IDLE else "moving" if v.mode[car] == MOVING else "doors"
    load = "with riders" if v.load[car] else "empty"
    calls = f"calls assigned {min(len(assigned), 2)}{'+' if len(assigned) > 2 else ''}"
    return f"{mode}, {load}, {calls}: ETD {ACTION_NAMES[etd_move]}, learned {ACTION_NAMES[learned_move]}"


def controller(source: str, env_id: str, env):
    """``park:F,F,F,F``, ``hybrid:RUN``, a run directory or a rule spec."""
    from trainer.policies import load_controller

    if source.startswith("park:"):
        return ETDPark([int(f) for f in source[5:].split(",")])
    if source.startswith("choice:"):
        from parking_choice import ChoiceParking

        return ChoiceParking(Path(source[len("choice:") :]))
    if source.startswith("hybrid:"):
        run = source[len("hybrid:") :]
        return LearnedParking(load_controller(run, env_id, env), f"{Path(run).name} parking + ETD")
    if Path(source).is_dir():
        return LearnedParking(load_controller(source, env_id, env), Path(source).name, hybrid=False)
    return build_controller(env_id, source)


def episode(job: tuple[str, str, int]) -> tuple[float, np.ndarray, tuple[int, int], Counter]:
    """Average wait of one tuning episode, each car's idle time at each floor (ticks), and for a learned
    policy outside idle spells (decisions with a choice, those unlike ETD's, and those by situation)."""
    from trainer.rollout import action_rng

    source, env_id, seed = job
    env = make_env(env_id)
    ctl = controller(source, env_id, env)
    obs, infos = env.reset(seed=seed)
    ctl.reset(env, seed)
    rng = action_rng(seed)
    core = env.core
    idle_time = np.zeros((env.building.n_cars, env.building.n_floors))
    while env.agents:
        actions, _ = ctl.act(env, obs, infos, rng)
        obs, _, _, _, infos = env.step(actions)
        idle = np.flatnonzero((core.mode[0] == IDLE) & (core.load[0] == 0))
        np.add.at(idle_time, (idle, np.rint(core.pos[0, idle]).astype(int)), 1)
    if isinstance(ctl, LearnedParking):
        return env.episode_metrics()["avg_wait"], idle_time, (ctl.outside, ctl.differs), ctl.unlike
    return env.episode_metrics()["avg_wait"], idle_time, (0, 0), Counter()


def label(source: str) -> str:
    if source.startswith("park:"):
        return f"ETD, park {source[5:]}"
    if source.startswith("hybrid:"):
        return f"{Path(source[7:]).name} parking + ETD"
    if source.startswith("choice:"):
        return "ETD, parking by " + "+".join(Path(f).stem for f in source[7:].split("+"))
    return Path(source).name if Path(source).is_dir() else source


def plot(shares: dict[str, np.ndarray], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(shares)
    floors = np.arange(len(next(iter(shares.values()))))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        ax.bar(floors + (k - (len(names) - 1) / 2) * width, shares[name], width, label=name)
    ax.set_xticks(floors)
    ax.set_xlabel("floor (0 = lobby)")
    ax.set_ylabel("share of idle-car time")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="bench/results.py config whose cached runs to use")
    p.add_argument("--runs", nargs="*", default=[], type=Path, help="run directories (instead of --config)")
    p.add_argument("--env", default="elevator:cb10x4:downpeak")
    p.add_argument("--experiment", default="etd@exp=1", help="the logged experiment behind the runs' log")
    p.add_argument("--seeds", type=int, default=8, help="tuning seeds")
    p.add_argument(
        "--layouts",
        nargs="+",
        default=list(FIXED),
        help="fixed parking layouts to play beside the runs (car c at the c-th floor)",
    )
    p.add_argument(
        "--choices",
        nargs="*",
        default=[],
        type=Path,
        help="bench/parking_choice.py --save files: ETD with idle cars parked by that fitted Q(f | teammates); "
        "A+B: by the mean of their coefficients",
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "learned-parking.png")
    args = p.parse_args()
    runs = list(args.runs)
    if args.config:
        import tomllib

        bench = tomllib.loads((ROOT / "bench" / "configs" / f"{args.config}.toml").read_text())["bench"]
        args.env = bench["env"]
        base = ROOT / "bench" / ".cache" / "results" / args.config / "runs"
        runs = sorted(base.glob("inspo-s*")) + sorted(base.glob("bc-s*"))[:1]
        if not runs:
            raise SystemExit(f"no runs under {base}: run bench/results.py --configs {args.config} first")
    sources = ["etd", args.experiment, *(f"park:{f}" for f in args.layouts)]
    sources += [f"choice:{c}" for c in args.choices]
    for run in runs:
        sources += [str(run), f"hybrid:{run}"]
    seeds = tuning_seeds(args.seeds)
    jobs = [(s, args.env, seed) for s in sources for seed in seeds]
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(args.workers) as pool:
        results = list(tqdm(pool.map(episode, jobs), total=len(jobs), desc="episodes"))
    waits = np.array([r[0] for r in results]).reshape(len(sources), len(seeds))
    per_car = np.array([r[1] for r in results])
    per_car = per_car.reshape(len(sources), len(seeds), *per_car.shape[1:]).sum(1)  # [source, car, floor]
    idle = per_car.sum(1)
    counts = np.array([r[2] for r in results]).reshape(len(sources), len(seeds), 2).sum(1)
    unlike = [
        sum((r[3] for r in results[k * len(seeds) : (k + 1) * len(seeds)]), Counter())
        for k in range(len(sources))
    ]
    rows = []
    for source, w, t, cars, (outside, differs) in zip(sources, waits, idle, per_car, counts, strict=True):
        diff = w - waits[0]
        lo, hi = ci95(diff)
        share = t / max(t.sum(), 1)
        rows.append(
            {
                "controller": label(source),
                "avg wait (s)": mean_std(w),
                "vs ETD": f"{w.mean() / waits[0].mean():.3f}x",
                "paired diff (s) [95% CI]": "—"
                if source == "etd"
                else f"{diff.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]",
                "idle at 0 / 1-4 / 5-9": f"{share[0]:.2f} / {share[1:5].sum():.2f} / {share[5:].sum():.2f}",
                # whether the cars share the floors out (etd-park: one each) or all wait at the same one
                "each car's main idle floor (share)": " ".join(
                    f"{c.argmax()}({c.max() / max(c.sum(), 1):.2f})" for c in cars
                ),
                "unlike ETD outside spells": f"{differs / max(outside, 1):.2%} of {outside:,}"
                if outside
                else "",
            }
        )
    print_table(rows, title=f"{args.env}, tuning seeds {seeds[0]}-{seeds[-1]}", max_columns=10)
    for source, (_, differs), kinds in zip(sources, counts, unlike, strict=True):
        if differs:  # where a run's "rest of the policy" leaves ETD
            print(f"{label(source)}: its moves unlike ETD outside idle spells, most common first")
            for kind, n in kinds.most_common(3):
                print(f"  {n:>5} of {differs:,}  {kind}")
    shown = [0, 1, 2] + [k for k, s in enumerate(sources) if Path(s).is_dir()]
    shares = {label(sources[k]): idle[k] / max(idle[k].sum(), 1) for k in shown}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(shares, args.out, f"Where idle cars wait: {args.env}, tuning seeds (bench/learned_parking.py)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
