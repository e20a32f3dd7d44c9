"""``inspo demo``: the whole loop on one machine, the way an operator would run it.

collect logs from ε-explored heuristics -> dataset card -> train InSPO and BC -> evaluate on
held-out seeds -> export to ONNX -> start the runtime -> drive the simulator through gRPC
(with decision logging) -> comparison table, plots, a few metric lines -> stop cleanly.

Each stage is a plain function of the previous stage's outputs, so tests and ``bench/`` reuse them.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from envs.family import DemoPlan
from envs.registry import demo_plans
from runtime.launch import RunningRuntime, free_port
from runtime.launch import start_runtime as launch

console = Console()


def describe(plan: DemoPlan) -> str:
    """``env_id`` plus its options, e.g. ``sumo:grid4x4 (num_seconds=900)``."""
    options = ", ".join(f"{k}={v}" for k, v in plan.env_kwargs.items())
    return f"{plan.env_id} ({options})" if options else plan.env_id


def stage(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


# -- stages ---------------------------------------------------------------------------------------
def collect_logs(plan: DemoPlan, out: Path) -> Path:
    from trainer.collect import collect
    from trainer.report import print_table, summarize_results

    log = out / "logs"
    results = collect(
        plan.env_id, log, dataset=plan.dataset, workers=plan.workers, env_kwargs=plan.env_kwargs
    )
    print_table(summarize_results(results), title=f"logged controllers ({len(results)} episodes)")
    return log


def show_card(log: Path) -> None:
    from trainer.commands.data import print_card
    from trainer.logs import open_log
    from trainer.logs.card import build_card

    print_card(build_card(open_log(log), str(log)))


def train_all(plan: DemoPlan, log: Path, out: Path, seed: int = 0) -> dict[str, Path]:
    from trainer.logs import load_log
    from trainer.train_loop import train

    data = load_log(log)
    runs = {}
    for algo in plan.algorithms:
        run = out / "runs" / algo
        console.print(
            f"training [bold]{algo}[/] on {data.n_episodes} episodes, {data.n_steps} steps -> {run}"
        )
        train(algo, data, run, overrides=dict(plan.train_overrides.get(algo, {})), seed=seed, progress=True)
        runs[algo] = run
    return runs


def evaluate_all(plan: DemoPlan, runs: dict[str, Path], out: Path) -> list[dict]:
    from trainer.evaluate import evaluate, summarize, table_rows, write_outputs
    from trainer.report import print_table

    sources = [*plan.heuristics, *(str(r) for r in runs.values())]
    groups = evaluate(sources, plan.env_id, plan.eval_seeds, env_kwargs=plan.env_kwargs)
    for group in groups:  # show run directories by algorithm name (table, plots and episodes.csv)
        for algo, run in runs.items():
            if group.label == str(run):
                group.label = algo
                for result in group.episodes():
                    result.controller = algo
    written = write_outputs(groups, plan.env_id, out / "eval")
    summary = summarize(groups)
    print_table(table_rows(summary), title=f"{describe(plan)}: {plan.eval_seeds} held-out evaluation seeds")
    console.print("plots: " + ", ".join(str(p) for p in written if p.suffix == ".png"))
    return summary


def export_model(plan: DemoPlan, run: Path, out: Path) -> Path:
    from trainer.export import export_run

    models = out / "models"
    result = export_run(run, models, plan.model_name)
    console.print(f"exported {run} -> {result}")
    return models


def start_runtime(models: Path, decision_log: Path, out: Path, timeout: float = 60.0) -> RunningRuntime:
    """The real ``inspo-runtime`` process on loopback, any free ports, decision logging on."""
    args = ["--models", models, "--port", "0", "--metrics-port", free_port()]
    env = {
        "INSPO_RUNTIME_DECISION_LOG__DIR": str(decision_log),
        "INSPO_RUNTIME_DECISION_LOG__OUTCOME_TIMEOUT_S": "30",
        "INSPO_RUNTIME_POLL_INTERVAL_S": "0",
    }
    return launch(args, out, env, timeout)


def drive_through_grpc(plan: DemoPlan, runtime: RunningRuntime, models: Path) -> list[dict]:
    """Evaluate the served model over gRPC and in-process (ONNX) on the same seeds; they must agree."""
    from envs.registry import make_env
    from envs.seeds import evaluation_seeds
    from trainer.rollout import run_episode
    from trainer.served_policies import grpc_controller, onnx_controller

    env = make_env(plan.env_id, **plan.env_kwargs)  # one env for both (libsumo: one per process)
    served = grpc_controller(f"{runtime.url}/{plan.model_name}", env, report_outcomes=True)
    local = onnx_controller(models / plan.model_name, env)
    rows = []
    try:
        for seed in evaluation_seeds(plan.grpc_seeds):
            over_grpc = run_episode(env, served, seed)
            in_process = run_episode(env, local, seed)
            same = (
                over_grpc.metrics == in_process.metrics
                and over_grpc.episode_return == in_process.episode_return
            )
            rows.append(
                {
                    "seed": seed,
                    "return (gRPC)": f"{over_grpc.episode_return:.4f}",
                    "return (in-process)": f"{in_process.episode_return:.4f}",
                    "identical": "yes" if same else "NO",
                }
            )
    finally:
        served.close()
        close = getattr(env, "close", None)
        if close is not None:
            close()
    return rows


def show_metrics(runtime: RunningRuntime, lines: int = 12) -> None:
    wanted = (
        "inspo_runtime_requests_total",
        "inspo_runtime_model_info",
        "inspo_runtime_request_duration_seconds_count",
        "inspo_runtime_fallbacks_total",
        "inspo_runtime_decision_log",
    )
    shown = [
        line
        for line in runtime.metrics().splitlines()
        if line.startswith(wanted) and "_created" not in line.split("{")[0]
    ]
    console.print("\n".join(shown[:lines]) or "(no runtime metrics yet)")


# -- the whole loop -------------------------------------------------------------------------------
def run_demo(domain: str, out: Path, fast: bool = False) -> dict:
    from trainer.report import print_table

    plan = demo_plans()[domain]
    if fast:
        plan = fast_plan(plan)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()
    stage_seconds: dict[str, float] = {}
    lap = [started]

    def done(name: str) -> None:  # wall seconds per stage, for demo.json and the last line
        now = time.monotonic()
        stage_seconds[name] = round(now - lap[0], 1)
        lap[0] = now

    stage(f"1/7 collect logs: {describe(plan)}, dataset {plan.dataset!r}")
    log = collect_logs(plan, out)
    done("collect")
    stage("2/7 dataset card")
    show_card(log)
    done("card")
    stage("3/7 train " + " and ".join(plan.algorithms))
    runs = train_all(plan, log, out)
    done("train")
    stage("4/7 evaluate on held-out seeds")
    summary = evaluate_all(plan, runs, out)
    done("evaluate")
    stage("5/7 export InSPO to ONNX")
    models = export_model(plan, runs[plan.algorithms[0]], out)
    done("export")
    stage("6/7 serve and drive the simulator through gRPC")
    runtime = start_runtime(models, out / "decision-log", out)
    try:
        rows = drive_through_grpc(plan, runtime, models)
        print_table(rows, title="served over gRPC vs in-process ONNX (deterministic)")
        stage("runtime metrics (a few lines)")
        show_metrics(runtime)
    finally:
        code = runtime.stop()
    done("serve")
    stage("7/7 stopped")
    console.print(f"runtime exited with code {code}; decision log in {out / 'decision-log'}")
    result = {
        "summary": summary,
        "grpc": rows,
        "runtime_exit_code": code,
        "seconds": time.monotonic() - started,
        "stage_seconds": stage_seconds,
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=str))
    per_stage = ", ".join(f"{k} {v:.0f}" for k, v in stage_seconds.items())
    console.print(f"done in {result['seconds']:.0f} s ({per_stage}); everything is under {out}")
    return result


def fast_plan(plan: DemoPlan) -> DemoPlan:
    """A minutes-long version for tests: tiny dataset, few iterations, few seeds."""
    from dataclasses import replace

    overrides = {
        algo: {
            **cfg,
            "iterations": max(20, cfg.get("iterations", 100) // 30),
            **{k: max(50, cfg[k] // 10) for k in ("mu_steps", "critic_warmup") if k in cfg},
        }
        for algo, cfg in plan.train_overrides.items()
    }
    return replace(
        plan,
        dataset="small",
        eval_seeds=2,
        grpc_seeds=1,
        train_overrides=overrides,
        heuristics=plan.heuristics[:1],
    )
