"""Hi-res event import speed: ``import_hires`` next to just reading the same events file, as ratios.

    .venv/bin/python bench/hires_import.py [--copies 12 --devices 4 --repeat 3]

The input is the real event log the ``atspm`` wheel ships (one intersection, 2 h, 37,152 events), tiled
``--copies`` times in time and ``--devices`` times over device ids (default: 4 intersections for 24 h,
1.8 M events), written as one zstd Parquet file. Measured in one run on one machine (best of ``--repeat``),
events per second:
  * read, pyarrow: ``pq.read_table`` of the file
  * read, DuckDB:  ``SELECT * FROM read_parquet(...)`` fetched as Arrow
  * import, ours:  ``trainer.hires.importer.import_hires``: read, validate and count, decisions every 5 s,
                   detector observations, the training log written (zstd) and the import card
Target (docs/traffic.md): import at >= 0.3x the raw read's events/s. CPU seconds (all threads) are printed
beside the wall-clock ones: on a shared machine they move less between runs.
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


def best(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU seconds (all threads) of ``repeat`` calls."""
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import duckdb

    events_file, config_file = sample_files()
    events, config = tiled(pq.read_table(events_file), pq.read_table(config_file), args.copies, args.devices)
    tmp = Path(tempfile.mkdtemp(prefix="hires-bench-"))
    try:
        path, cfg = tmp / "events.parquet", tmp / "config.parquet"
        pq.write_table(events, path, compression="zstd")
        pq.write_table(config, cfg)
        n = events.num_rows
        raw, raw_cpu = best(lambda: pq.read_table(path), args.repeat)
        con = duckdb.connect()
        duck, duck_cpu = best(
            lambda: con.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table(), args.repeat
        )
        runs = iter(range(args.repeat))
        ours, ours_cpu = best(
            lambda: import_hires([path], cfg, None, tmp / f"log{next(runs)}", ImportOptions()), args.repeat
        )
        print(
            f"events: {n:,} ({args.devices} devices x {args.copies} x the atspm sample), file {path.stat().st_size:,} B"
        )
        for name, wall, cpu in (
            ("read, pyarrow", raw, raw_cpu),
            ("read, DuckDB ", duck, duck_cpu),
            ("import, ours ", ours, ours_cpu),
        ):
            print(f"{name}: {n / wall:,.0f} events/s ({wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU)")
        print(
            f"ratio import / pyarrow read: {raw / ours:.3f}x; import / DuckDB read: {duck / ours:.3f}x (target >= 0.3x)"
        )
        print(
            f"same in CPU time (all threads; steadier on a shared machine): {raw_cpu / ours_cpu:.3f}x; {duck_cpu / ours_cpu:.3f}x"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
