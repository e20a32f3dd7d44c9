"""Does a change to the hi-res import keep its output? Saves, or compares against, the imported logs.

    .venv/bin/python bench/hires_same_output.py --save REF_DIR    # with the code before the change
    .venv/bin/python bench/hires_same_output.py --check REF_DIR   # with the code after it

Inputs: the atspm sample as shipped; the bench's tiled input (bench/hires_import.py: 4 devices x 24 h) as
zstd Parquet and as CSV; the same rows with the devices interleaved and a block of rows moved out of
order. Compared: every column of every part file (values, schema and metadata) and the import card (file
paths made relative). Exits 1 naming the first difference.

    .venv/bin/python bench/hires_same_output.py --check REF_DIR --arrays

For a change that writes different files on purpose (2026-12-06: no env_steps), compares what the trainer
reads instead: every training array of ``trainer.logs.load_log`` must be identical, except the team reward,
which is printed next to the reference's (its relation to the agents' rewards, sum or mean), and the
fingerprint (a hash of the files); the part files present in both and the card (less its ``reward`` text)
must still be identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.hires_import import sample_files, tiled  # noqa: E402
from trainer.hires.importer import ImportOptions, import_hires  # noqa: E402


def inputs(tmp: Path) -> dict[str, tuple[Path, Path]]:
    events_file, config_file = sample_files()
    events, config = tiled(pq.read_table(events_file), pq.read_table(config_file), 12, 4)
    cfg = tmp / "config.parquet"
    pq.write_table(config, cfg)
    out = {"sample": (events_file, config_file)}
    out["tiled"] = (tmp / "tiled.parquet", cfg)
    pq.write_table(events, out["tiled"][0], compression="zstd")
    out["tiled-csv"] = (tmp / "tiled.csv", cfg)
    pcsv.write_csv(events, out["tiled-csv"][0])
    rows = np.argsort(np.arange(events.num_rows) % 7919, kind="stable")  # devices interleaved
    mixed = events.take(rows)
    block = np.r_[np.arange(5000, 5100), np.arange(0, 5000), np.arange(5100, mixed.num_rows)]
    out["mixed"] = (tmp / "mixed.parquet", cfg)
    pq.write_table(mixed.take(block), out["mixed"][0])
    return out


def imported(tmp: Path) -> dict[str, Path]:
    logs = {}
    for name, (events, config) in inputs(tmp).items():
        logs[name] = tmp / f"log-{name}"
        import_hires([events], config, None, logs[name], ImportOptions())
    return logs


def card(path: Path, root: str) -> dict:
    text = path.read_text().replace(root, "<tmp>")
    return json.loads(text)


def same_arrays(name: str, log: Path, ref: Path, root: str) -> None:
    """``--arrays``: the training arrays, the common part files and the card (less ``reward``) identical."""
    import dataclasses

    from trainer.logs import load_log

    new_data, old_data = load_log(log), load_log(ref)
    for field in dataclasses.fields(new_data):
        if field.name in ("team_rewards", "fingerprint"):
            continue
        a, b = getattr(new_data, field.name), getattr(old_data, field.name)
        same = np.array_equal(a, b, equal_nan=True) if isinstance(a, np.ndarray) else a == b
        if not same:
            sys.exit(f"{name}: training array {field.name} differs")
    filled = old_data.filled
    new_team, old_team, rewards = (
        x[filled] for x in (new_data.team_rewards, old_data.team_rewards, old_data.rewards)
    )
    relation = {
        "sum": np.array_equal(new_team, rewards.sum(axis=1)),
        "mean": np.array_equal(new_team, rewards.mean(axis=1, dtype=np.float32)),
    }
    files = {p.relative_to(log) for p in log.rglob("*.parquet")}
    common = sorted(files & {p.relative_to(ref) for p in ref.rglob("*.parquet")})
    for f in common:
        new, old = pq.read_table(log / f), pq.read_table(ref / f)
        if not new.schema.equals(old.schema, check_metadata=True) or not new.equals(old):
            sys.exit(f"{name}/{f}: differs")
    new_card, old_card = (
        card(log / "hires_card.json", root),
        json.loads((ref / "hires_card.json").read_text()),
    )
    if {**new_card, "reward": None} != {**old_card, "reward": None}:
        sys.exit(f"{name}: import card differs (beyond its reward text)")
    n, nonzero = len(new_data.agent_ids), new_team != 0
    ratio = old_team[nonzero] / new_team[nonzero]
    print(
        f"{name}: training arrays identical but the team reward (states {new_data.states.shape}, "
        f"{len(common)} of {len(files)} part files identical, card identical but its reward text); team "
        f"reward now the agents' {' and '.join(k for k, v in relation.items() if v) or 'neither'}; "
        f"reference / now: {ratio.min():.4f}-{ratio.max():.4f} "
        f"({n} agents), max |reference - now x {n}| {np.abs(old_team - n * new_team).max():.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--check", type=Path)
    parser.add_argument("--arrays", action="store_true", help="with --check: compare the training arrays")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hires-same-"))
    try:
        logs = imported(tmp)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            for name, log in logs.items():
                shutil.rmtree(args.save / name, ignore_errors=True)
                shutil.copytree(log, args.save / name)
                (args.save / name / "hires_card.json").write_text(
                    json.dumps(card(log / "hires_card.json", str(tmp)))
                )
            print(f"saved {len(logs)} logs under {args.save}")
            return
        if args.arrays:
            for name, log in logs.items():
                same_arrays(name, log, args.check / name, str(tmp))
            return
        for name, log in logs.items():
            ref = args.check / name
            files = sorted(p.relative_to(log) for p in log.rglob("*.parquet"))
            if files != sorted(p.relative_to(ref) for p in ref.rglob("*.parquet")):
                sys.exit(f"{name}: part files differ: {files}")
            for f in files:
                new, old = pq.read_table(log / f), pq.read_table(ref / f)
                if not new.schema.equals(old.schema, check_metadata=True):
                    sys.exit(f"{name}/{f}: schema or metadata differ")
                for column in old.column_names:
                    if not new.column(column).equals(old.column(column)):
                        sys.exit(f"{name}/{f}: column {column} differs")
            if card(log / "hires_card.json", str(tmp)) != json.loads((ref / "hires_card.json").read_text()):
                sys.exit(f"{name}: import card differs")
            print(f"{name}: same ({len(files)} part files, card)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
