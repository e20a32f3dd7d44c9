"""docs/results.md in one command: logged heuristics vs BC vs InSPO (+ ablations) on evaluation seeds.

    .venv/bin/python bench/results.py                                   # elevator down-peak, full
    .venv/bin/python bench/results.py --log /tmp/elev_mixed --eval-seeds 8 --train-seeds 0 1 2
    .venv/bin/python bench/results.py --ablations --jobs 2               # + inspo-simultaneous/-noresample/-beta0

For each env of ``bench/configs/<name>.toml`` (default: ``elevator-downpeak``):

1. **log**: ``inspo collect --dataset <bench.dataset>`` on collection seeds (skipped with ``--log`` or
   when ``<work>/log`` is complete);
2. **train**: ``inspo train`` for InSPO, BC and ``bc-matched`` (BC with InSPO's ``hidden`` and
   ``shared``, so that "better than BC" compares algorithms on one architecture; plain BC stays beside
   it), and with ``--ablations``, or ``ablations = true`` in the config, the InSPO ablations, on every
   training seed, ``--jobs`` at a time; a finished run (``<run>/policy``) is skipped, an interrupted
   one resumes from its checkpoint (``--resume``: bit-identical);
3. **evaluate** every logged heuristic (the rule each logged controller explores around), every run,
   on the same first ``--eval-seeds`` evaluation seeds of ``envs.seeds`` (paired; never used for
   training or tuning). Each (controller, seed) episode is cached in ``<work>/eval/*.jsonl``;
4. **report**: ``docs/results.md`` (one section per env: table of mean ± std over training seeds, the
   95% t-interval over training seeds, std over episodes, episode counts; the paired difference to
   the best heuristic; the acceptance check; the command) and PNGs under ``docs/results/``. Where
   ``bench/advantage_truth.py`` and ``bench/experiment_cost.py`` have written their JSON under
   ``docs/results/``, their tables (estimator quality; what the logged experiment costs) come first.

Everything is resumable: rerunning the same command only does what is missing. A config whose TOML or
env code (``envs/``) changed since its cache was made starts over (``<work>/inputs.json``). Tuning
happened on tuning seeds only (``envs.seeds.tuning_seeds``); the config records what was chosen and why.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from envs.registry import family  # noqa: E402
from trainer.report import ci95, mean_and_std  # noqa: E402

INSPO = str(Path(sys.executable).with_name("inspo"))
ABLATIONS = ("inspo-simultaneous", "inspo-noresample", "inspo-beta0")
# BC with InSPO's network (its `hidden` and `shared`): "InSPO vs BC" then compares algorithms, not architectures
MATCHED_BC = "bc-matched"


def metrics_for(env_id: str) -> dict[str, str]:
    """The env family's headline metrics (envs/family.py): key -> column title, the primary one first."""
    return {m.key: m.title for m in family(env_id).metrics}


def decimals_for(env_id: str) -> dict[str, int]:
    return {m.key: m.decimals for m in family(env_id).metrics}


def primary_of(metrics: dict[str, str]) -> str:
    return next(iter(metrics))


# Metrics a controller may not buy its primary figure with: traffic's trip delay counts finished trips
# only, so a policy that holds vehicles back lowers it; the delay that also counts the unfinished trips
# must then meet the same target for the acceptance to count as met.
GUARD_METRICS = ("delay_all",)


def guard_failures(inspo: dict, best: dict, metrics: dict[str, str], factor: float) -> list[str]:
    """The guard metrics on which InSPO misses ``factor`` x the best heuristic (each as a short phrase)."""
    return [
        f"{metrics[key]} {inspo[key][0]:.2f} vs {best[key][0]:.2f}"
        for key in GUARD_METRICS
        if key in metrics and key in inspo and key in best and inspo[key][0] > factor * best[key][0]
    ]


def log(msg: str) -> None:
    print(f"[results {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd: list[str], logfile: Path | None = None) -> None:
    log("$ " + shlex.join(cmd))
    if logfile is None:
        subprocess.run(cmd, check=True, cwd=ROOT)
        return
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("a") as f:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


# ---------------------------------------------------------------- config


def shown(path: Path) -> str:
    """A path as the report shows it: relative to the repository where it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def load_bench_config(name: str) -> dict:
    path = ROOT / "bench" / "configs" / f"{name}.toml"
    cfg = tomllib.loads(path.read_text())
    cfg["_path"] = path
    return cfg


def cli_algo(algo: str) -> str:
    """The ``inspo train --algo`` behind a row label (``bc-matched`` is BC with another config)."""
    return "bc" if algo == MATCHED_BC else algo


def algo_config_file(cfg: dict, algo: str, work: Path) -> Path:
    """A flat TOML for one algorithm: [bc] for bc, [inspo] (+ the variant's own override) for InSPO variants.

    ``bc-matched``: [bc] with InSPO's ``hidden`` and ``shared`` as the [inspo] table resolves them
    (its defaults included), so the two differ only in the algorithm.
    """
    from trainer.algos.config import ALGORITHMS, make_config

    if algo == "bc":
        values = dict(cfg.get("bc", {}))
    elif algo == MATCHED_BC:
        inspo = make_config("inspo", overrides=dict(cfg.get("inspo", {})))
        values = {**cfg.get("bc", {}), "hidden": list(inspo.hidden), "shared": inspo.shared}
    else:
        values = dict(cfg.get("inspo", {}))
        values.update(ALGORITHMS[algo][1])  # the ablation's change wins over the chosen config
        values.update(cfg.get(algo, {}))
    path = work / "configs" / f"{algo}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        elif isinstance(value, list | tuple):
            text = "[" + ", ".join(str(v) for v in value) + "]"
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    path.write_text("\n".join(lines) + "\n")
    return path


def logged_heuristics(env_id: str, dataset: str) -> list[str]:
    """The rule behind each logged controller (``etd@eps=0.1`` -> ``etd``), uniform-random excluded."""
    from envs.registry import dataset_plan

    names = []
    for spec, _ in dataset_plan(env_id, dataset):
        base = spec.split("@", 1)[0]
        if base != "random" and base not in names:
            names.append(base)
    return names


LOGGED = "logged "  # label prefix of a logged experiment's own row (``logged etd@exp=1``)


def logged_experiments(env_id: str, dataset: str) -> list[str]:
    """The logged experiments (``<rule>@exp=<p>``) that collected the dataset: the controller the operator
    ran while logging, shown beside what was learned from it (never the "best heuristic": it samples)."""
    from envs.registry import dataset_plan

    return [spec for spec, _ in dataset_plan(env_id, dataset) if "@exp=" in spec]


REFERENCE = "reference "  # label prefix of a rule the log never saw (``reference etd-park``), for scale


def is_heuristic(row: dict) -> bool:
    """A logged deterministic rule's row (the candidates for "best logged heuristic")."""
    return row["runs"] == 1 and not row["label"].startswith((LOGGED, REFERENCE))


# ---------------------------------------------------------------- steps


# Each family's simulator lives in its own folder; the rest of envs/ (registry, controllers, seeds) is shared.
FAMILY_FOLDERS = {"elevator": "envs/elevator", "sumo": "envs/traffic"}


def envs_code_stamp(env_id: str | None = None) -> str | None:
    """A hash of the env code (``+uncommitted`` where it has changes), None outside a git checkout: what
    a cache made from simulations (logs, runs, evaluations, a truth) depends on. With ``env_id``, the
    other families' folders are left out, so a traffic change keeps the elevator's caches and back."""
    import hashlib

    own = FAMILY_FOLDERS.get((env_id or "").split(":")[0])
    others = [f for f in FAMILY_FOLDERS.values() if env_id is not None and f != own]
    excludes = [f":(exclude){f}" for f in others]
    try:
        listing = subprocess.run(
            ["git", "ls-tree", "-r", "HEAD", "--", "envs"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        listing = "".join(
            line + "\n"
            for line in listing.splitlines()
            if not any(line.split("\t", 1)[-1].startswith(f + "/") for f in others)
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "envs", *excludes],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if not listing:
        return None
    return hashlib.sha256(listing.encode()).hexdigest()[:20] + ("+uncommitted" if dirty else "")


def inputs_stamp(cfg: dict) -> dict:
    """What a config's cached log, runs and evaluations were made from: its TOML and the env code.

    The env code enters as a hash of ``envs/`` without the other families' simulators (an observation
    change makes old logs and runs unusable); outside a git checkout only the config counts.
    """
    import hashlib

    stamp = {"config_sha256": hashlib.sha256(cfg["_path"].read_bytes()).hexdigest()}
    envs_tree = envs_code_stamp(cfg["bench"]["env"])
    if envs_tree is not None:
        stamp["envs_tree"] = envs_tree
    return stamp


def ensure_fresh_work(cfg: dict, work: Path) -> None:
    """Start a config's work folder over when its inputs changed (or were never recorded)."""
    import shutil

    stamp_file = work / "inputs.json"
    stamp = inputs_stamp(cfg)
    if work.exists() and any(work.iterdir()):
        old = json.loads(stamp_file.read_text()) if stamp_file.exists() else None
        if old == stamp:
            return
        log(
            f"{work.name}: config or env code changed since its cache was made ({old} -> {stamp}): starting over"
        )
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(json.dumps(stamp, indent=2))


def ensure_log(cfg: dict, work: Path, given: str | None, workers: int) -> Path:
    if given:
        return Path(given)
    out = work / "log"
    done = work / "log.done"
    if done.exists():
        return out
    if out.exists():  # an interrupted collection: start over (collection is the cheap step)
        import shutil

        shutil.rmtree(out)
    bench = cfg["bench"]
    env_args = [f"--env-arg={k}={json.dumps(v)}" for k, v in bench.get("env_args", {}).items()]
    sh(
        [INSPO, "collect", "--env", bench["env"], "--dataset", bench["dataset"], "--workers", str(workers),
         "--out", str(out), *env_args],
        work / "collect.log",
    )  # fmt: skip
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    return out


def train_one(algo: str, seed: int, data: Path, config: Path, work: Path) -> Path:
    run = work / "runs" / f"{algo}-s{seed}"
    if (run / "policy").exists():
        return run
    cmd = [INSPO, "train", "--algo", cli_algo(algo), "--data", str(data), "--out", str(run), "--config", str(config),
           "--seed", str(seed), "--checkpoint-every", "50"]  # fmt: skip
    if (run / "checkpoints" / "last.pt").exists():
        cmd.append("--resume")
    sh(cmd, work / "train-logs" / f"{algo}-s{seed}.log")
    return run


def train_all(cfg: dict, algos: list[str], seeds: list[int], data: Path, work: Path, jobs: int) -> dict:
    configs = {algo: algo_config_file(cfg, algo, work) for algo in algos}
    tasks = [(algo, seed) for seed in seeds for algo in algos]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {t: pool.submit(train_one, t[0], t[1], data, configs[t[0]], work) for t in tasks}
        runs = {t: f.result() for t, f in futures.items()}
    return {algo: [runs[(algo, s)] for s in seeds] for algo in algos}


def _eval_source(
    env_id: str, source: str, seeds: list[int], cache: Path, env_args: dict | None = None
) -> list[dict]:
    """Per-episode metrics of one controller source; cached line by line (resumable)."""
    from envs.registry import make_env
    from trainer.policies import load_controller
    from trainer.rollout import run_episode

    done: dict[int, dict] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["seed"]] = row
    missing = [s for s in seeds if s not in done]
    if missing:
        import torch

        torch.set_num_threads(1)
        env = make_env(env_id, **(env_args or {}))
        controller = load_controller(source, env_id, env=env)
        cache.parent.mkdir(parents=True, exist_ok=True)
        for seed in missing:
            r = run_episode(env, controller, seed)
            row = {"seed": seed, "return": r.episode_return, "length": r.length, **r.metrics}
            with cache.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[seed] = row
        log(f"evaluated {source} on {len(missing)} seeds")
    return [done[s] for s in seeds]


def _eval_task(args: tuple) -> list[dict]:
    """``(env_id, source, seeds, cache path[, env_args])``."""
    return _eval_source(args[0], args[1], args[2], Path(args[3]), *args[4:])


def evaluate_all(
    env_id: str,
    groups: dict[str, list[str]],
    seeds: list[int],
    work: Path,
    jobs: int,
    env_args: dict | None = None,
) -> dict:
    """groups: label -> sources (several = training seeds). Returns label -> source -> episode rows."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    tasks = []
    for label, sources in groups.items():
        for src in sources:
            cache = work / "eval" / (Path(src).name if Path(src).exists() else src.replace("/", "_"))
            tasks.append((label, src, (env_id, src, seeds, str(cache) + ".jsonl", env_args or {})))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_eval_task, [t[2] for t in tasks]))
    out: dict[str, dict[str, list[dict]]] = {label: {} for label in groups}
    for (label, src, _), rows in zip(tasks, results, strict=True):
        out[label][src] = rows
    return out


# ---------------------------------------------------------------- statistics and report


def summarize(results: dict, seeds: list[int], metrics: dict[str, str]) -> list[dict]:
    primary = primary_of(metrics)
    rows = []
    for label, by_source in results.items():
        row = {"label": label, "runs": len(by_source), "episodes": sum(len(v) for v in by_source.values())}
        for key in metrics:
            per_run = [np.mean([e[key] for e in eps]) for eps in by_source.values()]
            all_eps = [e[key] for eps in by_source.values() for e in eps]
            row[key] = mean_and_std(per_run) if len(per_run) > 1 else mean_and_std(all_eps)
            row[key + "_episodes"] = mean_and_std(all_eps)
            # 95% interval: over training seeds for learned methods, over episodes for rules
            row[key + "_ci"] = ci95(per_run) if len(per_run) > 1 else ci95(all_eps)
        # per evaluation seed, averaged over training seeds (for paired differences)
        row["per_seed"] = {
            s: float(np.mean([next(e[primary] for e in eps if e["seed"] == s) for eps in by_source.values()]))
            for s in seeds
        }
        rows.append(row)
    return rows


def plots(
    rows: list[dict], results: dict, name: str, out_dir: Path, metrics: dict[str, str], factor: float
) -> list[Path]:
    primary, title = primary_of(metrics), metrics[primary_of(metrics)]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    labels = [r["label"] for r in rows]
    # 1. the primary metric: mean over training seeds with the 95% interval, each run / episode as a dot
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2.5, 3.8))
    for i, r in enumerate(rows):
        m = r[primary][0]
        lo, hi = r[primary + "_ci"]
        yerr = None if math.isnan(lo) else [[m - lo], [hi - m]]
        color = (
            "tab:gray"
            if is_heuristic(r)
            else "tab:green"
            if r["label"].startswith(LOGGED)
            else "tab:olive"
            if r["label"].startswith(REFERENCE)
            else "tab:blue"
        )
        ax.bar(i, m, color=color, alpha=0.6)
        ax.errorbar(i, m, yerr=yerr, color="k", capsize=4)
        if r["runs"] > 1:
            per_run = [np.mean([e[primary] for e in eps]) for eps in results[r["label"]].values()]
            ax.scatter([i] * len(per_run), per_run, color="k", s=12, zorder=3)
    best = min((r for r in rows if is_heuristic(r)), key=lambda r: r[primary][0], default=None)
    if best is not None:
        ax.axhline(
            factor * best[primary][0], color="tab:red", ls="--", lw=1, label=f"{factor:g} × best heuristic"
        )
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right")
    ax.set_ylabel(title)
    logged = " green = the logged experiment;" if any(r["label"].startswith(LOGGED) for r in rows) else ""
    if any(r["label"].startswith(REFERENCE) for r in rows):
        logged += " olive = a reference rule, not in the log;"
    ax.set_title(f"{name}: mean, 95% interval\n{logged.strip()} dots = training seeds", fontsize=10)
    fig.tight_layout()
    path = out_dir / f"{name}_{primary}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    # 2. paired per-seed difference to the best heuristic
    if best is not None:
        fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2.5, 3.5))
        seeds = list(best["per_seed"])
        data = [[r["per_seed"][s] - best["per_seed"][s] for s in seeds] for r in rows]
        ax.boxplot(data, showmeans=True)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(range(1, len(rows) + 1), labels, rotation=20, ha="right")
        ax.set_ylabel(f"{title} − {best['label']}")
        ax.set_title(f"{name}: paired difference per evaluation seed ({len(seeds)} seeds)")
        fig.tight_layout()
        path = out_dir / f"{name}_paired_diff.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def fmt(ms: tuple[float, float], digits: int = 1) -> str:
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def section(name: str, cfg: dict, rows: list[dict], seeds: list[int], train_seeds: list[int], command: str,
            pngs: list[Path], data_desc: str) -> str:  # fmt: skip
    bench = cfg["bench"]
    metrics, decimals = metrics_for(bench["env"]), decimals_for(bench["env"])
    primary, title = primary_of(metrics), metrics[primary_of(metrics)]
    factor = float(bench.get("target_factor", 0.9))
    heur = [r for r in rows if is_heuristic(r)]
    best = min(heur, key=lambda r: r[primary][0])
    env_args = ", ".join(f"{k}={v}" for k, v in bench.get("env_args", {}).items())
    lines = [
        f"## {bench['env']}{f' ({env_args})' if env_args else ''} — `{name}`",
        "",
        f"Log: {data_desc}. Evaluation: the first {len(seeds)} evaluation seeds of `envs.seeds` "
        f"({seeds[0]}–{seeds[-1]}), the same for every controller (paired); learned methods over "
        f"training seeds {train_seeds}. Config: `{shown(cfg['_path'])}` (its comment says how it "
        "was chosen).",
        "",
        "Learned methods: **mean ± std over training seeds** (of each run's mean over episodes), 95% "
        "t-interval over training seeds, and std over all episodes. Rules are deterministic: mean ± std "
        "and 95% interval over episodes."
        + (
            " A `logged` row is the experiment that collected the log, as the operator ran it (it samples, "
            "from its own seeded generator, so it is paired too; never the best heuristic)."
            if any(r["label"].startswith(LOGGED) for r in rows)
            else ""
        )
        + (
            " A `reference` row is a rule the log never saw, shown for scale (the config's comment says "
            "why); never the best heuristic."
            if any(r["label"].startswith(REFERENCE) for r in rows)
            else ""
        ),
        "",
        "| controller | runs | episodes | "
        + " | ".join(metrics.values())
        + f" | 95% interval ({title}) | std over episodes | vs best heuristic (paired) |",
        "|---|---|---|" + "---|" * len(metrics) + "---|---|---|",
    ]
    for r in rows:
        diffs = [r["per_seed"][s] - best["per_seed"][s] for s in seeds]
        dm = float(np.mean(diffs))
        dlo, dhi = ci95(diffs)
        lo, hi = r[primary + "_ci"]
        cells = [fmt(r[k], decimals[k]) for k in metrics]
        diff = "—" if r is best else f"{dm:+.2f} [{dlo:+.2f}, {dhi:+.2f}]"
        lines.append(
            f"| {r['label']} | {r['runs']} | {r['episodes']} | " + " | ".join(cells)
            + f" | [{lo:.2f}, {hi:.2f}] | {r[primary + '_episodes'][1]:.1f} | {diff} |"
        )  # fmt: skip
    lines += ["", "```bash", command, "```", ""]
    by_label = {r["label"]: r for r in rows}
    inspo = by_label.get("inspo")
    # "better than BC" is judged against BC with InSPO's network where it ran; plain BC stays for comparison
    bc = by_label.get(MATCHED_BC, by_label.get("bc"))
    if inspo is not None:
        target = factor * best[primary][0]
        met_target = inspo[primary][0] <= target
        guarded = guard_failures(inspo, best, metrics, factor) if met_target else []
        met_target = met_target and not guarded
        verdict = ""
        if bc is not None:
            diffs = [inspo["per_seed"][s] - bc["per_seed"][s] for s in seeds]
            dlo, dhi = ci95(diffs)
            # better = lower with the paired interval below 0 (the acceptance asks for a CI excluding 0)
            if guarded:
                judged = "lower on it, **not better** (trips left unfinished)"
            elif inspo[primary][0] < bc[primary][0]:
                judged = "**better**" if dhi < 0 else "lower, **not significantly**"
            else:
                judged = "**not better**"
            verdict = (
                f"vs `{bc['label']}` {bc[primary][0]:.2f} → {judged} "
                f"(paired difference per evaluation seed {np.mean(diffs):+.2f} [{dlo:+.2f}, {dhi:+.2f}], "
                f"{'excluding' if dhi < 0 or dlo > 0 else 'including'} 0)."
            )
            if bc["label"] == MATCHED_BC and "bc" in by_label:
                verdict += f" Plain BC (its own network): {by_label['bc'][primary][0]:.2f}."
            for r in rows:
                if r["label"].startswith(LOGGED):
                    diffs = [inspo["per_seed"][s] - r["per_seed"][s] for s in seeds]
                    dlo, dhi = ci95(diffs)
                    verdict += (
                        f" The controller that made the log, `{r['label'][len(LOGGED) :]}`, itself: "
                        f"{r[primary][0]:.2f} (InSPO minus it per evaluation seed {np.mean(diffs):+.2f} "
                        f"[{dlo:+.2f}, {dhi:+.2f}])."
                    )
        lines += [
            f"**Acceptance** (InSPO {title} ≤ {factor:g} × best logged heuristic `{best['label']}` = "
            f"{target:.2f}, and better than `{bc['label'] if bc else MATCHED_BC}`; `{MATCHED_BC}` is BC with "
            "InSPO's network): InSPO "
            f"{inspo[primary][0]:.2f} → target {'**met**' if met_target else '**not met**'}"
            + (f" (below it only by leaving trips unfinished: {'; '.join(guarded)})" if guarded else "")
            + f"; {verdict}",
            "",
        ]
    for p in pngs:
        lines.append(f"![{p.stem}]({p.relative_to(ROOT / 'docs').as_posix()})")
    lines.append("")
    return "\n".join(lines)


def overview_row(name: str, cfg: dict, rows: list[dict]) -> str:
    """One line of the summary table at the top of docs/results.md."""
    metrics = metrics_for(cfg["bench"]["env"])
    primary = primary_of(metrics)
    factor = float(cfg["bench"].get("target_factor", 0.9))
    best = min((r for r in rows if is_heuristic(r)), key=lambda r: r[primary][0])
    by_label = {r["label"]: r for r in rows}

    def cell(label: str) -> str:
        r = by_label.get(label)
        return "–" if r is None else f"{r[primary][0]:.2f} ± {r[primary][1]:.2f}"

    inspo = by_label.get("inspo")
    target = factor * best[primary][0]
    met = "–"
    if inspo is not None:
        guarded = guard_failures(inspo, best, metrics, factor)
        met = "**yes**" if inspo[primary][0] <= target and not guarded else "**no**"
    return (
        f"| `{name}` | {metrics[primary]} | {best['label']} {best[primary][0]:.2f} | {cell('inspo')} | "
        f"{cell(MATCHED_BC)} | {cell('bc')} | ≤ {factor:g} × best = {target:.2f} | {met} |"
    )


OVERVIEW_COLUMNS = 8  # cells of an overview row (rows kept from a report made before bc-matched have 7)


def widen_old_row(line: str) -> str:
    """An overview row from a report without the bc-matched column, with a "–" in it."""
    if not line:
        return line
    cells = line.strip().strip("|").split("|")
    if len(cells) == OVERVIEW_COLUMNS - 1:
        cells.insert(4, " – ")
    return "|" + "|".join(cells) + "|"


ADVANTAGE_TRUTH = ROOT / "docs" / "results" / "advantage" / "advantage_truth.json"
TRAFFIC_TRUTH = ROOT / "docs" / "results" / "advantage" / "traffic_truth.json"  # --env sumo:grid4x4
# --futures 32 --states 40 --seeds 0 1 2 --replicate ... --out docs/results/advantage_p02 (etd@exp=0.2)
ADVANTAGE_TRUTH_P02 = ROOT / "docs" / "results" / "advantage_p02" / "advantage_truth.json"
# the same settings on other held-out states (--tuning-skip 2 --out docs/results/advantage_p02_confirm)
ADVANTAGE_TRUTH_P02_CONFIRM = ROOT / "docs" / "results" / "advantage_p02_confirm" / "advantage_truth.json"
# --behaviour etd@exp=1@assign=0.5 --decisions assign --out docs/results/advantage_assign
ASSIGN_TRUTH = ROOT / "docs" / "results" / "advantage_assign" / "advantage_truth.json"
# --env sumo:grid4x4 --behaviour max-pressure@exp=0.1@keep=0.5 --decisions keep --out docs/results/advantage_keep
KEEP_TRUTH = ROOT / "docs" / "results" / "advantage_keep" / "traffic_truth.json"
EXPERIMENT_COST = ROOT / "docs" / "results" / "experiment_cost" / "experiment_cost.json"
# bench/experiment_cost.py --assign ... --out docs/results/experiment_cost_assign: the elevator's @assign=q option
EXPERIMENT_COST_ASSIGN = ROOT / "docs" / "results" / "experiment_cost_assign" / "experiment_cost.json"
# bench/experiment_cost.py --keep / --end ... --out docs/results/experiment_cost_keep (_end): traffic's options
EXPERIMENT_COST_KEEP = ROOT / "docs" / "results" / "experiment_cost_keep" / "experiment_cost.json"
EXPERIMENT_COST_END = ROOT / "docs" / "results" / "experiment_cost_end" / "experiment_cost.json"

# bench/advantage_truth.py's held-out decisions by kind: (what the states are, the section title's suffix)
ESTIMATOR_DECISIONS = {
    "idle": ("idle-car", ""),
    "idle-p02": ("idle-car", ", idle cars under the p = 0.2 parking experiment (a measurable truth)"),
    "idle-p02-confirm": ("idle-car", ", idle cars under the p = 0.2 parking experiment, other held-out states "
                         "(tuning seeds 20002-20003: the confirmation)"),
    "assign": ("who-stops-for-a-call", ", assignment decisions"),
    "traffic": ("intersection (grid4x4)", ", traffic"),
    "keep": ("near-tie green (grid4x4: max-pressure would leave a green within a vehicle of the best)",
             ", traffic, near-tie greens"),
}  # fmt: skip


def estimator_section(path: Path, kind: str = "idle") -> str:
    """Estimator quality from bench/advantage_truth.py's JSON ("" when it was never run), on the held-out
    decisions of ``kind`` (ESTIMATOR_DECISIONS: the elevator's idle cars or assignments, traffic's every
    choice or near-tie greens)."""
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    # the JSON may not record its arguments: then the default command is shown, and said to be a guess
    command = data.get("command", ".venv/bin/python bench/advantage_truth.py  # arguments not recorded")
    decisions, where = ESTIMATOR_DECISIONS[kind]
    lines = [
        f"## Estimator quality{where} (bench/advantage_truth.py)",
        "",
        "Each per-agent advantage estimator, trained on a log with the actor frozen at the behaviour, against "
        f"the truth from paired simulations of every legal action at held-out {decisions} states (tuning seeds; "
        "the script's docstring says how; `residual` has network heads, `residual:linear` linear heads "
        "solved in closed form (`adv_heads`); `residual:<credit>` is the residual estimator with that "
        "`reward_credit`, always against the team's truth). *Supported*: alternatives the behaviour takes at that state, "
        "what a log can teach; *all*: every legal alternative. Sign accuracy counts the clear pairs, "
        "|truth| > 2 SE.",
        "",
        "The truth's own *reliability* (even against odd futures, Spearman-Brown corrected) bounds any "
        "estimator's correlation with it at its square root, the *ceiling*; the disattenuated correlation "
        f"divides by it (shown only where the ceiling is at least {MIN_CEILING}: below it the reliability "
        "estimate is itself mostly noise). The *mean* columns compare the average effect over the pairs.",
        "",
        "| estimator | alternatives | correlation with the truth | disattenuated | sign accuracy (clear "
        "pairs) | clear pairs | pairs | mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for subset, table in data["summary"].items():
        truth = table.get("truth")
        if truth is not None:
            lines.append(
                f"| truth (reliability {truth['reliability']:+.2f}, ceiling {truth['ceiling']:.2f}) | {subset} "
                f"| | | | | {truth['n']} | {truth['mean']:+.4f} ± {truth['mean_se']:.4f} |"
            )
        trusted = truth is not None and truth["ceiling"] >= MIN_CEILING
        for name, s in table.items():
            if name == "truth":
                continue
            dis = f"{s.get('corr_disattenuated', float('nan')):+.2f}" if trusted else "–"
            lines.append(
                f"| {name} | {subset} | {s['corr']:+.3f} | {dis} "
                f"| {s['sign_acc']:.0%} | {s['n_clear']} | {s['n']} | {s.get('mean', float('nan')):+.4f} |"
            )
    lines += replicate_lines(data)
    precision = precision_lines(data) if kind.startswith("idle-p02") else []
    lines += precision + refined_lines(path.with_name(path.stem + "_refined.json"))
    for subset, r in data.get("truth_noise", {}).items():
        se = ", ".join(f"{k}: {v:.4f}" for k, v in r["mean_se_by_futures"].items())
        lines.append(
            f"\nThe truth's noise ({subset}): signal share 1 − mean SE²/var {r['signal_share']:+.2f}; "
            f"mean SE by number of futures {se}."
        )
    # each residual variant (team credit) on each training seed the bench ran ("residual" or "residual s<k>")
    supported = data["summary"].get("supported", {})
    for variant in ("residual", "residual:linear"):
        runs = [v for k, v in supported.items() if k == variant or k.startswith(variant + " s")]
        if not runs or kind in ("traffic", "keep"):
            continue
        corr = float(np.mean([r["corr"] for r in runs]))
        sign = float(np.mean([r["sign_acc"] for r in runs]))
        met = corr >= 0.5 and sign >= 0.7
        over = f" (mean over {len(runs)} training seeds)" if len(runs) > 1 else ""
        target = "The idle-car target on these decisions" if kind == "assign" else "Target"
        lines += [
            "",
            f"**{target}** (`{variant}`, supported alternatives: correlation ≥ 0.5 and sign accuracy ≥ 70%)"
            f"{over}: {corr:+.2f}, {sign:.0%} → {'**met**' if met else '**not met**'}.",
        ]
        if precision:
            measured = measurable_summary(data)
            seeds = [v for k, v in measured.items() if k == variant or k.startswith(variant + " s")]
            each = [r["corr_measurable"] for r in seeds]
            corr_m = float(np.mean(each))
            within = float(np.mean([r["corr_measurable_within"] for r in seeds]))
            t = measured["truth"]
            lines.append(
                f"On the measurable pairs only ({t['n_measurable']} pairs with the truth's SE ≤ "
                f"{t['measurable_se']:g}; the truth's signal share there {t['signal_share_measurable']:+.2f}, "
                f"split-half {t['reliability_measurable']:+.2f}): "
                f"{corr_m:+.2f} ({', '.join(f'{c:+.2f}' for c in each)}), within each alternative "
                f"{within:+.2f}; sign accuracy as above → {'met' if corr_m >= 0.5 and sign >= 0.7 else 'not met'} "
                "there."
            )
    lines += ["", "```bash", command, "```", ""]
    for png in (path.with_suffix(".png"), path.with_name(path.stem + "_measurable.png")):
        if png.exists():
            lines += [f"![{png.stem}]({png.relative_to(ROOT / 'docs').as_posix()})", ""]
    return "\n".join(lines)


MIN_CEILING = 0.3  # the truth's ceiling below which a disattenuated correlation is not shown


def measurable_summary(data: dict) -> dict[str, dict]:
    """bench/advantage_truth.py's summary of the supported pairs, recomputed from the JSON's rows (a JSON
    written before the precision-aware figures existed has the rows they need)."""
    from bench.advantage_truth import MEASURABLE_SE, summarize

    rows = [r for r in data["rows"] if r["behaviour_prob"] > 0]
    names = [n for n in data["summary"].get("supported", {}) if n != "truth"]
    limit = data["summary"].get("supported", {}).get("truth", {}).get("measurable_se", MEASURABLE_SE)
    return summarize(rows, names, limit)


def refined_lines(path: Path) -> list[str]:
    """bench/truth_refine.py's JSON (where it was run): the estimates scored against the truth with more
    futures at the noisy states, beside the same figures with the 32 futures."""
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    before, after = data["summary"]["before"], data["summary"]["after"]
    t0, t1 = before["truth"], after["truth"]
    lines = [
        "",
        "The same estimates against a more precise truth: at every state with a pair whose SE exceeded "
        f"{t0['measurable_se']:g}, more paired futures of every legal action (`bench/truth_refine.py`; nothing "
        f"retrained). The truth's reliability goes from {t0['reliability']:+.2f} to {t1['reliability']:+.2f}, "
        f"its measurable pairs from {t0['n_measurable']} to {t1['n_measurable']}.",
        "",
        "| estimator | correlation, all pairs: 32 futures → refined | weighted by 1/SE² | measurable pairs | "
        "sign accuracy (clear pairs) |",
        "|---|---|---|---|---|",
    ]
    for name, s in after.items():
        if name == "truth":
            continue
        b = before[name]
        lines.append(
            f"| {name} | {b['corr']:+.3f} → {s['corr']:+.3f} | {b['corr_weighted']:+.3f} → {s['corr_weighted']:+.3f} "
            f"| {b['corr_measurable']:+.3f} → {s['corr_measurable']:+.3f} | {b['sign_acc']:.0%} ({b['n_clear']}) → "
            f"{s['sign_acc']:.0%} ({s['n_clear']}) |"
        )
    return lines + ["", "```bash", data["command"], "```"]


def precision_lines(data: dict) -> list[str]:
    """The correlations that account for the truth's own precision: weighted by 1/SE² and over the
    measurable pairs only (bench/advantage_truth.py, ``summarize``), beside the plain one."""
    table = measurable_summary(data)
    t = table["truth"]
    rows = [r for r in data["rows"] if r["behaviour_prob"] > 0]
    se = np.array([r["se"] for r in rows])
    quiet = np.array([r["truth"] for r in rows])[se <= t["measurable_se"]]
    lines = [
        "",
        f"The truth's precision differs from pair to pair by a factor of {se.max() / se.min():.0f}: its SE runs "
        f"from {se.min():.4f} to {se.max():.4f} (an idle car's move in a quiet building is pinned down by the "
        "futures, one in the congested middle of the peak is not), while the measurable pairs' truths spread "
        f"by {quiet.std():.4f} (SD). The plain correlation is set by the few noisiest pairs. "
        f"Weighted by 1/SE² the truth's reliability is {t['reliability_weighted']:+.2f} "
        f"({t['n_effective']:.1f} effective pairs); over the {t['n_measurable']} *measurable* pairs (SE ≤ "
        f"{t['measurable_se']:g}) it is {t['reliability_measurable']:+.2f} (split-half; a few pairs whose halves "
        "disagree by several SE move it far) and their signal share (1 − mean SE²/var, from each pair's own SE) "
        f"{t['signal_share_measurable']:+.2f}, so no estimator can correlate with them above about "
        f"{np.sqrt(max(t['signal_share_measurable'], 0.0)):.2f}; {t['action_share_measurable']:.0%} "
        "of their truths' spread is which alternative (an up or a down move): an estimator that knew only "
        "that would correlate there too. *Within each alternative* removes each alternative's mean from the "
        "truth and the estimate: what is left is whether the estimate follows the state.",
        "",
        "| estimator | correlation, all supported pairs | weighted by 1/SE² | measurable pairs "
        "| measurable, within each alternative |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s['corr']:+.3f} | {s['corr_weighted']:+.3f} | {s['corr_measurable']:+.3f} "
        f"| {s['corr_measurable_within']:+.3f} |"
        for name, s in table.items()
        if name != "truth"
    ]
    return lines


def replicate_lines(data: dict) -> list[str]:
    """bench/advantage_truth.py --replicate: each estimator against itself trained on a second log (the
    supported pairs), the bound that and the truth's reliability put on its correlation with the truth, and
    how much of the estimates' spread (and the truth's) is only which alternative it is."""
    from bench.advantage_truth import action_share

    table = data["summary"].get("supported", {})
    runs = {name: s for name, s in table.items() if "replicate_corr" in s}
    if not runs:
        return []
    rows = [r for r in data["rows"] if r["behaviour_prob"] > 0]
    actions = np.array([r["action"] for r in rows])

    def share(name: str) -> str:
        return f"{action_share(np.array([r[name] for r in rows]), actions):.0%}"

    lines = [
        "",
        f"Each estimator trained again on a second log of the same behaviour (`{data.get('replicate_log', '')}`, "
        "other collection seeds; supported pairs). Its *reliability* is the correlation of the two logs' "
        "estimates; with the truth's it bounds the correlation with the truth at √(reliability × the truth's), "
        "the *joint ceiling*. Far below it, the estimator reproduces estimates that are not the truth's: more "
        "episodes would not close the gap. *Which alternative*: the share of the spread over the pairs that "
        f"the alternative's identity alone explains (one mean per action); the truth's is {share('truth')}.",
        "",
        "| estimator | reliability (log against log) | joint ceiling | correlation with the truth, first log "
        "| second log | which alternative |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {s['replicate_corr']:+.3f} | {s['joint_ceiling']:.2f} | {s['corr']:+.3f} "
        f"| {s['replicate_truth_corr']:+.3f} | {share(name)} |"
        for name, s in runs.items()
    ]
    measured = {name: s for name, s in runs.items() if "replicate_corr_measurable" in s}
    if measured:
        limit = table["truth"].get("measurable_se")
        lines += [
            "",
            f"The same over the measurable pairs only (the truth's SE ≤ {limit:g}; the truth's reliability there "
            f"{table['truth'].get('reliability_measurable', float('nan')):+.2f}):",
            "",
            "| estimator | reliability (log against log) | joint ceiling | correlation with the truth, first log "
            "| second log |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {s['replicate_corr_measurable']:+.3f} | {s['joint_ceiling_measurable']:.2f} "
            f"| {s['corr_measurable']:+.3f} | {s['replicate_truth_corr_measurable']:+.3f} |"
            for name, s in measured.items()
        ]
    return lines


# experiment_cost_section's title suffix and what the rows compare, per experiment option ("": the plain one)
COST_SECTIONS = {
    "": (
        "",
        "Each rule alone and with the logged experiment (`<rule>@exp=<p>`: docs/elevator.md, docs/traffic.md) "
        "on the same tuning seeds (paired): what an operator pays while collecting the logs a learner needs.",
    ),
    "assign": (
        " with the assignment alternative",
        "ETD alone, with the parking experiment, and with it plus `@assign=q` (outside idle spells each car "
        "acts with probability q as ETD without its delay term would: envs/elevator/experiment.py), on the "
        "same tuning seeds (paired).",
    ),
    "keep": (
        " with the keep alternative",
        "Max-pressure alone, with the green-time experiment, and with it plus `@keep=q` (where max-pressure "
        "would leave a green within one vehicle of the best phase's pressure, the intersection keeps it with "
        "probability q: envs/traffic/experiment.py), on the same tuning seeds (paired).",
    ),
    "end": (
        " with the end alternative",
        "Max-pressure alone, with the green-time experiment, and with it plus `@end=q` (where a green has run "
        "25 s and max-pressure would keep it, the intersection ends it for the best other phase with "
        "probability q: envs/traffic/experiment.py), on the same tuning seeds (paired).",
    ),
}


def experiment_cost_section(path: Path, alternative: str = "") -> str:
    """What the logged experiment costs, from bench/experiment_cost.py's JSON ("" when it was never run);
    ``alternative``: the run with the elevator's assignment alternative (``"assign"``) or traffic's keep or
    end alternative (``"keep"``, ``"end"``)."""
    if not path.exists():
        return ""
    data = json.loads(path.read_text())
    suffix, intro = COST_SECTIONS[alternative]
    flag = f" --{alternative}" if alternative else ""
    title = f"## What the logged experiment costs{suffix} (bench/experiment_cost.py{flag})"
    lines = [
        title,
        "",
        intro,
        "",
        "| case | controller | metric | mean ± std | ratio to the rule | paired difference ± SE | 95% interval "
        "| episodes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        rule = r["p"] == 0.0
        diff = "—" if rule else f"{r['diff']:+.2f} ± {r['diff_se']:.2f}"
        ci = "—" if rule else f"[{r['diff_ci'][0]:+.2f}, {r['diff_ci'][1]:+.2f}]"
        lines.append(
            f"| {r['case']} | {r['controller']} | {r['metric']} | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{r['ratio']:.3f}x | {diff} | {ci} | {r['episodes']} |"
        )
    lines += ["", "```bash", data["command"], "```", ""]
    png = path.with_suffix(".png")
    if png.exists():
        lines += [f"![{png.stem}]({png.relative_to(ROOT / 'docs').as_posix()})", ""]
    return "\n".join(lines)


def previous_report(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Overview rows and sections of an existing report, by config name (to keep those not rerun)."""
    if not path.exists():
        return {}, {}
    rows, sections, current = {}, {}, None
    for line in path.read_text().splitlines():
        if line.startswith("| `") and current is None:
            rows[line.split("`")[1]] = line
        elif line.startswith("## "):
            current = line.rsplit("`", 2)[-2] if line.endswith("`") else None
            if current is not None:
                sections[current] = line
        elif current is not None:
            sections[current] += "\n" + line
    return rows, {k: v.rstrip("\n") + "\n" for k, v in sections.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--configs",
        nargs="*",
        default=["elevator-downpeak"],
        help="names in bench/configs/; none (`--configs` alone): only render the page again (the benches' "
        "JSON sections anew, every config's section kept as the last run wrote it)",
    )
    p.add_argument("--log", default=None, help="reuse this log instead of collecting (single config only)")
    p.add_argument("--train-seeds", type=int, nargs="+", default=None, help="default: the config's")
    p.add_argument("--eval-seeds", type=int, default=None, help="number of evaluation seeds (max 32)")
    p.add_argument(
        "--ablations",
        action="store_true",
        help="also train/evaluate " + ", ".join(ABLATIONS) + " (a config can ask with `ablations = true`)",
    )
    p.add_argument("--jobs", type=int, default=2, help="trainings / evaluation processes at once")
    p.add_argument("--work", default=str(ROOT / "bench" / ".cache" / "results"), help="runs, logs, cache")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--skip-train", action="store_true", help="only evaluate runs that already finished")
    args = p.parse_args(argv)

    from envs.seeds import evaluation_seeds

    sections: dict[str, str] = {}
    overview: dict[str, str] = {}
    for name in args.configs:
        cfg = load_bench_config(name)
        bench = cfg["bench"]
        work = Path(args.work) / name
        ensure_fresh_work(cfg, work)
        train_seeds = args.train_seeds or list(bench.get("train_seeds", [0, 1, 2]))
        n_eval = args.eval_seeds or int(bench.get("eval_seeds", 32))
        seeds = evaluation_seeds(n_eval)
        data = ensure_log(cfg, work, args.log if len(args.configs) == 1 else None, args.jobs)
        # ablations: with --ablations for every config, or where the config asks (`ablations = true`)
        ablate = args.ablations or bool(bench.get("ablations", False))
        algos = ["inspo", "bc", MATCHED_BC, *(ABLATIONS if ablate else ())]
        if args.skip_train:
            runs = {a: sorted(work.glob(f"runs/{a}-s*/policy")) for a in algos}
            runs = {a: [r.parent for r in v if int(r.parent.name.rsplit("-s", 1)[1]) in train_seeds]
                    for a, v in runs.items()}  # fmt: skip
            runs = {a: v for a, v in runs.items() if v}
        else:
            runs = train_all(cfg, algos, train_seeds, data, work, args.jobs)
        groups = {h: [h] for h in logged_heuristics(bench["env"], bench["dataset"])}
        groups.update({LOGGED + x: [x] for x in logged_experiments(bench["env"], bench["dataset"])})
        groups.update({REFERENCE + x: [x] for x in bench.get("references", [])})
        groups.update({a: [str(r) for r in v] for a, v in runs.items()})
        results = evaluate_all(bench["env"], groups, seeds, work, args.jobs, bench.get("env_args"))
        metrics = metrics_for(bench["env"])
        rows = summarize(results, seeds, metrics)
        factor = float(bench.get("target_factor", 0.9))
        pngs = plots(rows, results, name, ROOT / "docs" / "results", metrics, factor)
        command = ".venv/bin/python bench/results.py " + " ".join(
            shlex.quote(a) for a in (argv or sys.argv[1:])
        )
        desc = f"`{bench['dataset']}` dataset of `{family(bench['env']).source}` ({args.log or 'collected'})"
        sections[name] = section(name, cfg, rows, seeds, train_seeds, command.strip(), pngs, desc)
        overview[name] = overview_row(name, cfg, rows)
        (work / "summary.json").write_text(json.dumps(rows, indent=2, default=str))
    # configs this command did not rerun keep their rows and sections (each names the command that made it)
    old_rows, old_sections = previous_report(Path(args.out))
    order = [n for n in old_sections if n in old_rows] + [n for n in args.configs if n not in old_sections]
    for name in order:
        overview.setdefault(name, widen_old_row(old_rows.get(name, "")))
        sections.setdefault(name, old_sections.get(name, ""))
    kept = [n for n in order if n not in args.configs]
    header = [
        "# Results",
        "",
        "Generated by `bench/results.py` (see its docstring); every number below comes from the command "
        "under its table. Evaluation seeds are never used for training, and tuning used tuning seeds "
        "(`envs/seeds.py`), with three exceptions said in the traffic configs: the traffic InSPO network and "
        "critic setting was picked while building the traffic demo, by looking at evaluation seeds "
        "10000–10003; grid4x4's switch to softmax-explored logs was made after an earlier run's "
        "evaluation table had been seen; and so was `traffic-cologne8-experiment-end-support`'s support "
        "constraint, after `traffic-cologne8-experiment-end`'s, which the `traffic-*-experiment-green` configs "
        "use too (both choices rest on the tuning-seed numbers in their configs)."
        + (
            f" Sections kept from an earlier run (not rerun by the last command): {', '.join(kept)}; each shows "
            "the command that produced it."
            if kept
            else ""
        ),
        "",
        "| config | primary metric (lower is better) | best logged heuristic | InSPO (mean ± std, seeds) | "
        "BC, InSPO's network | BC | target | met |",
        "|---|---|---|---|---|---|---|---|",
        *[overview[name] for name in order],
        "",
        "What was tried, and why the settings are what they are: the comment at the top of each "
        '`bench/configs/<config>.toml` (tuning on tuning seeds) and docs/algorithm.md, "On the real domains".',
        "",
    ]
    # rendered from the benches' JSON on every run (never kept from the old report)
    sections_from_json = (
        estimator_section(ADVANTAGE_TRUTH),
        estimator_section(ADVANTAGE_TRUTH_P02, "idle-p02"),
        estimator_section(ADVANTAGE_TRUTH_P02_CONFIRM, "idle-p02-confirm"),
        estimator_section(ASSIGN_TRUTH, "assign"),
        estimator_section(TRAFFIC_TRUTH, "traffic"),
        estimator_section(KEEP_TRUTH, "keep"),
        experiment_cost_section(EXPERIMENT_COST),
        experiment_cost_section(EXPERIMENT_COST_ASSIGN, "assign"),
        experiment_cost_section(EXPERIMENT_COST_KEEP, "keep"),
        experiment_cost_section(EXPERIMENT_COST_END, "end"),
    )
    header += [s for s in sections_from_json if s]
    Path(args.out).write_text("\n".join(header + [sections[name] for name in order]))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
