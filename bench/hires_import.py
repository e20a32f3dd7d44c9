"""Hi-res event import speed: ``import_hires`` next to just reading the same events file, as ratios.

    .venv/bin/python bench/hires_import.py [--copies 12 --devices 4 --repeat 3]

The input is the real event log the ``atspm`` wheel ships (one intersection, 2 h, 37,152 events), tiled
``--copies`` times in time and ``--devices`` times over device ids (default: 4 intersections for 24 h,
1.8 M events), written twice: as one zstd Parquet file and, the same rows, as one CSV file
(``pyarrow.csv.write_csv``: what agencies mostly export). Per file format, measured in one run on one
machine, events per second (best of ``--repeat`` rounds; each round times the three back to back, so load
that comes and goes on a shared machine hits them alike, and the ratio is also given per round):
  * read, pyarrow: ``pq.read_table`` / ``pyarrow.csv.read_csv`` of the file
  * read, DuckDB:  ``SELECT * FROM read_parquet(...)`` / ``read_csv(...)`` fetched as Arrow
  * import, ours:  ``trainer.hires.importer.import_hires`` of that file: read, validate and count,
                   decisions every 5 s, detector observations, the training log written (zstd) and the
                   import card
Target (docs/traffic.md): import at >= 0.3x the raw read's events/s; it was set for the Parquet file. CPU
seconds (all threads) are printed beside the wall-clock ones: on a shared machine they move less.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.hires.importer import ImportOptions, import_hires  # noqa: E402


def sample_files() -> tuple[Path, Path]:
    from trainer.hires.sample import atspm_sample

    files = atspm_sample()
    if files is None:
        raise SystemExit("the atspm wheel is not installed (bash scripts/setup.sh installs it)")
    return files


def tiled(events: pa.Table, config: pa.Table, copies: int, devices: int) -> tuple[pa.Table, pa.Table]:
    span = pc.max(events["TimeStamp"]).as_py() - pc.min(events["TimeStamp"]).as_py()
    step = np.timedelta64(int(np.ceil(span.total_seconds() + 1)), "s")
    parts, configs = [], []
    for d in range(devices):
        configs.append(config.set_column(0, "DeviceId", pa.array(np.full(config.num_rows, 1000 + d))))
        for c in range(copies):
            ts = events["TimeStamp"].to_numpy() + c * step
            parts.append(
                events.set_column(0, "TimeStamp", pa.array(ts)).set_column(
                    1, "DeviceId", pa.array(np.full(events.num_rows, 1000 + d))
                )
            )
    return pa.concat_tables(parts), pa.concat_tables(configs)


def timed(fn) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads) of one call."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def interleaved(fns: dict, repeat: int) -> dict[str, list[tuple[float, float]]]:
    """``repeat`` rounds of one call of each: the load of a shared machine moves between rounds, so
    timing the contenders back to back in every round (not one block after another) keeps it fair."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            out[name].append(timed(fn))
    return out


def report(label: str, times: dict[str, list[tuple[float, float]]], n: int) -> None:
    """Best-of events/s and ratios of one file format's three contenders."""
    read_pa, read_duck, ours = (times[name] for name in ("read, pyarrow", "read, DuckDB ", "import, ours "))
    best = {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in times.items()}
    print(f"-- {label}")
    for name, (wall, cpu) in best.items():
        print(f"{name}: {n / wall:,.0f} events/s ({wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU)")
    for kind, k in (("wall", 0), ("CPU", 1)):
        ratios = [
            [read[k] / imp[k] for read, imp in zip(reads, ours, strict=True)]
            for reads in (read_pa, read_duck)
        ]
        print(
            f"ratio import / read, {kind}: best {best['read, pyarrow'][k] / best['import, ours '][k]:.3f}x "
            f"pyarrow, {best['read, DuckDB '][k] / best['import, ours '][k]:.3f}x DuckDB; per round "
            + ", ".join(f"{min(r):.3f}-{max(r):.3f}x (median {np.median(r):.3f})" for r in ratios)
            + " (target >= 0.3x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import duckdb

    events_file, config_file = sample_files()
    events, config = tiled(pq.read_table(events_file), pq.read_table(config_file), args.copies, args.devices)
    tmp = Path(tempfile.mkdtemp(prefix="hires-bench-"))
    try:
        parquet, csv, cfg = tmp / "events.parquet", tmp / "events.csv", tmp / "config.parquet"
        pq.write_table(events, parquet, compression="zstd")
        pcsv.write_csv(events, csv)
        pq.write_table(config, cfg)
        n = events.num_rows
        con = duckdb.connect()
        runs = iter(range(2 * args.repeat))

        def import_(path: Path):
            return lambda: import_hires([path], cfg, None, tmp / f"log{next(runs)}", ImportOptions())

        contenders = {
            "Parquet": {
                "read, pyarrow": lambda: pq.read_table(parquet),
                "read, DuckDB ": lambda: con.sql(f"SELECT * FROM read_parquet('{parquet}')").to_arrow_table(),
                "import, ours ": import_(parquet),
            },
            "CSV": {
                "read, pyarrow": lambda: pcsv.read_csv(csv),
                "read, DuckDB ": lambda: con.sql(f"SELECT * FROM read_csv('{csv}')").to_arrow_table(),
                "import, ours ": import_(csv),
            },
        }
        print(f"events: {n:,} ({args.devices} devices x {args.copies} x the atspm sample)")
        for label, fns in contenders.items():
            path = parquet if label == "Parquet" else csv
            report(f"{label} ({path.stat().st_size:,} B)", interleaved(fns, args.repeat), n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
