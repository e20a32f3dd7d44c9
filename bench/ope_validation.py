"""OPE estimates next to simulated truth (docs/ope.md): ``python bench/ope_validation.py [--quick]``.

For each env: one log from a stochastic logging controller on collection seeds; candidates (rule
controllers with other epsilons, the logged controller itself, behaviour cloning and InSPO trained on
the same log) are evaluated (1) off-policy on the log (PDWIS; FQE for learned policies) and (2) in closed
loop on the evaluation seeds (envs/seeds.py) for the truth. Writes ``<out>/ope_validation.csv`` / ``.md``
and a scatter ``<out>/ope_validation.png`` (estimate vs truth, with intervals).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from envs.controllers import build_controller
from envs.registry import make_env
from envs.seeds import evaluation_seeds
from trainer.collect import collect
from trainer.logs import open_log
from trainer.ope import FQEConfig, evaluate_offline
from trainer.policies import load_controller
from trainer.rollout import run_episode
from trainer.threads import single_threaded

PLANS = {
    # env: (logging controller, log episodes, rule candidates, train steps, eval seeds)
    "bridge": (
        "optimal@eps=0.3",
        500,
        ["optimal", "optimal@eps=0.1", "optimal@eps=0.3", "optimal@eps=0.6"],
        300,
        32,
    ),
    "elevator:cb10x4:downpeak": (
        "etd@eps=0.1",
        24,
        ["etd", "etd@eps=0.05", "etd@eps=0.1", "etd@eps=0.3"],
        200,
        8,
    ),
}


def truth(env_id: str, source: str, seeds: list[int]) -> tuple[float, float]:
    env = make_env(env_id)
    controller = build_controller(env_id, source) if "/" not in source else load_controller(source, env_id)
    with single_threaded():
        returns = [run_episode(env, controller, s).episode_return for s in seeds]
    return float(np.mean(returns)), float(np.std(returns) / np.sqrt(len(returns)))


def train_runs(env_id: str, log: Path, out: Path, steps: int) -> list[str]:
    """BC and InSPO on the log (few iterations: candidates of different quality, not tuned results)."""
    from trainer.train_loop import train

    runs = []
    for algo in ("bc", "inspo"):
        run = out / f"run-{algo}"
        try:
            if not (run / "policy" / "policy.json").exists():
                train(algo, str(log), run, overrides={"iterations": steps}, seed=0, progress=False)
            runs.append(str(run))
        except Exception as err:  # noqa: BLE001 - the trainer is work in progress elsewhere
            print(f"  {algo}: training failed ({type(err).__name__}: {err}); left out")
    return runs


def validate(env_id: str, out: Path, quick: bool) -> list[dict]:
    logger, episodes, rules, steps, n_eval = PLANS[env_id]
    if quick:
        episodes, steps, n_eval = max(8, episodes // 3), max(50, steps // 3), max(4, n_eval // 2)
    folder = out / env_id.replace(":", "_")
    log = folder / "log"
    if not log.exists():
        t0 = time.time()
        collect(env_id, log, controller=logger, episodes=episodes, progress=False)
        print(f"{env_id}: collected {episodes} episodes of {logger} in {time.time() - t0:.0f} s")
    loaded = open_log(log)
    seeds = evaluation_seeds(n_eval)
    candidates = list(rules) + train_runs(env_id, log, folder, steps)
    rows = []
    for cand in candidates:
        t0 = time.time()
        rep = evaluate_offline(
            cand, str(log), bootstrap=200, data=loaded, fqe_config=FQEConfig(iterations=15 if quick else 30)
        )
        mean, se = truth(env_id, cand, seeds)
        row = {
            "env": env_id,
            "candidate": Path(cand).name if "/" in cand else cand,
            "logged": cand == logger,
            "truth": mean,
            "truth_se": se,
            "wis": rep.wis,
            "wis_lo": rep.wis_ci[0] if rep.wis_ci else None,
            "wis_hi": rep.wis_ci[1] if rep.wis_ci else None,
            "fqe": rep.fqe,
            "fqe_lo": rep.fqe_ci[0] if rep.fqe_ci else None,
            "fqe_hi": rep.fqe_ci[1] if rep.fqe_ci else None,
            "ess": rep.ess,
            "episodes": rep.episodes,
            "trustworthy": rep.trustworthy,
            "warnings": " | ".join(w.split(":")[0] for w in rep.warnings),
        }
        rows.append(row)
        print(
            f"  {row['candidate']:<22} truth {mean:8.3f}  WIS {_f(rep.wis)} [{_f(row['wis_lo'])}, {_f(row['wis_hi'])}]"
            f"  FQE {_f(rep.fqe)}  ESS {_f(rep.ess)}  {'ok' if rep.trustworthy else 'FLAGGED'}  ({time.time() - t0:.0f} s)"
        )
    return rows


def markdown(df) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _f(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def rank_agreement(rows: list[dict], key: str) -> float | None:
    """Spearman correlation of the estimate with the truth over the candidates that have one."""
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
            ax.errorbar(x, y, yerr=yerr, fmt=marker, color=color, capsize=3, label=key.upper())
            for r, xi, yi in zip(pts, x, y, strict=True):
                ax.annotate(r["candidate"] + ("" if r["trustworthy"] else " (flagged)"), (xi, yi), fontsize=7)
        vals = [r["truth"] for r in sub] + [
            r[k] for r in sub for k in ("wis", "fqe") if r[k] is not None and r[k] == r[k]
        ]
        lo_, hi_ = min(vals), max(vals)
        pad = 0.1 * (hi_ - lo_ + 1e-9)
        ax.plot([lo_ - pad, hi_ + pad], [lo_ - pad, hi_ + pad], "k--", lw=0.8, label="estimate = truth")
        ax.set_title(env)
        ax.set_xlabel("simulated return (evaluation seeds)")
        ax.set_ylabel("OPE estimate from the log (95% bootstrap CI)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/ope")
    parser.add_argument("--env", action="append", help=f"default: {list(PLANS)}")
    parser.add_argument("--quick", action="store_true", help="smaller logs and fewer seeds")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for env_id in args.env or list(PLANS):
        print(f"== {env_id}")
        rows += validate(env_id, out / "work", args.quick)
    import pandas as pd

    df = pd.DataFrame(rows)
    df.to_csv(out / "ope_validation.csv", index=False)
    summary = {
        env: {k: rank_agreement([r for r in rows if r["env"] == env], k) for k in ("wis", "fqe")}
        for env in sorted({r["env"] for r in rows})
    }
    (out / "ope_validation.json").write_text(json.dumps({"rows": rows, "rank_spearman": summary}, indent=2))
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
        "trustworthy",
    ]
    (out / "ope_validation.md").write_text(markdown(df[cols]))
    plot(rows, out / "ope_validation.png")
    print(df[cols].to_string(index=False))
    print("rank agreement (Spearman, estimate vs truth):", json.dumps(summary))


if __name__ == "__main__":
    main()
