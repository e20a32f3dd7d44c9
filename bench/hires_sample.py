"""Train on the real hi-res sample the ``atspm`` wheel ships, test on an hour the policies never saw.

    .venv/bin/python bench/hires_sample.py [--seeds 0 1 2 --work bench/.cache/hires_sample]

The sample (one intersection, 2024-04-15 12:00-14:00, 37,152 events) is split at 13:00: the first hour is
imported (``inspo data import hires``) and BC and InSPO are trained on it (``inspo train``, every training
seed); the second hour is imported the same way and each policy's greedy action is compared with the
action the intersection's own (actuated) controller took at each decision. No simulator exists for this
intersection, so this measures only how well a learned policy predicts the controller's phase choice from
the detector observation, not delay (docs/traffic.md, "Hi-res event logs"). Baselines on the same hour:
"hold" (the phase shown in the observation continues) and the first hour's most frequent action.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.logs import load_log  # noqa: E402
from trainer.run_dir import load_policy  # noqa: E402

SPLIT = dt.datetime(2024, 4, 15, 13, 0)


def sample_files() -> tuple[Path, Path]:
    from trainer.hires.sample import atspm_sample

    files = atspm_sample()
    if files is None:
        raise SystemExit("the atspm wheel is not installed (bash scripts/setup.sh installs it)")
    return files


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def agreement(run_dir: Path, data) -> float:
    policy, _ = load_policy(run_dir)
    filled = data.filled[0]
    obs = torch.as_tensor(data.obs[0, filled, 0])
    masks = torch.as_tensor(data.masks[0, filled, 0])
    with torch.no_grad():
        logits = policy(obs, torch.zeros(len(obs), dtype=torch.long), masks)
    return float((logits.argmax(-1).numpy() == data.actions[0, filled, 0]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".cache" / "hires_sample")
    args = parser.parse_args()
    events_file, config = sample_files()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    events = pq.read_table(events_file)
    before = pc.less(events["TimeStamp"], pa.scalar(SPLIT, type=events["TimeStamp"].type))
    logs = {}
    for name, rows in (("hour1", before), ("hour2", pc.invert(before))):
        part = work / f"{name}.parquet"
        pq.write_table(events.filter(rows), part)
        logs[name] = work / f"log-{name}"
        if not logs[name].exists():
            inspo = str(ROOT / ".venv" / "bin" / "inspo")
            run(
                [
                    inspo,
                    "data",
                    "import",
                    "hires",
                    str(part),
                    "--detectors",
                    str(config),
                    "--out",
                    str(logs[name]),
                ]
            )
    test = load_log(logs["hour2"])
    train = load_log(logs["hour1"])
    rows = []
    for algo in ("bc", "inspo"):
        scores = []
        for seed in args.seeds:
            out = work / f"{algo}-seed{seed}"
            if not (out / "policy").exists():
                inspo = str(ROOT / ".venv" / "bin" / "inspo")
                cmd = [inspo, "train", "--algo", algo, "--data", str(logs["hour1"]), "--out", str(out)]
                run([*cmd, "--seed", str(seed), "--threads", "1"])
            scores.append(agreement(out, test))
        rows.append((algo, scores))
    filled = test.filled[0]
    n_actions = test.masks.shape[-1]
    shown = test.obs[0, filled, 0, :n_actions].argmax(-1)
    logged = test.actions[0, filled, 0]
    majority = np.bincount(train.actions[0, train.filled[0], 0]).argmax()
    print(f"\nhour 2 (13:00-14:00): {int(filled.sum())} decisions; agreement with the controller's action")
    print("| policy | training seeds | agreement (mean ± std over seeds) |")
    print("|---|---|---|")
    for algo, scores in rows:
        print(f"| {algo} | {' '.join(map(str, args.seeds))} | {np.mean(scores):.1%} ± {np.std(scores):.1%} |")
    print(f"| hold (the phase shown continues) | - | {(shown == logged).mean():.1%} |")
    print(f"| hour 1's most frequent action | - | {(logged == majority).mean():.1%} |")


if __name__ == "__main__":
    main()
