"""OPE estimates next to simulated truth (docs/ope.md): ``python bench/ope_validation.py [--quick]``.

For each env: one log from a stochastic logging controller (or an env's named mixture of them) on
collection seeds; candidates (rule controllers with other epsilons, the logged controllers themselves,
behaviour cloning and InSPO trained on the same log) are evaluated (1) off-policy on the log (PDWIS; FQE
for learned policies) and (2) in closed loop on the evaluation seeds (envs/seeds.py) for the truth. A
rule target is identified from episodes of the same rule, so on a mixed log it is estimated on that
rule's episodes only. Every env the plan makes (collection workers, truth) gets the plan's
``env_kwargs``; the truth runs share one env (libsumo: one simulation per process). Writes
``<out>/ope_validation.csv`` / ``.md`` / ``.json`` and a scatter ``<out>/ope_validation.png`` (estimate
vs truth, with intervals); logs and runs go to ``--work`` (default under the ignored bench/.cache/).

``--gamma``, ``--fqe-iterations``, ``--fqe-steps``, ``--episodes`` and ``--env-arg key=value`` override a
plan (the trust validation of docs/ope.md runs short episodes with a discount); the truth is the mean
*discounted* return at that gamma. Each row records which estimate OPE trusts (``estimate``), and the
rank agreement is also computed over the trusted estimates only.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.controllers import build_controller, parse_component
from envs.registry import make_env
from envs.seeds import evaluation_seeds
from trainer.collect import collect
from trainer.logs import open_log
from trainer.ope import FQEConfig, evaluate_offline
from trainer.policies import load_controller
from trainer.rollout import action_rng
from trainer.threads import single_threaded


@dataclass(frozen=True)
class Plan:
    logger: str | None  # logging controller spec (with ``episodes``), or None with ``dataset``
    episodes: int
    rules: list[str]  # rule candidates (PDWIS only: no FQE for rules)
    train_steps: int  # iterations of BC and InSPO unless ``train_overrides`` sets them
    eval_seeds: int  # truth: evaluation seeds per candidate
    dataset: str | None = None  # an env's named mixture (``envs.registry.dataset_plan``)
    quick_dataset: str | None = None  # the smaller mixture for ``--quick``
    env_kwargs: dict = field(default_factory=dict)  # scenario options for every env made
    train_overrides: dict[str, dict] = field(default_factory=dict)  # per algorithm
    fqe_iterations: int = 30  # Bellman backups (the horizon warning fires below the episode length)
    workers: int = 1  # collection processes (SUMO: >1 keeps the simulations out of this process)


def _traffic_demo_overrides() -> dict[str, dict]:
    """The traffic demo's BC/InSPO settings (envs/traffic/registry.py; InSPO's defaults gridlock the net), with
    the alpha the recorded validation (docs/ope/grid4x4) used: candidates need not be tuned, only reproducible."""
    from envs.registry import demo_plans

    overrides = {algo: dict(o) for algo, o in demo_plans()["traffic"].train_overrides.items()}
    overrides["inspo"]["alpha"] = 5.0
    return overrides


PLANS = {
    "bridge": Plan(
        "optimal@eps=0.3",
        500,
        ["optimal", "optimal@eps=0.1", "optimal@eps=0.3", "optimal@eps=0.6"],
        300,
        32,
    ),
    "elevator:cb10x4:downpeak": Plan(
        "etd@eps=0.1",
        24,
        ["etd", "etd@eps=0.05", "etd@eps=0.1", "etd@eps=0.3"],
        200,
        8,
    ),
    # The first 900 s of the benchmark hour (the traffic demo's scenario: 180 decisions of 16 signals,
    # about a second of SUMO per episode), a 48-episode mixture of rules (OPE needs several logged
    # controllers; the demo itself now logs softmax max-pressure only) and the demo's training settings.
    "sumo:grid4x4": Plan(
        None,
        0,
        [
            "max-pressure",
            "max-pressure@eps=0.05",
            "max-pressure@eps=0.1",
            "max-pressure@eps=0.3",
            "fixed",
            "fixed@eps=0.1",
        ],
        0,
        8,
        dataset="rules",
        quick_dataset="small",
        env_kwargs={"num_seconds": 900},
        train_overrides=_traffic_demo_overrides(),
        fqe_iterations=200,
        workers=2,
    ),
}


def discounted_return(env, controller, seed: int, gamma: float) -> float:
    """One closed-loop episode's team return, discounted per decision step (gamma 1: the episode return)."""
    obs, infos = env.reset(seed=seed)
    controller.reset(env, seed)
    rng, total, discount = action_rng(seed), 0.0, 1.0
    agents = list(env.possible_agents)
    while True:
        actions, _ = controller.act(env, obs, infos, rng)
        obs, rewards, terms, truncs, infos = env.step(actions)
        controller.observe(env, rewards, terms, truncs)
        total += discount * env.team_reward(rewards)
        discount *= gamma
        if not env.agents or all(terms.get(a, False) or truncs.get(a, False) for a in agents):
            return total


def truth(env, env_id: str, source: str, seeds: list[int], gamma: float = 1.0) -> tuple[float, float]:
    controller = (
        build_controller(env_id, source) if "/" not in source else load_controller(source, env_id, env=env)
    )
    with single_threaded():
        returns = [discounted_return(env, controller, s, gamma) for s in seeds]
    return float(np.mean(returns)), float(np.std(returns) / np.sqrt(len(returns)))


def train_runs(env_id: str, log: Path, out: Path, plan: Plan, steps: int) -> list[str]:
    """BC and InSPO on the log (few iterations: candidates of different quality, not tuned results)."""
    from trainer.train_loop import train

    runs = []
    for algo in ("bc", "inspo"):
        run = out / f"run-{algo}"
        try:
            if not (run / "policy" / "policy.json").exists():
                overrides = plan.train_overrides.get(algo, {"iterations": steps})
                gc.collect()  # train() opens the env for its neighbours: no other simulation may be live
                t0 = time.time()
                train(algo, str(log), run, overrides=overrides, seed=0, progress=False)
                print(f"  trained {algo} in {time.time() - t0:.0f} s")
            runs.append(str(run))
        except Exception as err:  # noqa: BLE001 - the trainer is work in progress elsewhere
            print(f"  {algo}: training failed ({type(err).__name__}: {err}); left out")
    return runs


def rule_log(loaded, spec: str):
    """The part of the log a rule target can be identified from: the episodes of the same rule."""
    controllers = getattr(loaded.columns, "controller", None)
    if controllers is None:
        return loaded
    name = parse_component(spec)[0]
    keep = np.array([parse_component(str(c))[0] == name and "," not in str(c) for c in controllers])
    if keep.all() or not keep.any():
        return loaded  # all of it, or none (evaluate_offline then says why not)
    d = loaded.data
    per_episode = {
        f.name: getattr(d, f.name)[keep]
        for f in dataclasses.fields(d)
        if isinstance(getattr(d, f.name), np.ndarray)
    }
    sub = dataclasses.replace(
        d, **per_episode, episode_ids=[e for e, k in zip(d.episode_ids, keep, strict=True) if k]
    )
    # evaluate_offline reads only ``data`` and ``columns.controller``
    return dataclasses.replace(
        loaded, data=sub, columns=dataclasses.replace(loaded.columns, controller=controllers[keep])
    )


def short_warning(text: str) -> str:
    for needle, tag in (
        ("all importance weights are 0", "no covering episode"),
        ("effective sample size", "ESS"),
        ("Bellman backups", "FQE horizon"),
        ("impossible value", "FQE out of range"),
        ("held-out check", "FQE held-out"),
        ("deterministic", "deterministic log"),
        ("behavior_prob is missing", "no behavior_prob"),
    ):
        if needle in text:
            return tag
    return "" if "not available for rule targets" in text else text.split(":")[0]


def validate(env_id: str, work: Path, quick: bool, overrides: dict | None = None) -> tuple[list[dict], dict]:
    """``overrides``: gamma, fqe_iterations, fqe_steps, episodes, env_kwargs (merged into the plan's)."""
    overrides = dict(overrides or {})
    gamma = overrides.pop("gamma", 1.0)
    fqe_steps = overrides.pop("fqe_steps", None)
    env_kwargs = {**PLANS[env_id].env_kwargs, **overrides.pop("env_kwargs", {})}
    plan = dataclasses.replace(PLANS[env_id], env_kwargs=env_kwargs, **overrides)
    episodes, steps, n_eval, dataset = plan.episodes, plan.train_steps, plan.eval_seeds, plan.dataset
    fqe_iterations = plan.fqe_iterations
    if quick:  # smaller, except where the command line set a size
        episodes = episodes if "episodes" in overrides else max(8, episodes // 3)
        steps, n_eval = max(50, steps // 3), max(4, n_eval // 2)
        dataset = plan.quick_dataset or dataset
        if "fqe_iterations" not in overrides:
            fqe_iterations = max(15, fqe_iterations // 2)
    folder = work / env_id.replace(":", "_")
    log = folder / "log"
    seconds: dict[str, float] = {}
    if not log.exists():
        t0 = time.time()
        if dataset:
            collect(
                env_id, log, dataset=dataset, workers=plan.workers, env_kwargs=plan.env_kwargs, progress=False
            )
        else:
            collect(
                env_id,
                log,
                controller=plan.logger,
                episodes=episodes,
                workers=plan.workers,
                env_kwargs=plan.env_kwargs,
                progress=False,
            )
        seconds["collect"] = time.time() - t0
        print(f"{env_id}: collected {dataset or plan.logger} in {seconds['collect']:.0f} s")
    loaded = open_log(log)
    controllers = getattr(loaded.columns, "controller", None)
    logged = set(map(str, controllers)) if controllers is not None else {plan.logger}
    seeds = evaluation_seeds(n_eval)
    t0 = time.time()
    candidates = list(plan.rules) + train_runs(env_id, log, folder, plan, steps)
    seconds["train"] = time.time() - t0
    gc.collect()  # the training env must be gone before the truth env starts (libsumo)
    env = make_env(env_id, **plan.env_kwargs)  # one env for every truth rollout
    seconds["ope"] = seconds["truth"] = 0.0
    rows = []
    try:
        for cand in candidates:
            t0 = time.time()
            part = rule_log(loaded, cand) if "/" not in cand else loaded
            rep = evaluate_offline(
                cand,
                str(log),
                bootstrap=200,
                data=part,
                gamma=gamma,
                fqe_config=FQEConfig(iterations=fqe_iterations)
                if fqe_steps is None
                else FQEConfig(iterations=fqe_iterations, steps_per_iteration=fqe_steps),
            )
            t1 = time.time()
            mean, se = truth(env, env_id, cand, seeds, gamma)
            seconds["ope"] += t1 - t0
            seconds["truth"] += time.time() - t1
            row = {
                "env": env_id,
                "candidate": Path(cand).name if "/" in cand else cand,
                "logged": cand in logged,
                "truth": mean,
                "truth_se": se,
                "wis": rep.wis,
                "wis_lo": rep.wis_ci[0] if rep.wis_ci else None,
                "wis_hi": rep.wis_ci[1] if rep.wis_ci else None,
                "fqe": rep.fqe,
                "fqe_lo": rep.fqe_ci[0] if rep.fqe_ci else None,
                "fqe_hi": rep.fqe_ci[1] if rep.fqe_ci else None,
                "estimate": rep.wis if rep.wis is not None and np.isfinite(rep.wis) else rep.fqe,
                "trusted": {"wis": rep.wis, "fqe": rep.fqe}.get(rep.estimate or ""),
                "trusted_by": rep.estimate or "",
                "wis_trustworthy": rep.wis_trustworthy,
                "fqe_trustworthy": rep.fqe_trustworthy,
                "fqe_range_lo": rep.fqe_range[0] if rep.fqe_range else None,
                "fqe_range_hi": rep.fqe_range[1] if rep.fqe_range else None,
                "fqe_heldout_error": (rep.fqe_heldout or {}).get("relative_error"),
                "ess": rep.ess,
                "episodes": rep.episodes,
                "trustworthy": rep.trustworthy,
                "flags": ", ".join(t for t in map(short_warning, rep.warnings) if t),
                "warnings": " | ".join(w.split(":")[0] for w in rep.warnings),
            }
            rows.append(row)
            print(
                f"  {row['candidate']:<22} truth {mean:8.3f}  WIS {_f(rep.wis)} [{_f(row['wis_lo'])}, "
                f"{_f(row['wis_hi'])}]  FQE {_f(rep.fqe)} [{_f(row['fqe_lo'])}, {_f(row['fqe_hi'])}]"
                f"  ESS {_f(rep.ess)} of {rep.episodes}  held-out {_f(row['fqe_heldout_error'])}"
                f"  {'trusted ' + rep.estimate if rep.trustworthy else 'FLAGGED ' + row['flags']}"
                f"  ({time.time() - t0:.0f} s)"
            )
    finally:
        env.close()
    sizes = {
        "log": dataset or f"{episodes} x {plan.logger}",
        "log_episodes": loaded.data.n_episodes,
        "logged_controllers": sorted(logged),
        "env_kwargs": plan.env_kwargs,
        "eval_seeds": n_eval,
        "fqe_iterations": fqe_iterations,
        "fqe_steps_per_iteration": fqe_steps or FQEConfig().steps_per_iteration,
        "gamma": gamma,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    return rows, sizes


def markdown(df) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _f(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def rank_agreement(rows: list[dict], key: str) -> float | None:
    """Spearman correlation of the estimate with the truth over the candidates that have one.

    ``estimate``: PDWIS where it is defined, else FQE (what OPE would report for each candidate)."""
    pairs = [(r[key], r["truth"]) for r in rows if r[key] is not None and r[key] == r[key]]
    if len(pairs) < 3:
        return None
    est, tru = (np.argsort(np.argsort(np.array(v))) for v in zip(*pairs, strict=True))
    return float(np.corrcoef(est, tru)[0, 1])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = sorted({r["env"] for r in rows})
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 5), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        sub = [r for r in rows if r["env"] == env]
        for key, marker, color in (("wis", "o", "tab:blue"), ("fqe", "s", "tab:orange")):
            pts = [r for r in sub if r[key] is not None and r[key] == r[key]]
            if not pts:
                continue
            x = np.array([r["truth"] for r in pts])
            y = np.array([r[key] for r in pts])
            lo = np.array([r[f"{key}_lo"] if r[f"{key}_lo"] is not None else np.nan for r in pts])
            hi = np.array([r[f"{key}_hi"] if r[f"{key}_hi"] is not None else np.nan for r in pts])
            yerr = np.vstack([np.nan_to_num(y - lo), np.nan_to_num(hi - y)])
            xerr = np.array([r.get("truth_se") or 0.0 for r in pts])
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=marker, color=color, capsize=3, label=key.upper())
            for r, xi, yi in zip(pts, x, y, strict=True):  # numbers: names would overlap in clusters
                ax.annotate(
                    str(sub.index(r) + 1), (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=8
                )
        vals = [r["truth"] for r in sub] + [
            r[k] for r in sub for k in ("wis", "fqe") if r[k] is not None and r[k] == r[k]
        ]
        lo_, hi_ = min(vals), max(vals)
        pad = 0.1 * (hi_ - lo_ + 1e-9)
        ax.plot([lo_ - pad, hi_ + pad], [lo_ - pad, hi_ + pad], "k--", lw=0.8, label="estimate = truth")
        ax.set_title(env)
        ax.set_xlabel("simulated return (evaluation seeds, ± s.e.)")
        ax.set_ylabel("OPE estimate from the log (95% bootstrap CI)")
        ax.legend(fontsize=8, loc="upper left")
        names = [
            f"{i}  {r['candidate']}"
            + ("" if r["trustworthy"] else " (flagged)")
            + ("" if any(r[k] is not None and r[k] == r[k] for k in ("wis", "fqe")) else ": no estimate")
            for i, r in enumerate(sub, 1)
        ]
        ax.text(0.98, 0.02, "\n".join(names), transform=ax.transAxes, fontsize=7, ha="right", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def finite_or_null(value):
    """The report with NaN/Inf as null (strict JSON)."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def overrides(args) -> dict:
    out: dict = {"gamma": args.gamma}
    if args.fqe_iterations:
        out["fqe_iterations"] = args.fqe_iterations
    if args.fqe_steps:
        out["fqe_steps"] = args.fqe_steps
    if args.episodes:
        out["episodes"] = args.episodes
    kwargs = {}
    for item in args.env_arg:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env-arg {item!r}: expected key=value")
        try:
            kwargs[key] = float(value) if "." in value else int(value)
        except ValueError:
            kwargs[key] = value
    if kwargs:
        out["env_kwargs"] = kwargs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/ope")
    parser.add_argument("--work", help="logs and runs (default: bench/.cache/ope_validation/<out name>)")
    parser.add_argument("--env", action="append", help=f"default: {list(PLANS)}")
    parser.add_argument("--quick", action="store_true", help="smaller logs and fewer seeds")
    parser.add_argument("--gamma", type=float, default=1.0, help="discount of the estimates and the truth")
    parser.add_argument("--fqe-iterations", type=int, help="override the plan's FQE backups")
    parser.add_argument("--fqe-steps", type=int, help="FQE gradient steps per backup (default 150)")
    parser.add_argument("--episodes", type=int, help="override the plan's log episodes (single-logger plans)")
    parser.add_argument(
        "--env-arg", action="append", default=[], help="key=value env option (number or text)"
    )
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw <out>/ope_validation.png from its JSON"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.plot_only:
        plot(json.loads((out / "ope_validation.json").read_text())["rows"], out / "ope_validation.png")
        return
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path("bench/.cache/ope_validation") / out.name
    started = time.time()
    rows, sizes = [], {}
    for env_id in args.env or list(PLANS):
        print(f"== {env_id}")
        env_rows, sizes[env_id] = validate(env_id, work, args.quick, overrides(args))
        rows += env_rows
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(out / "ope_validation.csv", index=False)
    summary = {
        env: {
            k: rank_agreement([r for r in rows if r["env"] == env], k)
            for k in ("wis", "fqe", "estimate", "trusted")
        }
        for env in sorted({r["env"] for r in rows})
    }
    report = {
        "rows": rows,
        "rank_spearman": summary,
        "sizes": sizes,
        "quick": args.quick,
        "wall_s": round(time.time() - started, 1),
    }
    (out / "ope_validation.json").write_text(json.dumps(finite_or_null(report), indent=2, allow_nan=False))
    cols = [
        "env",
        "candidate",
        "truth",
        "truth_se",
        "wis",
        "wis_lo",
        "wis_hi",
        "fqe",
        "fqe_lo",
        "fqe_hi",
        "ess",
        "episodes",
        "fqe_heldout_error",
        "trusted_by",
        "trusted",
        "flags",
    ]
    (out / "ope_validation.md").write_text(markdown(df[cols]))
    plot(rows, out / "ope_validation.png")
    print(df[cols].to_string(index=False))
    print("rank agreement (Spearman, estimate vs truth):", json.dumps(summary))
    print(f"wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
