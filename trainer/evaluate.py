"""``inspo eval``: any controllers on the fixed evaluation seeds; table, CSV/JSON and plots (seeds: envs/seeds.py).

A controller source is a rule spec, a run directory, an ONNX model directory or a ``grpc://`` URL
(:func:`trainer.policies.load_controller`). A glob that matches several run directories (e.g.
``runs/inspo-s*``) is one *group*: its runs are the training seeds of one method, and the table
reports mean ± std over training seeds (of each run's mean over episodes) and a 95% interval,
next to mean ± std over all episodes. Every controller runs on the same seeds (paired comparison).
"""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.seeds import evaluation_seeds
from trainer.report import ci95, mean_and_std
from trainer.rollout import EpisodeResult, run_episode


@dataclass
class Group:
    label: str
    sources: list[str]
    results: dict[str, list[EpisodeResult]] = field(default_factory=dict)  # source -> episodes

    def episodes(self) -> list[EpisodeResult]:
        return [r for rs in self.results.values() for r in rs]


def expand_sources(sources: list[str]) -> list[Group]:
    """Each source is a group; a glob matching several paths becomes one multi-seed group.

    A ``:greedy`` / ``:sample`` suffix on a glob applies to every run it matches."""
    from trainer.policies import split_mode

    groups = []
    for source in sources:
        pattern, mode = split_mode(source)
        matches = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else []
        suffix = f":{mode}" if mode else ""
        groups.append(Group(source, [m + suffix for m in matches] if matches else [source]))
    return groups


def evaluate(
    sources: list[str],
    env_id: str,
    n_seeds: int,
    progress: bool = True,
    deterministic: bool | None = None,
    env_kwargs: dict | None = None,
) -> list[Group]:
    """Every source on the first ``n_seeds`` evaluation seeds; ``env_kwargs`` go to ``make_env``
    (e.g. ``{"num_seconds": 900}`` for a short SUMO scenario) and every source shares that one env.

    ``deterministic`` is the default for learned policies whose source has no ``:greedy`` / ``:sample``
    suffix (None: greedy); a suffix always wins."""
    from tqdm.auto import tqdm

    from envs.registry import make_env
    from trainer.policies import load_controller
    from trainer.threads import single_threaded

    groups = expand_sources(sources)
    n_sources = sum(len(g.sources) for g in groups)
    if (env_kwargs or {}).get("events_dir") and n_sources > 1:
        raise ValueError(
            f"events_dir names each episode's events after its seed, so {n_sources} controllers would overwrite "
            "each other's: evaluate one controller per events_dir (docs/traffic.md)"
        )
    env = make_env(env_id, **(env_kwargs or {}))
    seeds = evaluation_seeds(n_seeds)
    total = n_sources * len(seeds)
    default_mode = "sample" if deterministic is False else "greedy"
    # every source resolves before the first episode: a bad one fails at once, not after the others ran
    controllers = {
        source: load_controller(source, env_id, env=env, default_mode=default_mode)
        for group in groups
        for source in group.sources
    }
    bar = tqdm(total=total, desc=f"eval {env_id}", unit="ep", disable=not progress)
    for group in groups:
        for source in group.sources:
            controller = controllers[source]
            runs = []
            with single_threaded():
                for seed in seeds:
                    r = run_episode(env, controller, seed)
                    r.controller = group.label
                    runs.append(r)
                    bar.update(1)
            group.results[source] = runs
    bar.close()
    return groups


def summarize(groups: list[Group]) -> list[dict]:
    rows = []
    for g in groups:
        episodes = g.episodes()
        keys = ["return", "length", *episodes[0].metrics.keys()] if episodes else []
        row: dict = {"controller": g.label, "runs": len(g.results), "episodes": len(episodes)}
        for key in keys:

            def value(r: EpisodeResult, key=key) -> float:
                if key == "return":
                    return r.episode_return
                if key == "length":
                    return float(r.length)
                return float(r.metrics.get(key, np.nan))

            m, s = mean_and_std([value(r) for r in episodes])
            row[f"{key}_mean"], row[f"{key}_std_episodes"] = m, s
            if len(g.results) > 1:
                per_run = [np.mean([value(r) for r in rs]) for rs in g.results.values()]
                row[f"{key}_std_seeds"] = mean_and_std(per_run)[1]
                row[f"{key}_ci95"] = list(ci95(per_run))
        rows.append(row)
    return rows


def table_rows(summary: list[dict]) -> list[dict]:
    """Human-readable rows: ``mean ± std`` (episodes) and ``± std`` over training seeds when there are several."""
    out = []
    for row in summary:
        shown = {"controller": row["controller"], "runs": row["runs"], "episodes": row["episodes"]}
        for key in [k.removesuffix("_mean") for k in row if k.endswith("_mean")]:
            text = f"{row[key + '_mean']:.4g} ± {row[key + '_std_episodes']:.2g}"
            if key + "_std_seeds" in row:
                lo, hi = row[key + "_ci95"]
                text += f" (seeds ± {row[key + '_std_seeds']:.2g}, 95% [{lo:.4g}, {hi:.4g}])"
            shown[key] = text
        out.append(shown)
    return out


def write_outputs(groups: list[Group], env_id: str, out_dir: str | Path) -> list[Path]:
    """episodes.csv, summary.csv, summary.json, returns.png and the env family's own plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    episodes_csv = out / "episodes.csv"
    rows = [
        {"controller": g.label, "source": src, **r.row()}
        for g in groups
        for src, rs in g.results.items()
        for r in rs
    ]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with episodes_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    written.append(episodes_csv)
    summary = summarize(groups)
    (out / "summary.json").write_text(json.dumps({"env_id": env_id, "summary": summary}, indent=2))
    with (out / "summary.csv").open("w", newline="") as f:
        cols = list(dict.fromkeys(k for row in summary for k in row))
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(summary)
    written += [out / "summary.json", out / "summary.csv"]
    written.append(plot_returns(groups, out / "returns.png", env_id))
    by_controller = {g.label: g.episodes() for g in groups}
    written += domain_plots(env_id, by_controller, out)
    return written


def plot_returns(groups: list[Group], path: Path, env_id: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(groups) + 2), 3.5))
    data = [[r.episode_return for r in g.episodes()] for g in groups]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(groups) + 1), [g.label for g in groups], rotation=20, ha="right")
    ax.set_ylabel("episode return")
    ax.set_title(f"{env_id}: return over {len(data[0]) if data else 0} episodes per controller")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def domain_plots(env_id: str, results_by_controller: dict[str, list[EpisodeResult]], out: Path) -> list[Path]:
    """The env family's own evaluation figures (``plot_eval`` of envs/family.py), when it draws any."""
    from envs.registry import family

    found = family(env_id)
    if found.hook("plot_eval") is None:
        return []
    import matplotlib

    matplotlib.use("Agg")
    return found.plot_eval(results_by_controller, out)
