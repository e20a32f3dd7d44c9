"""What the logged experiment (``<rule>@exp=<p>``) costs the operator while it runs: rule vs rule + experiment.

    .venv/bin/python bench/experiment_cost.py                          # 8 elevator / 4 traffic tuning seeds
    .venv/bin/python bench/experiment_cost.py --elevator-seeds 16 --traffic-seeds 8 --p 0.05 0.1 0.2
    .venv/bin/python bench/experiment_cost.py --cases downpeak:etd grid4x4:max-pressure --workers 2
    .venv/bin/python bench/experiment_cost.py --cases downpeak:etd uppeak:etd lunch:etd --p 1 --assign 0.5
    .venv/bin/python bench/experiment_cost.py --cases grid4x4:max-pressure --p 0.1 --keep 0.5 1 --traffic-seeds 32
    .venv/bin/python bench/experiment_cost.py --cases cologne8:max-pressure --p 0.1 --end 0.5 1 --traffic-seeds 32

A learner can only reweight the actions a log contains, so the logs that make a better controller
learnable come from a small randomised experiment around the rule an operator runs today
(envs/elevator/experiment.py, envs/traffic/experiment.py). That experiment is not free: while it runs,
some decisions are worse than the rule's. This bench measures how much, per case (an env and the rule
logged there: ETD on the three cb10x4 profiles, collective too at up-peak where it is the best heuristic;
max-pressure on grid4x4 with the traffic results' episode length, bench/configs/traffic-grid4x4.toml).

Every controller runs on the SAME tuning seeds (``envs.seeds.tuning_seeds``, never evaluation seeds): the
env's randomness (passengers, vehicles) is fixed by the seed and the experiment's draws come from a separate
RNG (``trainer.rollout.action_rng``), so rule and experiment see the same demand and the per-seed
difference is paired. Prints, per case and p: the mean metric (avg wait for elevators, trip delay for
traffic), its ratio to the rule, the paired difference with its standard error and 95% t-interval, and the
episode count; writes ``experiment_cost.json`` and ``experiment_cost.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.report import ci95, mean_and_std  # noqa: E402

# case name -> (env id, rule, env kwargs, primary metric)
CASES = {
    "downpeak:etd": ("elevator:cb10x4:downpeak", "etd", {}, "avg_wait"),
    "uppeak:etd": ("elevator:cb10x4:uppeak", "etd", {}, "avg_wait"),
    "uppeak:collective": ("elevator:cb10x4:uppeak", "collective", {}, "avg_wait"),
    "lunch:etd": ("elevator:cb10x4:lunch", "etd", {}, "avg_wait"),
    # the episode length of the traffic results (bench/configs/traffic-grid4x4.toml: num_seconds = 900)
    "grid4x4:max-pressure": ("sumo:grid4x4", "max-pressure", {"num_seconds": 900}, "delay"),
    "cologne8:max-pressure": ("sumo:cologne8", "max-pressure", {"num_seconds": 900}, "delay"),
}

_ENV: dict[tuple, object] = {}


def _env(env_id: str, env_args: dict):
    """One env per worker process, kept while the worker runs episodes of it (libsumo: one at a time)."""
    from envs.registry import make_env

    key = (env_id, tuple(sorted(env_args.items())))
    if key not in _ENV:
        for old in _ENV.values():
            old.close()
        _ENV.clear()
        _ENV[key] = make_env(env_id, **env_args)
    return _ENV[key]


def run_one(case: str, spec: str, seed: int) -> tuple[str, str, int, dict, float]:
    """One episode of controller ``spec`` in ``case``'s env on ``seed``: (case, spec, seed, metrics, seconds)."""
    from envs.controllers import build_controller
    from trainer.rollout import run_episode

    t0 = time.perf_counter()
    env_id, _, env_args, _ = CASES[case]
    env = _env(env_id, env_args)
    result = run_episode(env, build_controller(env_id, spec), seed)
    return case, spec, seed, result.metrics, time.perf_counter() - t0


def compare(rule: list[float], other: list[float]) -> dict:
    """Paired comparison of ``other`` to ``rule`` (same seeds, same order)."""
    r, o = np.asarray(rule, dtype=float), np.asarray(other, dtype=float)
    diff = o - r
    lo, hi = ci95(diff)
    return {
        "mean": float(o.mean()),
        "std": mean_and_std(o)[1],
        "ratio": float(o.mean() / r.mean()),
        "diff": float(diff.mean()),
        "diff_se": float(diff.std(ddof=1) / math.sqrt(diff.size)) if diff.size > 1 else float("nan"),
        "diff_ci": [lo, hi],
        "episodes": int(diff.size),
    }


# the families' own experiment options (``<rule>@exp=p@<option>=q``): which cases take each, and what it does
ALTERNATIVES = {
    "assign": (
        lambda env_id, rule: rule == "etd" and env_id.startswith("elevator"),
        "elevator ETD cases: act as ETD without its delay term; envs/elevator/experiment.py",
    ),
    "keep": (
        lambda env_id, rule: env_id.startswith("sumo"),
        "traffic cases: keep a near-tie green; envs/traffic/experiment.py",
    ),
    "end": (
        lambda env_id, rule: env_id.startswith("sumo"),
        "traffic cases: end a green that has run 25 s; envs/traffic/experiment.py",
    ),
}


def experiment_specs(
    case: str, ps: Sequence[float], alternatives: Mapping[str, Sequence[float]] | None = None
) -> list[tuple[str, float, str, float]]:
    """(spec, p, alternative, q) per controller of ``case``: the rule, ``<rule>@exp=<p>`` for each p and, for
    each of the family's own alternatives the case takes (ALTERNATIVES), ``<rule>@exp=<p>@<alternative>=<q>``
    for each of its q. Rows without an alternative name ``assign`` with q = 0, as the JSON always had."""
    env_id, rule, _, _ = CASES[case]
    out = [(rule, 0.0, "assign", 0.0)]
    for p in ps:
        out.append((f"{rule}@exp={p:g}", p, "assign", 0.0))
        for name, qs in (alternatives or {}).items():
            if ALTERNATIVES[name][0](env_id, rule):
                out += [(f"{rule}@exp={p:g}@{name}={q:g}", p, name, q) for q in qs]
    return out


def summarize(
    done: list[tuple],
    cases: list[str],
    ps: list[float],
    seeds: dict[str, list[int]],
    alternatives: Mapping[str, Sequence[float]] | None = None,
) -> list[dict]:
    by = {(c, s, seed): m for c, s, seed, m, _ in done}
    rows = []
    for case in cases:
        env_id, rule, env_args, metric = CASES[case]
        base = [by[(case, rule, seed)][metric] for seed in seeds[case]]
        for spec, p, alternative, q in experiment_specs(case, ps, alternatives):
            values = [by[(case, spec, seed)][metric] for seed in seeds[case]]
            rows.append(
                {"case": case, "env": env_id, "env_args": env_args, "controller": spec, "p": p, alternative: q,
                 "metric": metric, "seeds": seeds[case], **compare(base, values)}
            )  # fmt: skip
    return rows


def print_rows(rows: list[dict]) -> None:
    print(
        "| case | controller | metric | mean ± std | ratio to rule | paired diff ± SE | 95% CI of diff | episodes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        rule = r["p"] == 0.0
        diff = "—" if rule else f"{r['diff']:+.2f} ± {r['diff_se']:.2f}"
        ci = "—" if rule else f"[{r['diff_ci'][0]:+.2f}, {r['diff_ci'][1]:+.2f}]"
        print(
            f"| {r['case']} | `{r['controller']}` | {r['metric']} | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{r['ratio']:.3f}x | {diff} | {ci} | {r['episodes']} |"
        )


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Paired difference to the rule with its 95% CI, one panel per case (left: elevators' s, right: traffic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = plt.subplots(1, len(cases), figsize=(max(2.3 * len(cases) + 1.0, 6.5), 3.6), squeeze=False)
    for ax, case in zip(axes[0], cases, strict=True):
        exp = [r for r in rows if r["case"] == case and r["p"] > 0]
        for i, r in enumerate(exp):
            lo, hi = r["diff_ci"]
            ax.errorbar(i, r["diff"], yerr=[[r["diff"] - lo], [hi - r["diff"]]], fmt="o", color="tab:blue",
                        capsize=5)  # fmt: skip
            ax.annotate(f"{r['ratio']:.3f}x", (i, hi), textcoords="offset points", xytext=(0, 4),
                        ha="center", fontsize=8)  # fmt: skip
        ax.axhline(0.0, color="k", lw=0.8)
        ax.margins(y=0.15)
        # q: the family's own alternative's probability (``@assign=q`` / ``@keep=q`` / ``@end=q``)
        qs = [max(r.get(name) or 0.0 for name in ALTERNATIVES) for r in exp]
        labels = [f"p={r['p']:g}" + (f"\nq={q:g}" if q else "") for r, q in zip(exp, qs, strict=True)]
        ax.set_xticks(range(len(exp)), labels)
        ax.set_xlim(-0.6, len(exp) - 0.4)
        metric = exp[0]["metric"] if exp else ""
        ax.set_title(f"{case}\n({exp[0]['episodes'] if exp else 0} seeds)", fontsize=9)
        ax.set_ylabel(f"{metric} − rule (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_cases = [
        c for c in CASES if c != "cologne8:max-pressure"
    ]  # the docs' first run; cologne8 on request
    p.add_argument("--cases", nargs="+", default=default_cases, choices=list(CASES))
    p.add_argument("--p", type=float, nargs="+", default=[0.1, 0.2], help="experiment probabilities")
    for name, (_, what) in ALTERNATIVES.items():
        p.add_argument(
            f"--{name}",
            type=float,
            nargs="*",
            default=[],
            help=f"also <rule>@exp=p@{name}=q for each q ({what})",
        )
    p.add_argument("--elevator-seeds", type=int, default=8, help="number of tuning seeds per elevator case")
    p.add_argument("--traffic-seeds", type=int, default=4, help="number of tuning seeds per traffic case")
    p.add_argument("--workers", type=int, default=2, help="episode processes at once")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "experiment_cost")
    args = p.parse_args(argv)
    if any(not 0.0 < x <= 1.0 for x in args.p):
        p.error(f"--p: every experiment probability must be in (0, 1], got {args.p}")
    alternatives = {name: getattr(args, name) for name in ALTERNATIVES if getattr(args, name)}
    for name, values in alternatives.items():
        if any(not 0.0 < x <= 1.0 for x in values):
            p.error(f"--{name}: every probability must be in (0, 1], got {values}")
    if args.elevator_seeds < 2 or args.traffic_seeds < 2:
        p.error("--elevator-seeds and --traffic-seeds must be at least 2 (a paired interval needs two)")

    from envs.seeds import tuning_seeds

    seeds = {
        c: tuning_seeds(args.traffic_seeds if CASES[c][0].startswith("sumo") else args.elevator_seeds)
        for c in args.cases
    }
    specs = {c: [spec for spec, *_ in experiment_specs(c, args.p, alternatives)] for c in args.cases}
    # traffic first (its episodes are the longest); a worker keeps its env across consecutive tasks
    tasks = [(c, s, seed) for c in args.cases for seed in seeds[c] for s in specs[c]]
    tasks.sort(key=lambda t: not CASES[t[0]][0].startswith("sumo"))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
        done = list(pool.map(run_one, *zip(*tasks, strict=True)))
    wall = time.perf_counter() - t0

    rows = summarize(done, args.cases, args.p, seeds, alternatives)
    print_rows(rows)
    command = ".venv/bin/python bench/experiment_cost.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "experiment_cost.json").write_text(
        json.dumps({"command": command.strip(), "wall_s": round(wall, 1), "rows": rows}, indent=1)
    )
    title = (
        "Logged experiment vs its rule: paired difference, 95% CI; label = ratio to the rule\n"
        f"tuning seeds from {min(map(min, seeds.values()))}; lower is better"
        + "".join(f"; q: the @{name}= probability" for name in alternatives)
    )
    plot(rows, args.out / "experiment_cost.png", title)
    print(
        f"{len(tasks)} episodes in {wall:.0f} s wall with {args.workers} workers; wrote {args.out}/experiment_cost.json, .png"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
