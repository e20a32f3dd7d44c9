"""Where does a trained greedy policy leave the log's support? (the mechanism behind a stalled building)

    .venv/bin/python bench/support_check.py LOG RUN [RUN ...] [--parts 6]

For the logged rows where the agent had a choice, split by the behaviour's logged probability of the
executed action (> 0.999: the rule decided deterministically; otherwise an explored decision), prints
how often each run's greedy action differs from the logged one and its mean probability of the logged
action. An in-sample learner has nothing to learn where the behaviour was deterministic: deviations
there are the actor generalising into moves the log never made, which is how a greedy policy stalls
an elevator building (docs/algorithm.md, "Support constraint"). Reads the first ``--parts`` Parquet
files of the log's agent steps (a bounded sample; the log's own order).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def logged_rows(log: Path, parts: int) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    files = sorted((log / "agent_steps").rglob("*.parquet"))[:parts]
    if not files:
        raise SystemExit(f"error: no agent_steps Parquet files under {log}")
    columns = ["agent_id", "obs", "action", "action_mask", "behavior_prob"]
    tables = [pq.read_table(f, columns=columns) for f in files]
    agent_ids = pq.read_schema(files[0]).metadata[b"agent_ids"].decode()
    index = {a: i for i, a in enumerate(json.loads(agent_ids))}

    def stacked(name: str) -> np.ndarray:
        return np.concatenate([np.stack(t.column(name).to_numpy(zero_copy_only=False)) for t in tables])

    return {
        "obs": stacked("obs").astype(np.float32),
        "mask": stacked("action_mask").astype(bool),
        "action": np.concatenate([t.column("action").to_numpy() for t in tables]),
        "prob": np.concatenate([t.column("behavior_prob").to_numpy(zero_copy_only=False) for t in tables]),
        "agent": np.concatenate([[index[a] for a in t.column("agent_id").to_pylist()] for t in tables]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log", type=Path)
    p.add_argument("runs", nargs="+", help="run directories (trained policies)")
    p.add_argument("--parts", type=int, default=6, help="Parquet files of the log to read")
    args = p.parse_args()
    import torch

    from trainer.policies import load_controller

    rows = logged_rows(args.log, args.parts)
    import pyarrow.parquet as pq

    first = next((args.log / "agent_steps").rglob("*.parquet"))
    env_id = pq.read_schema(first).metadata[b"env_id"].decode()
    choice = rows["mask"].sum(1) > 1
    known = np.isfinite(rows["prob"])
    groups = {
        "deterministic": choice & known & (rows["prob"] > 0.999),
        "explored": choice & known & (rows["prob"] <= 0.999),
    }
    print(
        f"{args.log}: {choice.sum()} rows with a choice, "
        + ", ".join(f"{k} {v.sum()}" for k, v in groups.items())
    )
    print(f"{'run':40s} {'decisions':14s} {'greedy != logged':>18s} {'mean pi(logged)':>16s}")
    for run in args.runs:
        policy = load_controller(run, env_id).policy
        with torch.no_grad():
            logits = policy(
                torch.as_tensor(rows["obs"]), torch.as_tensor(rows["agent"]), torch.as_tensor(rows["mask"])
            )
        greedy = logits.argmax(-1).numpy()
        probs = torch.softmax(logits, -1).numpy()
        for name, sel in groups.items():
            if sel.any():
                off = greedy[sel] != rows["action"][sel]
                print(
                    f"{run:40s} {name:14s} {off.mean():11.2%} ({off.sum():>5d}) "
                    f"{probs[sel, rows['action'][sel]].mean():16.3f}"
                )


if __name__ == "__main__":
    main()
