"""Does a change to the hi-res import keep its output? Saves, or compares against, the imported logs.

    .venv/bin/python bench/hires_same_output.py --save REF_DIR    # with the code before the change
    .venv/bin/python bench/hires_same_output.py --check REF_DIR   # with the code after it

Inputs: the atspm sample as shipped; the bench's tiled input (bench/hires_import.py: 4 devices x 24 h) as
zstd Parquet and as CSV; the same rows with the devices interleaved and a block of rows moved out of
order. Compared: every column of every part file (values, schema and metadata) and the import card (file
paths made relative). Exits 1 naming the first difference.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path)
    group.add_argument("--check", type=Path)
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
