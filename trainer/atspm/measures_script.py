"""Run the ``atspm`` package's performance measures on hi-res event files (a script for .venv-atspm).

    .venv-atspm/bin/python trainer/atspm/measures_script.py --detectors CONFIG --out DIR EVENTS...

It runs in the separate environment scripts/setup-atspm.sh creates (atspm 2.6.1 needs pandas < 3 and
duckdb < 2; the project's .venv has pandas 3 and duckdb 2), so it imports nothing of the project, and no
torch. ``inspo report atspm`` (trainer/atspm/run.py) calls it and reads what it writes.

Each events file is one episode and runs through atspm on its own (the SUMO writer starts every episode at
the same clock time, so episodes must not share a run). ``DIR/<measure>.parquet`` holds every episode's
rows of that measure with an ``Episode`` column (the file name without ``.events.parquet``/``.parquet``/
``.csv``). A device whose configuration has no ``Yellow_Red`` detector gets its ``Presence`` (stop-bar)
detectors counted as ones: yellow/red actuations need a detector role that SUMO loops do not carry.
Errors print one line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MEASURES = ("actuations", "arrival_on_green", "platoon_ratio", "split_failures", "yellow_red", "terminations")
AGGREGATIONS = [
    {"name": "actuations", "params": {}},
    {"name": "arrival_on_green", "params": {"latency_offset_seconds": 0}},
    {"name": "platoon_ratio", "params": {}},
    {
        "name": "split_failures",
        "params": {
            "red_time": 5,
            "red_occupancy_threshold": 0.80,
            "green_occupancy_threshold": 0.80,
            "by_approach": True,
        },
    },
    {"name": "yellow_red", "params": {"latency_offset_seconds": 0}},
    {"name": "terminations", "params": {}},
]
BIN_MINUTES = 15


def read_table(path: Path):
    """A CSV or Parquet file as a pandas frame with ``DeviceId`` as text (events and config must agree)."""
    import pandas as pd

    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if "DeviceId" not in frame.columns:
        raise ValueError(f"{path}: no DeviceId column (columns: {', '.join(map(str, frame.columns))})")
    frame["DeviceId"] = frame["DeviceId"].astype(str)
    return frame


def detector_config(path: Path):
    """The configuration, one row per detector, plus ``Yellow_Red`` copies of ``Presence`` rows for devices
    without any.

    ATSPM's measures take one phase per detector; a detector listed for several phases (the SUMO writer
    lists a loop once per phase it serves) keeps its first row, so each actuation counts once (two runs
    on the same events otherwise differed in their split failures).
    """
    import pandas as pd

    config = read_table(path)
    missing = {"Phase", "Parameter", "Function"} - set(config.columns)
    if missing:
        raise ValueError(f"{path}: the detector configuration lacks column(s) {', '.join(sorted(missing))}")
    config = config.drop_duplicates(["DeviceId", "Parameter"], keep="first").reset_index(drop=True)
    has_yellow_red = set(config.loc[config["Function"] == "Yellow_Red", "DeviceId"])
    extra = config[(config["Function"] == "Presence") & ~config["DeviceId"].isin(has_yellow_red)].copy()
    extra["Function"] = "Yellow_Red"
    return pd.concat([config, extra], ignore_index=True)


def episode_name(path: Path) -> str:
    """The file name without ``.events.parquet``/``.parquet``/``.csv``: the episode (run.py pairs by it)."""
    name = path.name
    for suffix in (".events.parquet", ".parquet", ".csv"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def measure_episode(events: Path, config) -> dict:
    """``{measure: pyarrow table}`` of one episode's events."""
    import pyarrow as pa
    from atspm import SignalDataProcessor

    params = {
        "raw_data": read_table(events),
        "detector_config": config,
        "bin_size": BIN_MINUTES,
        "aggregations": AGGREGATIONS,
        "remove_incomplete": False,
        "verbose": 0,
    }
    out = {}
    with SignalDataProcessor(**params) as processor:
        # one thread: DuckDB's parallel aggregates add floats in any order (repeat runs would differ in the
        # last bits), and an episode's events are small
        processor.conn.execute("SET threads TO 1")
        processor.load()
        processor.aggregate()
        for measure in MEASURES:
            table = processor.conn.query(f"SELECT * FROM {measure}").arrow()
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
            episode = pa.array([episode_name(events)] * table.num_rows, pa.string())
            out[measure] = table.append_column("Episode", episode)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "events", nargs="+", type=Path, help="hi-res event files (CSV or Parquet), one episode each"
    )
    parser.add_argument(
        "--detectors", type=Path, required=True, help="detector configuration (CSV or Parquet)"
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for <measure>.parquet")
    args = parser.parse_args(argv)
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        config = detector_config(args.detectors)
    except (OSError, ValueError) as err:  # pyarrow's and pandas' read errors are ValueErrors
        print(f"atspm measures: {err}", file=sys.stderr)
        return 2
    per_episode = []
    for path in args.events:
        try:
            per_episode.append(measure_episode(path, config))
        except (OSError, ValueError, duckdb.Error) as err:
            print(f"atspm measures: {path}: {err}".splitlines()[0], file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for measure in MEASURES:
        tables = [tables[measure] for tables in per_episode]
        pq.write_table(
            pa.concat_tables(tables, promote_options="permissive"), args.out / f"{measure}.parquet"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
