"""Reproduce the InSPO paper's didactic games: every algorithm x every dataset x 5 training seeds.

    .venv/bin/python bench/paper_games.py                # full run -> docs/paper-reproduction.md + PNGs
    .venv/bin/python bench/paper_games.py --only xor-balanced --seeds 2   # a quick look

Datasets are collected through the real path (``trainer.collect`` -> Parquet -> ``load_log``) from
collection seeds. Metrics: for XOR / M-NE the exact probability the learned (stochastic) joint
policy puts on an optimal joint action (the games have one state, so the product of the agents'
softmaxes is the joint policy); for Bridge the greedy policy's return (the env is deterministic)
and the stochastic policy's mean return on the evaluation seeds. Hyperparameters per game are fixed
below, chosen from the tabular reconstruction (docs/algorithm.md, "The tabular check behind the estimator"), never on
evaluation seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALGOS = ["inspo", "inspo-beta0", "inspo-simultaneous", "inspo-noresample", "bc"]
# (game, dataset, setting): "default" is GAME_CONFIG; other settings override it (SETTINGS) for some algos
DATASETS = [
    ("xor", "balanced", "default"),
    ("xor", "uniform", "default"),
    ("mne", "balanced", "default"),
    ("mne", "imbalanced", "default"),
    ("bridge", "optimal", "default"),
    ("bridge", "mixed", "default"),
    ("xor", "balanced", "exact-step"),
]
MATRIX = {
    "hidden": (64, 64),
    "critic_hidden": (64, 64),
    "mu_steps": 300,
    "critic_lr": 1e-3,
    "critic_steps": 2,
    "local_q_steps": 20,
    "local_q_lr": 3e-3,
    "actor_steps": 30,
    "actor_lr": 3e-3,
    "batch_size": 1024,  # one state: a large batch keeps the unnormalized local-Q target's noise small
    "iterations": 40,
}
GAME_CONFIG = {
    "xor": {**MATRIX, "alpha": 0.05, "beta": 0.02},
    # actor_init = mu: the tabular check 5 of docs/algorithm.md starts from mu, where beta decides the equilibrium
    # (tuning seeds 100-102, imbalanced: best equilibrium 3/3 with beta 0.3, 2/3 with beta 0; from a random
    # init both reach it, so the ablation showed nothing)
    "mne": {**MATRIX, "alpha": 0.1, "beta": 0.3, "actor_init": "mu"},
    "bridge": {
        "hidden": (64, 64),
        "critic_hidden": (128, 128),
        "mu_steps": 1000,
        "critic_lr": 1e-3,
        "critic_steps": 4,
        "polyak": 0.01,
        "shared": True,
        "local_q_steps": 2,
        "actor_steps": 2,
        "actor_lr": 1e-3,
        # Tuned on training seeds 100-104 (not the reported 0-4), greedy return (optimal = -1.235):
        #   random init, alpha .05 (an earlier setting): 2/5 optimal (optimal data), 0/5 (mixed)
        #   actor_init=mu, alpha .05 / .3: mixed -8.0, -6.0 / -6.9 (the critic-guided step moves away
        #   from the optimal actions; docs/paper-reproduction.md, Notes)
        #   actor_init=mu, alpha 1, then beta (mixed: optimal runs of 5, mean stochastic return;
        #   optimal data: 3/3 for beta .02, 5/5 for beta 0):
        #     beta .02  4/5  -3.69      beta .01  4/5  -3.14
        #     beta .005 5/5  -2.80      beta 0    5/5  -1.58   <- chosen (all greedy runs optimal, best
        #   stochastic return): on Bridge the entropy term does not help, so `inspo` = `inspo-beta0` here
        "actor_init": "mu",
        "alpha": 1.0,
        "beta": 0.0,
        # The deployed policy is a Polyak average of the actor (decay .99, ~100 iterations): on `mixed`
        # the greedy return of the iterates dips now and then. Training seeds 100-105, share of
        # checkpoints after iteration 200 (every 20) at the optimal return, iterate -> average:
        # 1.00 -> 1.00, .81 -> .90, .90 -> .97, .97 -> 1.00, .94 -> .94, .61 -> .84 (mean .87 -> .94).
        "actor_ema": 0.99,
        "gamma": 0.95,
        "iterations": 800,
    },
}
# The sequential-vs-simultaneous ablation where each agent's update is Eq. 13 fitted to convergence
# (docs/algorithm.md, tabular check 7: with damped updates simultaneous coordinates too). The local Q is fitted to its target
# (200 steps: with 20 the shared local-Q net lags a flipped teammate and can rank the actions wrongly,
# measured) and the actor to the closed form (300 steps); the actor starts from mu plus noise, so each
# agent's initial lean is independent (the tabular check's start). Chosen on training seeds 100-105:
# sequential coordinated 6/6, simultaneous oscillated between (A,A) and (B,B) in 3/6.
SETTINGS = {
    "exact-step": {
        "algos": ["inspo", "inspo-simultaneous"],
        "config": {"actor_init": "mu", "local_q_steps": 200, "actor_steps": 300, "iterations": 20},
    },
}
BC = {"hidden": (64, 64), "lr": 1e-3, "steps_per_iteration": 10}
BC_ITERATIONS = {"xor": 30, "mne": 30, "bridge": 100}
CURVE_POINTS = 20


def log_dir(cache: Path, env_id: str, dataset: str) -> Path:
    from trainer.collect import collect

    path = cache / f"{env_id}-{dataset}"
    if not (path / "agent_steps").exists():
        collect(env_id, path, dataset=dataset, progress=False)
    return path


def evaluate_point(algo, env_id: str, env, greedy_only: bool = False) -> dict[str, float]:
    from envs.seeds import evaluation_seeds
    from trainer.policies import TorchPolicyController
    from trainer.rollout import run_episode

    if env_id in ("xor", "mne"):
        payoff = env.payoff
        a = payoff.shape[0]
        p = algo.action_probs(np.ones((2, 1), np.float32), np.ones((2, a), bool))
        joint = np.outer(p[0], p[1])
        return {"p_opt": float(joint[payoff == payoff.max()].sum()), "joint": joint.round(4).tolist()}
    actor = algo.deployed_actor()
    greedy = TorchPolicyController(actor, algo.agent_ids, deterministic=True)
    out = {"return_greedy": run_episode(env, greedy, evaluation_seeds(1)[0]).episode_return}
    if not greedy_only:
        sample = TorchPolicyController(actor, algo.agent_ids, deterministic=False)
        rets = [run_episode(env, sample, s).episode_return for s in evaluation_seeds(32)]
        out["return_stochastic"] = float(np.mean(rets))
    actor.train()
    return out


def run_overrides(env_id: str, setting: str, algo_name: str, seed: int) -> dict:
    """The config values of one run (also stored with its result, so a changed config reruns it)."""
    if algo_name == "bc":
        overrides = {**BC, "seed": seed, "iterations": BC_ITERATIONS[env_id]}
    else:
        from trainer.algos.config import ALGORITHMS

        # the ablation's defining values (e.g. beta = 0) win over the game's settings
        game = {**GAME_CONFIG[env_id], **SETTINGS.get(setting, {}).get("config", {})}
        overrides = {**game, **ALGORITHMS[algo_name][1], "seed": seed}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def train_one(job: tuple[str, str, str, str, int, str]) -> dict:
    import torch

    torch.set_num_threads(1)
    from envs.registry import make_env
    from trainer.algos import make_algorithm
    from trainer.logs import load_log

    env_id, dataset, setting, algo_name, seed, path = job
    data = load_log(path)
    env = make_env(env_id)
    overrides = run_overrides(env_id, setting, algo_name, seed)
    algo = make_algorithm(algo_name, overrides=overrides)
    algo.setup(data, env.neighbors())
    total = algo.config.iterations
    every = max(1, total // CURVE_POINTS)
    curve = []

    def on_iteration(a, metrics):
        if a.iteration % every == 0:
            point = evaluate_point(a, env_id, env, greedy_only=True)
            curve.append({"iteration": a.iteration, **{k: v for k, v in point.items() if k != "joint"}})

    started = time.time()
    algo.fit(total, on_iteration)
    final = evaluate_point(algo, env_id, env)
    return {
        "env": env_id,
        "dataset": dataset,
        "setting": setting,
        "algo": algo_name,
        "config": overrides,
        "seed": seed,
        "final": final,
        "curve": curve,
        "seconds": time.time() - started,
        "data_return": float(data.episode_returns().mean()),
    }


def priority(job: tuple) -> tuple:
    """Matrix games before Bridge; within each, InSPO, then the acceptance ablations, then the rest."""
    env_id, dataset, _, algo, seed, _ = job
    if algo == "inspo":
        rank = 0
    elif (env_id, dataset, algo) in {
        ("xor", "balanced", "bc"),
        ("xor", "balanced", "inspo-simultaneous"),
        ("mne", "imbalanced", "inspo-beta0"),
    }:
        rank = 1
    else:
        rank = 2
    return (env_id == "bridge", rank, env_id, dataset, algo, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--only", default=None, help="comma list of env-dataset, e.g. xor-balanced")
    parser.add_argument("--algos", default=",".join(ALGOS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default=str(ROOT / "bench" / ".cache" / "paper-logs"))
    parser.add_argument("--results", default=str(ROOT / "bench" / ".cache" / "paper-results.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "paper-reproduction.md"))
    parser.add_argument("--report-only", action="store_true", help="write the report from finished runs only")
    args = parser.parse_args()
    from envs.seeds import TRAINING_SEEDS

    datasets = [d for d in DATASETS if args.only is None or f"{d[0]}-{d[1]}" in args.only.split(",")]
    cache = Path(args.cache)
    paths = {(e, d): str(log_dir(cache, e, d)) for e, d, _ in datasets}
    seeds = list(TRAINING_SEEDS[: args.seeds])
    algos = args.algos.split(",")
    jobs = [
        (e, d, setting, a, s, paths[(e, d)])
        for e, d, setting in datasets
        for a in algos
        if a in SETTINGS.get(setting, {}).get("algos", algos)
        for s in seeds
    ]
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    stale = 0
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            env_id, _, setting, algo, seed = run_key(r)
            if r.get("config") != run_overrides(env_id, setting, algo, seed):
                stale += 1  # trained with other settings than the script's now: run it again
                continue
            done[run_key(r)] = r
    if stale:
        print(f"{stale} cached runs were trained with other settings; they run again", flush=True)
    todo = [] if args.report_only else sorted((j for j in jobs if j[:5] not in done), key=priority)
    print(f"{len(jobs)} runs, {len(todo)} to do", flush=True)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        for r in pool.map(train_one, todo):
            done[run_key(r)] = r
            with results_path.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(
                f"{r['env']}-{r['dataset']} ({r['setting']}) {r['algo']} seed {r['seed']}: "
                f"{ {k: v for k, v in r['final'].items() if k != 'joint'} } ({r['seconds']:.0f}s)",
                flush=True,
            )
    results = [done[j[:5]] for j in jobs if j[:5] in done]
    missing = len(jobs) - len(results)
    argv = " ".join(a for a in sys.argv[1:] if a != "--report-only")
    write_report(results, Path(args.out), seeds, argv, missing)


def run_key(r: dict) -> tuple:
    return (r["env"], r["dataset"], r.get("setting", "default"), r["algo"], r["seed"])


def _stat(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.3f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:.3f} (min {arr.min():.3f})"


def metric_of(r: dict) -> float:
    return r["final"]["p_opt"] if r["env"] in ("xor", "mne") else r["final"]["return_greedy"]


def label_of(r: dict) -> str:
    """The dataset as the report names it: ``balanced``, or ``balanced (exact-step)`` for another setting."""
    setting = r.get("setting", "default")
    return r["dataset"] if setting == "default" else f"{r['dataset']} ({setting})"


def write_report(results: list[dict], out: Path, seeds: list[int], argv: str, missing: int = 0) -> None:
    algos = list(dict.fromkeys(r["algo"] for r in results))
    keys = list(dict.fromkeys((r["env"], label_of(r)) for r in results))
    lines = [
        "# Paper reproduction: XOR, M-NE and Bridge",
        "",
        "Produced by (CPU, about 20 minutes on 2 cores):",
        "",
        "```",
        f".venv/bin/python bench/paper_games.py {argv}".rstrip(),
        "```",
        "",
        f"Training seeds {seeds} (one run each); cells are mean ± std over training seeds (min over seeds).",
        "XOR / M-NE: exact probability the learned stochastic joint policy puts on an optimal joint action",
        "(one state, so it is the product of the two agents' softmaxes). Bridge: return of the greedy policy",
        "(deterministic env: one episode is exact), with the stochastic policy's mean return over the 32",
        "evaluation seeds and the optimal dataset's mean return for reference. Configs: `GAME_CONFIG` in",
        "`bench/paper_games.py` (alpha/beta in normalised reward units, docs/algorithm.md); the",
        "`exact-step` row runs the same game with each agent's update fitted to convergence (`SETTINGS`).",
        "",
        *(
            [
                f"**Partial: {missing} of {missing + len(results)} runs not finished yet** (rerun the command: it resumes).",
                "",
            ]
            if missing
            else []
        ),
        "| game / dataset | " + " | ".join(algos) + " |",
        "|---|" + "---|" * len(algos),
    ]
    by: dict[tuple[str, str, str], list[dict]] = {}
    for r in results:
        by.setdefault((r["env"], label_of(r), r["algo"]), []).append(r)
    for env_id, dataset in keys:
        metric = "P(opt)" if env_id in ("xor", "mne") else "return (greedy)"
        cells = [
            _stat([metric_of(r) for r in by[(env_id, dataset, a)]]) if by.get((env_id, dataset, a)) else "-"
            for a in algos
        ]
        lines.append(f"| {env_id} {dataset}: {metric} | " + " | ".join(cells) + " |")
        if env_id == "bridge":
            cells = [
                _stat([r["final"]["return_stochastic"] for r in by[(env_id, dataset, a)]])
                if by.get((env_id, dataset, a))
                else "-"
                for a in algos
            ]
            lines.append(f"| {env_id} {dataset}: return (stochastic, 32 eps) | " + " | ".join(cells) + " |")
    optimal = [r["data_return"] for r in results if r["env"] == "bridge" and r["dataset"] == "optimal"]
    lines += ["", "## Acceptance checks", ""]
    checks = []
    for ds in ("balanced", "uniform", "balanced (exact-step)"):
        rs = by.get(("xor", ds, "inspo"), [])
        if rs:
            ok = all(metric_of(r) >= 0.95 for r in rs)
            checks.append(
                f"- XOR {ds}: InSPO P(opt) >= 0.95 in every seed: **{'yes' if ok else 'NO'}** "
                f"(per seed {[round(metric_of(r), 3) for r in rs]})"
            )
    for ds, a in (
        ("balanced", "bc"),
        ("balanced", "inspo-simultaneous"),
        ("balanced (exact-step)", "inspo-simultaneous"),
    ):
        rs = by.get(("xor", ds, a), [])
        if rs:
            misses = sum(metric_of(r) < 0.95 for r in rs)
            checks.append(
                f"- XOR {ds}, {a}: below 0.95 in {misses}/{len(rs)} seeds "
                f"(per seed P(opt) {[round(metric_of(r), 3) for r in rs]})"
            )
    for a in ("inspo", "inspo-beta0"):
        rs = by.get(("mne", "imbalanced", a), [])
        if rs:
            hits = sum(metric_of(r) >= 0.9 for r in rs)
            checks.append(
                f"- M-NE imbalanced, {a}: best equilibrium (P >= 0.9) in {hits}/{len(rs)} seeds "
                f"(per seed {[round(metric_of(r), 3) for r in rs]})"
            )
    if optimal:
        ref = float(np.mean(optimal))
        for ds in ("optimal", "mixed"):
            rs = by.get(("bridge", ds, "inspo"), [])
            if rs:
                worst = min(metric_of(r) for r in rs)
                ok = all(metric_of(r) >= ref - 0.05 * abs(ref) for r in rs)
                checks.append(
                    f"- Bridge {ds}: InSPO greedy return within 5% of the optimal dataset's {ref:.3f} "
                    f"in every seed: **{'yes' if ok else 'NO'}** (worst {worst:.3f})"
                )
    lines += checks
    lines += [
        "",
        "## Notes (read with the table)",
        "",
        "- **Sequential vs simultaneous (`exact-step` row).** In the default XOR setting each agent's update",
        "  is damped (30 actor Adam steps per iteration), and then `inspo-simultaneous` coordinates too: each",
        "  agent drifts toward the response to its teammate's current lean, and under small simultaneous",
        "  steps the coordinated direction grows while the anti-coordinated one decays. The paper's failure",
        "  needs each agent's update to be Eq. 13's closed-form step fitted to convergence (docs/algorithm.md, tabular check 7).",
        "  The `exact-step` row does that (local Q 200 steps, actor 300 steps, actor started from mu plus",
        "  noise so each agent's first lean is independent; chosen on training seeds 100-105, where",
        "  sequential coordinated 6/6 and simultaneous failed 3/6). There, simultaneous agents best-respond",
        "  to each other's *old* policy: from an anti-coordinated start both flip every iteration between",
        "  (A,A) and (B,B), two joint actions the data never contain, and P(opt) stays near 0.4. Sequential",
        "  agents respond to the teammate's *new* policy and coordinate in every seed.",
        "- The local Q is one network shared by the agents and warm-started, fitted for `local_q_steps` steps",
        "  per agent. When a teammate's policy flips within one iteration, 20 steps are not enough: on XOR the",
        "  net still ranked an agent's actions the wrong way round (targets 0.006 / 1.98, fit 0.84 / 0.60) and",
        "  the actor briefly undid the coordination. The default rows still end coordinated; the `exact-step`",
        "  row fits the local Q to convergence.",
        "- M-NE runs start the actor from mu (as tabular check 5 of docs/algorithm.md). From a random",
        "  (near-uniform) init the unnormalized teammate weight of the rare best equilibrium (pi/mu = 0.33/0.1)",
        "  already makes it the largest local Q at the first iteration, and `inspo` and `inspo-beta0` both",
        "  reached it in 5/5 seeds: the ablation showed nothing from there.",
        "- Final joint-action bars are means over seeds: each seed is pure on (A,B) or (B,A); the mean splits",
        "  the mass between them.",
        "- Bridge runs start the actor from mu with alpha = 1 and beta = 0 (chosen on training seeds 100-104;",
        "  the table is the comment in `GAME_CONFIG`). On Bridge the entropy term does not help: every beta in",
        "  {0, 0.005} reached the optimal greedy return in 5/5 tuning runs on `mixed`, beta 0.01 and 0.02 in",
        "  4/5, and beta = 0 had the best stochastic return (-1.58 vs -2.80 to -3.69). So `inspo` and",
        "  `inspo-beta0` are the same configuration on Bridge. With a small alpha (0.05-0.3) the critic-guided",
        "  step moved *away* from the optimal actions on `mixed` (-8.0 / -6.0 / -6.9 on tuning seeds). A likely",
        "  cause, not verified: in `mixed` whole episodes are either optimal or uniform random, so teammates'",
        "  logged actions are correlated, while the unnormalized teammate weights pi_j/mu_j use mu's per-agent",
        "  marginals; the local-Q regression then averages the two populations. alpha = 1 keeps pi near mu,",
        "  whose greedy action on the optimal path is the optimal one.",
        "- Bridge `mixed` is not stable across iterations: the greedy return of the *iterate* dips to -6 to -9",
        "  now and then and comes back, so the last iterate depends on where training stops. A first full",
        "  run of this report (deploying the last iterate) ended seed 0 inside such a dip (-2.31; 4/5 seeds",
        "  optimal on `mixed`). We then compared settings on training seeds 100-107 only: one network per",
        "  agent 8/8 optimal but a worse stochastic return (-4.05 vs -1.93), actor lr 3e-4 7/8, alpha 2 7/8,",
        "  linear actor-lr decay 7/8; and a Polyak average of the actor's parameters as the deployed",
        "  policy (`actor_ema = 0.99`), which raised the share of checkpoints after iteration 200 at the",
        "  optimal return from 0.87 to 0.94 (seeds 100-105). The Bridge rows above deploy that average",
        "  (the learning curves show it too); training itself still uses the iterate.",
    ]
    lines += ["", "## Plots", ""]
    for env_id in dict.fromkeys(k[0] for k in keys):
        png = plot_game(env_id, [r for r in results if r["env"] == env_id], algos, out.parent)
        lines += [f"![{env_id}]({png.name})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


def plot_game(env_id: str, results: list[dict], algos: list[str], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(label_of(r) for r in results))
    matrix = env_id in ("xor", "mne")
    key = "p_opt" if matrix else "return_greedy"
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.5 * len(datasets), 8), squeeze=False)
    for col, ds in enumerate(datasets):
        ax = axes[0, col]
        for a in algos:
            rs = [r for r in results if label_of(r) == ds and r["algo"] == a]
            if not rs:
                continue
            x = [p["iteration"] for p in rs[0]["curve"]]
            ys = np.array([[p[key] for p in r["curve"]] for r in rs])
            color = f"C{algos.index(a)}"  # one colour per algorithm in every panel
            ax.plot(x, ys.mean(0), label=a, color=color)
            ax.fill_between(x, ys.min(0), ys.max(0), alpha=0.15, color=color)
        ax.set_title(f"{env_id} {ds}: learning curve", fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel(
            ("P(optimal joint action)" if matrix else "greedy return") + "\n(mean; band: min-max over seeds)"
        )
        ax.legend(fontsize=8)
        ax = axes[1, col]
        if matrix:
            labels = []
            n = len(results[0]["final"]["joint"])
            names = [chr(ord("A") + i) for i in range(n)]
            pairs = [f"({x},{y})" for x in names for y in names]
            width = 0.8 / len(algos)
            for k, a in enumerate(algos):
                rs = [r for r in results if label_of(r) == ds and r["algo"] == a]
                if not rs:
                    continue
                mean_joint = np.mean([np.asarray(r["final"]["joint"]).ravel() for r in rs], axis=0)
                ax.bar(np.arange(len(pairs)) + k * width, mean_joint, width, label=a, color=f"C{k}")
                labels.append(a)
            ax.set_xticks(np.arange(len(pairs)) + 0.4 - width / 2, pairs)
            ax.set_ylabel("final joint-action probability (mean over seeds)")
            ax.legend(fontsize=8)
        else:
            finals = [
                [r["final"]["return_greedy"] for r in results if label_of(r) == ds and r["algo"] == a]
                for a in algos
            ]
            ax.boxplot(finals, showmeans=True)
            ax.set_xticks(range(1, len(algos) + 1), algos, rotation=15)
            data_ret = [r["data_return"] for r in results if label_of(r) == ds]
            ax.axhline(np.mean(data_ret), color="gray", ls="--", label="dataset mean return")
            ax.set_ylabel("final greedy return")
            ax.legend(fontsize=8)
        ax.set_title(f"{env_id} {ds}: final policy", fontsize=10)
    fig.tight_layout()
    path = folder / f"paper-{env_id}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
