"""What a site with only event logs gets: learn from hi-res events, evaluate in SUMO (docs/results.md).

    .venv/bin/python bench/hires_learn.py [--episodes 48 --seconds 900 --train-seeds 0 1 2 --eval-seeds 8]
                                          [--controller max-pressure@temp=1 --work DIR]

1. **collect** ``--episodes`` grid4x4 episodes (the first ``--seconds`` s, collection seeds from 0) of
   ``--controller``: softmax-explored max-pressure (``max-pressure@temp=1``, the ``explored`` dataset's
   behaviour), or e.g. ``loop-count@temp=1`` (a rule on the loops' own counts), with the
   lane observation and ``events_dir``: one run gives the usual log (exact behaviour probabilities) and the
   same episodes as hi-res events;
2. **import** the events only (``inspo data import hires``): the detector observation, the ``occupancy``
   reward, no behaviour probabilities;
3. **train** InSPO and BC on the imported log and, for comparison, on the lane log (its ``queue`` reward and
   exact probabilities), every training seed, with bench/configs/traffic-grid4x4.toml's settings;
4. **evaluate** max-pressure (and, with the detector policies, the logged rule greedy if it is another) and every run on the same first ``--eval-seeds`` evaluation seeds (paired),
   detector policies with ``observation=detectors``; print the table (mean trip delay over training seeds
   ± their std, and the paired difference to max-pressure over evaluation seeds);
5. **serve** the first training seed's events-trained InSPO: export it to ONNX, start the real runtime
   (``inspo serve`` on loopback), evaluate ``grpc://`` on the same evaluation seeds and compare every
   episode with the in-process evaluation of step 4.

Resumable: a finished step (its output directory) is skipped.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
INSPO = str(ROOT / ".venv" / "bin" / "inspo")
PY = str(ROOT / ".venv" / "bin" / "python")


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {proc.stderr.strip()[-3000:]}")


def flat_configs(work: Path) -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "bench" / "configs" / "traffic-grid4x4.toml").read_text())
    out = {}
    for algo in ("inspo", "bc"):
        path = work / f"{algo}.toml"
        lines = [
            f"{k} = {v!r}".replace("'", '"').replace("True", "true").replace("False", "false")
            for k, v in cfg.get(algo, {}).items()
        ]
        path.write_text("\n".join(lines) + "\n")
        out[algo] = path
    return out


def episodes(episodes_csv: Path) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """controller -> source -> eval seed -> metrics (trip delay, throughput, avg queue)."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    with episodes_csv.open() as f:
        for row in csv.DictReader(f):
            out[row["controller"]][row["source"]][int(row["seed"])] = {k: float(row[k]) for k in METRICS}
    return out


METRICS = ("delay", "throughput", "avg_queue")


def check_and_agreement(lanes: Path, events: Path, runs: Path, seeds: list[int]) -> None:
    """The imported actions equal the logged ones; each BC run's greedy agreement with its own log."""
    import torch

    sys.path.insert(0, str(ROOT))
    from trainer.logs import load_log
    from trainer.run_dir import load_policy

    logs = {"lanes": load_log(lanes), "events": load_log(events)}
    same = np.array_equal(logs["lanes"].actions, logs["events"].actions)
    print(f"imported actions equal the logged ones: {same} ({logs['events'].actions.size} decisions)")
    for tag, data in logs.items():
        e, t, n, d = data.obs.shape
        obs = torch.as_tensor(data.obs.reshape(-1, d))
        masks = torch.as_tensor(data.masks.reshape(-1, data.masks.shape[-1]))
        agents = torch.as_tensor(np.tile(np.arange(n), e * t))
        agree = []
        for seed in seeds:
            policy, _ = load_policy(runs / f"{tag}-bc-seed{seed}")
            with torch.no_grad():
                greedy = policy(obs, agents, masks).argmax(-1).numpy()
            agree.append((greedy == data.actions.reshape(-1)).mean())
        print(
            f"BC on the {tag} log: greedy agreement with its logged actions {np.mean(agree):.1%} ± {np.std(agree):.1%}"
        )


def served_check(work: Path, seed: int, seconds: str, eval_seeds: int) -> None:
    """Step 5: the served policy's episodes against the in-process ones, seed by seed."""
    sys.path.insert(0, str(ROOT))
    from runtime.launch import start_runtime

    run_dir, models = work / "runs" / f"events-inspo-seed{seed}", work / "models"
    if not (models / "events-inspo").exists():
        run([INSPO, "export", str(run_dir), "--models", str(models), "--name", "events-inspo"])
    out = work / "eval-served"
    if not (out / "episodes.csv").exists():
        runtime = start_runtime(["--models", str(models), "--port", "0", "--metrics-port", "0"], work)
        try:
            run([INSPO, "eval", "--controller", f"{runtime.url}/events-inspo", "--env", "sumo:grid4x4",
                 "--env-arg", seconds, "--env-arg", "observation=detectors", "--seeds", str(eval_seeds),
                 "--out", str(out)])  # fmt: skip
        finally:
            runtime.stop()
    served = next(iter(episodes(out / "episodes.csv").values()))
    local = episodes(work / "eval-events" / "episodes.csv")
    in_process = next(v for k, v in local.items() if k.startswith(str(work / "runs" / "events-inspo")))
    (_, served_eps), in_proc = next(iter(served.items())), in_process[str(run_dir)]
    same = [k for k in sorted(in_proc) if served_eps.get(k) == in_proc[k]]
    gap = max(abs(served_eps[k]["delay"] - in_proc[k]["delay"]) for k in in_proc)
    print(
        f"served over gRPC (events-inspo-seed{seed}, ONNX Runtime) vs in-process: {len(same)} of {len(in_proc)}"
        f" evaluation episodes identical (trip delay, throughput, average queue); largest trip-delay difference {gap:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=48)
    parser.add_argument("--seconds", type=int, default=900)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-seeds", type=int, default=8)
    parser.add_argument("--controller", default="max-pressure@temp=1", help="the logged controller")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".cache" / "hires_learn")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log, events, imported = work / "log-lanes", work / "events", work / "log-events"
    seconds = f"num_seconds={args.seconds}"
    if not log.exists():
        run([INSPO, "collect", "--env", "sumo:grid4x4", "--controller", args.controller, "--episodes",
             str(args.episodes), "--seed", "0", "--workers", "1", "--env-arg", seconds,
             "--env-arg", f"events_dir={events}", "--out", str(log)])  # fmt: skip
    if not imported.exists():
        files = sorted(str(p) for p in events.glob("*.events.parquet"))
        run([INSPO, "data", "import", "hires", *files, "--detectors", str(events / "detectors.csv"),
             "--phase-map", str(events / "phase_map.csv"), "--min-green-s", "7", "--env-id", "sumo:grid4x4",
             "--out", str(imported)])  # fmt: skip
    configs = flat_configs(work)
    for data, tag in ((imported, "events"), (log, "lanes")):
        for algo in ("inspo", "bc"):
            for seed in args.train_seeds:
                out = work / "runs" / f"{tag}-{algo}-seed{seed}"
                if not (out / "policy").exists():
                    run([INSPO, "train", "--algo", algo, "--data", str(data), "--out", str(out), "--seed",
                         str(seed), "--config", str(configs[algo]), "--threads", "1"])  # fmt: skip
    check_and_agreement(log, imported, work / "runs", args.train_seeds)
    results = {}
    for tag, extra in (("events", ["--env-arg", "observation=detectors"]), ("lanes", [])):
        out = work / f"eval-{tag}"
        if not (out / "episodes.csv").exists():
            controllers = ["--controller", "max-pressure"]
            rule = args.controller.split("@")[0]
            if rule != "max-pressure" and tag == "events":  # a loop rule needs the detector env's loops
                controllers += ["--controller", rule]
            for algo in ("inspo", "bc"):
                controllers += ["--controller", str(work / "runs" / f"{tag}-{algo}-seed*")]
            run([INSPO, "eval", *controllers, "--env", "sumo:grid4x4", "--env-arg", seconds, *extra,
                 "--seeds", str(args.eval_seeds), "--out", str(out)])  # fmt: skip
        results[tag] = episodes(out / "episodes.csv")
    print(
        f"\ngrid4x4, first {args.seconds} s, greedy; {args.eval_seeds} evaluation seeds (paired); training seeds"
    )
    print(
        f"{' '.join(map(str, args.train_seeds))}; log: {args.episodes} episodes of {args.controller}. Learned: mean over"
    )
    print(
        "training seeds ± their std (of each run's mean over episodes); paired: per evaluation seed, the mean over"
    )
    print("training seeds minus max-pressure, then mean ± std over evaluation seeds.\n")
    print(
        "| log (observation) | controller | trip delay (s) | vs max-pressure (paired) | throughput (trips) | avg queue (veh) |"
    )
    print("|---|---|---|---|---|---|")
    for tag, by_controller in results.items():
        mp = next(iter(by_controller["max-pressure"].values()))
        seeds = sorted(mp)
        for name, sources in by_controller.items():

            def stat(metric: str, sources=sources) -> str:
                per_run = [np.mean([e[metric] for e in s.values()]) for s in sources.values()]
                return (
                    f"{np.mean(per_run):.2f} ± {np.std(per_run):.2f}"
                    if len(per_run) > 1
                    else f"{per_run[0]:.2f}"
                )

            diff = [np.mean([s[k]["delay"] for s in sources.values()]) - mp[k]["delay"] for k in seeds]
            ratio = np.mean([np.mean([e["delay"] for e in s.values()]) for s in sources.values()]) / np.mean(
                [mp[k]["delay"] for k in seeds]
            )
            paired = (
                "—" if name == "max-pressure" else f"{np.mean(diff):+.2f} ± {np.std(diff):.2f} ({ratio:.3f}×)"
            )
            log_name = "events only (detectors)" if tag == "events" else "full log (lanes)"
            shown = name.split("/")[-1]
            print(
                f"| {log_name} | {shown} | {stat('delay')} | {paired} | {stat('throughput')} | {stat('avg_queue')} |"
            )
    print()
    served_check(work, args.train_seeds[0], seconds, args.eval_seeds)


if __name__ == "__main__":
    sys.exit(main())
