"""``inspo sweep``: a grid of configs x training seeds, each trial trained by ``trainer.train_loop.train``
(the function ``inspo train`` runs), with asynchronous successive halving (ASHA) on a validation metric.

A trial trains in segments of ``report_every`` iterations: ``train(..., stop_after=k)`` then
``train(..., resume=True, stop_after=k + report_every)``; resuming is bit-exact, so a trial that
runs to the end has exactly the weights of one uninterrupted ``inspo train``. After each segment the
actor is rolled out on TUNING seeds (``envs.seeds.tuning_seeds``, never the evaluation seeds) and
the result is reported; the scheduler may stop the trial there.

Validation metrics: ``val/return`` (mean team return of the *sampling* policy: it separates a policy
that coordinates with certainty from one that only coordinates in its argmax) and
``val/greedy_return`` (the argmax policy, what the runtime serves with ``deterministic``).

Backends: ``local`` (this module: trials one after another, the same ASHA rule as Ray's) and
``ray`` (``trainer.integrations.ray_tune``: Ray Tune, one CPU per trial). Both return the same
records, from which the results table, ``best.toml`` (accepted by ``inspo train --config``),
``results.csv``/``results.json`` and ``sweep.png`` are written.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ("val/return", "val/greedy_return")


@dataclass
class SweepSpec:
    data: str  # log directory
    algo: str
    grid: dict[str, list[str]]  # config key -> values (strings, coerced by the algorithm's config)
    seeds: list[int]  # training seeds; trials = grid x seeds
    out: str
    config_file: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)  # fixed --set values for every trial
    iterations: int | None = None  # None: the config's iterations
    report_every: int = 0  # iterations per segment (= ASHA grace period); 0: iterations // 4
    reduction_factor: int = 3
    metric: str = "val/return"
    mode: str = "max"
    val_episodes: int = 16

    def base_items(self) -> dict[str, Any]:
        items: dict[str, Any] = dict(self.overrides)
        if self.iterations is not None:
            items["iterations"] = self.iterations
        return items

    def config_for(self, params: dict[str, str]):
        from trainer.algos.config import make_config

        return make_config(self.algo, self.config_file, {**self.base_items(), **params})

    def total_iterations(self) -> int:
        return int(self.config_for({k: v[0] for k, v in self.grid.items()}).iterations)

    def segment(self) -> int:
        total = self.total_iterations()
        return max(1, min(total, self.report_every or math.ceil(total / 4)))

    def combinations(self) -> list[dict[str, str]]:
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["alpha=0.1,0.3,1", "beta=0,0.3"]`` -> ``{"alpha": ["0.1", "0.3", "1"], "beta": ["0", "0.3"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not parts:
            raise ValueError(f"--grid expects key=v1,v2,..., got {item!r}")
        if key in grid:
            raise ValueError(f"--grid names {key!r} twice")
        grid[key] = parts
    if not grid:
        raise ValueError("--grid needs at least one key=v1,v2,...")
    return grid


def validate_spec(spec: SweepSpec) -> None:
    """Fail before any training: every grid point must make a valid config; metric must be known."""
    if spec.metric not in METRICS:
        raise ValueError(f"--metric must be one of {list(METRICS)}, got {spec.metric!r}")
    if spec.mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {spec.mode!r}")
    if "seed" in spec.grid or "iterations" in spec.grid:
        raise ValueError("sweep seeds with --seeds and set iterations with --iterations, not in --grid")
    for params in spec.combinations():
        spec.config_for(params)
    if not spec.seeds:
        raise ValueError("--seeds must be >= 1")


# -- one trial -------------------------------------------------------------------------------------
def validation_metrics(algo, env, episodes: int) -> dict[str, float]:
    """The trainer's own evaluation (``evaluate_actor``, tuning seeds), sampling and greedy."""
    from trainer.train_loop import evaluate_actor

    sampled = evaluate_actor(algo, env, episodes, deterministic=False)
    greedy = evaluate_actor(algo, env, episodes, deterministic=True)
    return {"val/return": sampled["eval/return"], "val/greedy_return": greedy["eval/return"]}


def validation_env(data):
    """The env the log was collected on (its recorded site: every option, e.g. a short ``hours``), so
    validation returns are on the scale of the log's; the env id's defaults only for logs without one."""
    from envs.registry import make_env
    from envs.site import env_from_spec

    return env_from_spec(data.site_spec) if data.site_spec else make_env(data.env_id)


def run_trial(
    spec: SweepSpec,
    params: dict[str, str],
    seed: int,
    run_dir: Path,
    data,
    report: Callable[[dict[str, float]], bool],
) -> None:
    """Train one trial in segments, calling ``report`` after each; stop when it returns False."""
    import torch

    from trainer.train_loop import train

    torch.set_num_threads(1)  # one CPU per trial
    if isinstance(data, str | Path):  # a log's path: train streams it; the env from its (memory-mapped) cache
        from trainer.logs.stream import load_log_cached

        env = validation_env(load_log_cached(data).data)
    else:
        env = validation_env(data)
    total, step = spec.total_iterations(), spec.segment()
    items = {**spec.base_items(), **params}
    done = 0
    while done < total:
        done = min(total, done + step)
        algo = train(
            spec.algo,
            data,
            run_dir,
            config_file=spec.config_file,
            overrides=dict(items),
            seed=seed,
            resume=(run_dir / "checkpoints" / "last.pt").exists(),
            log_every=step,
            checkpoint_every=total + 1,  # a checkpoint at each segment end only
            stop_after=done,
            progress=False,
        )
        metrics = {"iteration": done, **validation_metrics(algo, env, spec.val_episodes)}
        if not report(metrics) or done >= total:
            return


# -- local backend ---------------------------------------------------------------------------------
class LocalASHA:
    """Ray Tune's ASHA stopping rule (one bracket): at each milestone ``grace * rf**k < max_t`` a trial
    continues only if its metric is within the top ``1/rf`` of the values recorded there so far."""

    def __init__(self, max_t: int, grace_period: int, reduction_factor: int, mode: str):
        self.rf, self.mode = reduction_factor, mode
        self.milestones = []
        t = grace_period
        while t < max_t:
            self.milestones.append(t)
            t *= reduction_factor
        self.recorded: dict[int, list[float]] = {m: [] for m in self.milestones}

    def keep_going(self, iteration: int, value: float, reached: set[int]) -> bool:
        """``reached``: milestones this trial was already judged at (updated in place)."""
        value = value if self.mode == "max" else -value
        go = True
        for m in self.milestones:
            if iteration >= m and m not in reached:
                reached.add(m)
                seen = self.recorded[m]
                if seen and value < np.nanpercentile(seen, (1 - 1 / self.rf) * 100):
                    go = False
                seen.append(value)
        return go


def trial_name(index: int, params: dict[str, str], seed: int) -> str:
    return f"{index:03d}_" + "_".join(f"{k}={v}" for k, v in params.items()) + f"_seed={seed}"


def run_local(spec: SweepSpec, data, progress: bool = True) -> list[dict]:
    """Every trial in this process, one after another (the ASHA rule applied in that order)."""
    from tqdm.auto import tqdm

    asha = LocalASHA(spec.total_iterations(), spec.segment(), spec.reduction_factor, spec.mode)
    trials = [(p, s) for p in spec.combinations() for s in spec.seeds]
    records = []
    for index, (params, seed) in enumerate(tqdm(trials, desc="sweep", unit="trial", disable=not progress)):
        history: list[dict[str, float]] = []
        reached: set[int] = set()

        def report(metrics: dict[str, float], history=history, reached=reached) -> bool:
            history.append(metrics)
            return asha.keep_going(int(metrics["iteration"]), metrics[spec.metric], reached)

        name = trial_name(index, params, seed)
        run_dir = Path(spec.out) / "trials" / name
        run_trial(spec, params, seed, run_dir, data, report)
        records.append(make_record(name, params, seed, history, run_dir))
    return records


def make_record(
    name: str, params: dict[str, str], seed: int, history: list[dict[str, float]], run_dir: str | Path
) -> dict:
    last = history[-1] if history else {}
    return {
        "trial": name,
        "run_dir": str(run_dir),  # the trial's inspo-train run directory (checkpoint, metrics)
        "params": dict(params),
        "seed": int(seed),
        "iterations": int(last.get("iteration", 0)),
        **{m: float(last[m]) for m in METRICS if m in last},
        "history": [{k: float(v) for k, v in h.items()} for h in history],
    }


# -- results ---------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    records: list[dict]
    configs: list[dict]  # one row per grid point: params, trials, completed, metric mean/std
    best: dict[str, str]  # params of the best grid point
    best_score: float
    best_toml: Path
    plot: Path | None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["best_toml"], out["plot"] = str(self.best_toml), str(self.plot) if self.plot else None
        return out


def summarize(spec: SweepSpec, records: list[dict]) -> list[dict]:
    """Per grid point: mean and std of the final metric over the trials that ran every iteration."""
    total = spec.total_iterations()
    rows = []
    for params in spec.combinations():
        mine = [r for r in records if r["params"] == params]
        done = [r[spec.metric] for r in mine if r["iterations"] >= total and spec.metric in r]
        rows.append(
            {
                "params": params,
                "trials": len(mine),
                "completed": len(done),
                "mean": float(np.mean(done)) if done else float("nan"),
                "std": float(np.std(done)) if done else float("nan"),
                "stopped_at": sorted({r["iterations"] for r in mine if r["iterations"] < total}),
                "last_mean": float(np.mean([r[spec.metric] for r in mine if spec.metric in r] or [np.nan])),
            }
        )
    return rows


def pick_best(spec: SweepSpec, configs: list[dict]) -> dict:
    scored = [c for c in configs if c["completed"]]
    if not scored:
        raise RuntimeError("no trial ran to the end; lower --reduction-factor or raise the grace period")
    sign = 1.0 if spec.mode == "max" else -1.0
    return max(scored, key=lambda c: (sign * c["mean"], c["completed"]))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string for our values


def write_best_toml(spec: SweepSpec, params: dict[str, str], path: Path, note: str) -> Path:
    """The full resolved config of the best grid point under ``[<algo>]`` (``inspo train --config``).

    ``seed`` is left out (``inspo train --seed`` picks it) and so are ``None`` values (TOML has none;
    they are the defaults).
    """
    from trainer.algos.config import config_dict

    cfg = config_dict(spec.config_for(params))
    lines = [f"# {line}" for line in note.splitlines()] + [f"[{spec.algo}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if k != "seed" and v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def plot_sweep(spec: SweepSpec, configs: list[dict], path: Path) -> Path | None:
    """Final metric over the grid (``sweep_figure``) as a PNG; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        return None
    fig = sweep_figure(spec, configs)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_figure(spec: SweepSpec, configs: list[dict]):
    """A heat map for two swept keys, lines for one (one per other key); every grid point is shown,
    early-stopped ones with their last value and where they stopped."""
    import matplotlib.pyplot as plt

    keys = list(spec.grid)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    if len(keys) == 2:
        _heat_map(ax, fig, spec, configs, keys)
    else:
        _lines(ax, spec, configs, keys)
    ax.set_title(f"{spec.algo} sweep: final {spec.metric} (tuning seeds, mean over {len(spec.seeds)} seeds)")
    ax.title.set_fontsize(9)
    fig.tight_layout()
    return fig


def _stopped_label(c: dict) -> str:
    return f"stopped at {','.join(map(str, c['stopped_at']))}"


def _heat_map(ax, fig, spec: SweepSpec, configs: list[dict], keys: list[str]) -> None:
    import matplotlib.pyplot as plt

    ys, xs = spec.grid[keys[0]], spec.grid[keys[1]]
    table = np.full((len(ys), len(xs)), np.nan)
    labels = {}
    for c in configs:
        i, j = ys.index(c["params"][keys[0]]), xs.index(c["params"][keys[1]])
        table[i, j] = c["mean"]
        labels[i, j] = (
            f"{c['mean']:.3g}" if c["completed"] else f"{_stopped_label(c)}\n(last {c['last_mean']:.3g})"
        )
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgray")
    image = ax.imshow(np.ma.masked_invalid(table), cmap=cmap, aspect="auto", origin="lower")
    finite = np.isfinite(table).any()
    low, high = (np.nanmin(table), np.nanmax(table)) if finite else (0, 1)
    for (i, j), label in labels.items():
        bright = np.isnan(table[i, j]) or table[i, j] > (low + high) / 2
        ax.text(j, i, label, ha="center", va="center", color="k" if bright else "w", fontsize=9)
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    fig.colorbar(image, ax=ax, label=spec.metric)


def _lines(ax, spec: SweepSpec, configs: list[dict], keys: list[str]) -> None:
    """Completed grid points as mean ± std; stopped ones as an x at their last value, labelled."""
    from matplotlib.ticker import NullLocator

    key, others = keys[0], keys[1:]
    values = spec.grid[key]
    numeric = all(_number(v) is not None for v in values)
    position = {v: (_number(v) if numeric else float(i)) for i, v in enumerate(values)}
    groups: dict[tuple, list[dict]] = {}
    for c in configs:
        groups.setdefault(tuple(c["params"][k] for k in others), []).append(c)
    for n, (group, rows) in enumerate(groups.items()):
        color = f"C{n % 10}"
        done = [r for r in rows if r["completed"]]
        ax.errorbar(
            [position[r["params"][key]] for r in done],
            [r["mean"] for r in done],
            yerr=[r["std"] for r in done],
            marker="o",
            capsize=3,
            color=color,
            label=", ".join(f"{k}={v}" for k, v in zip(others, group, strict=True)) or None,
        )
        stopped = [r for r in rows if not r["completed"] and np.isfinite(r["last_mean"])]
        ax.scatter(
            [position[r["params"][key]] for r in stopped],
            [r["last_mean"] for r in stopped],
            marker="x",
            color=color,
            label="stopped early (last value)" if stopped and n == 0 else None,
        )
        for r in stopped:
            xy = (position[r["params"][key]], r["last_mean"])
            ax.annotate(_stopped_label(r), xy, xytext=(4, 4), textcoords="offset points", fontsize=7)
    if numeric and all(position[v] > 0 for v in values):
        ax.set_xscale("log")
    ax.set_xticks([position[v] for v in values], values)  # every grid value, none in between
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(key)
    ax.set_ylabel(spec.metric)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def write_results(spec: SweepSpec, records: list[dict]) -> SweepResult:
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = summarize(spec, records)
    best = pick_best(spec, configs)
    note = (
        f"best of an inspo sweep on {spec.data}: {best['params']} "
        f"{spec.metric}={best['mean']:.4g} (tuning seeds, {best['completed']} training seeds)\n"
        f"use: inspo train --algo {spec.algo} --data {spec.data} --config {out / 'best.toml'} --out RUN"
    )
    toml_path = write_best_toml(spec, best["params"], out / "best.toml", note)
    plot = plot_sweep(spec, configs, out / "sweep.png")
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", *spec.grid, "seed", "iterations", *METRICS])
        for r in records:
            writer.writerow(
                [r["trial"], *(r["params"][k] for k in spec.grid), r["seed"], r["iterations"]]
                + [r.get(m, "") for m in METRICS]
            )
    result = SweepResult(records, configs, best["params"], best["mean"], toml_path, plot)
    (out / "results.json").write_text(json.dumps({"spec": asdict(spec), **result.to_dict()}, indent=2))
    return result


def print_results(spec: SweepSpec, result: SweepResult) -> None:
    from trainer.report import print_table

    total = spec.total_iterations()
    rows = []
    for c in sorted(result.configs, key=lambda c: -np.nan_to_num(c["mean"], nan=-np.inf)):
        rows.append(
            {
                **c["params"],
                "trials": c["trials"],
                "completed": c["completed"],
                spec.metric: "stopped" if not c["completed"] else f"{c['mean']:.4g} ± {c['std']:.2g}",
                "stopped at": ",".join(map(str, c["stopped_at"])) or "-",
                "best": "*" if c["params"] == result.best else "",
            }
        )
    print_table(rows, title=f"sweep {spec.algo}: final {spec.metric} after {total} iterations (tuning seeds)")


def sweep(spec: SweepSpec, backend: str = "local", address: str | None = None, progress: bool = True):
    """Run the sweep on a backend and write its results; returns :class:`SweepResult`."""
    from trainer.logs.stream import load_log_cached

    validate_spec(spec)
    # Trials get the log's path and stream it within the training memory budget (trainer/algos/store.py),
    # as `inspo train` does; its array cache is built here once, before any trial reads it.
    load_log_cached(spec.data)
    data = str(spec.data)
    if backend == "local":
        records = run_local(spec, data, progress=progress)
    elif backend == "ray":
        from trainer.integrations.ray_tune import run_ray

        records = run_ray(spec, data, address=address)
    else:
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    return write_results(spec, records)
