"""``inspo report atspm --logged DIR --learned DIR --out DIR``: operators' performance measures, side by side."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="reports on controllers' event logs", description="Reports on controllers' event logs."
    )
    kinds = p.add_subparsers(dest="report_kind", required=True, metavar="KIND")
    atspm = kinds.add_parser(
        "atspm",
        help="ATSPM performance measures (split failures, arrivals on green, ...) of two controllers' events",
        description="Run the atspm package's measures (arrivals on green, platoon ratio, split failures, "
        "yellow/red actuations, terminations, detector actuations) on the hi-res events of the logged and the "
        "learned controller over the same episodes (files of the same name), print them side by side with the "
        "ratio learned/logged and save OUT/atspm.csv and OUT/atspm.png. atspm runs in its own environment "
        "(.venv-atspm; create it with `bash scripts/setup-atspm.sh`). See docs/traffic.md.",
    )
    atspm.add_argument(
        "--logged", required=True, type=Path, help="directory of the logged controller's events"
    )
    atspm.add_argument(
        "--learned", required=True, type=Path, help="directory of the learned controller's events"
    )
    atspm.add_argument(
        "--out", required=True, type=Path, help="directory for the table, the plot and atspm's tables"
    )
    atspm.add_argument(
        "--detectors",
        type=Path,
        default=None,
        help="detector configuration for both sets (default: detectors.csv/.parquet in each directory)",
    )
    atspm.add_argument("--phases", action="store_true", help="print every phase's row, not only the totals")
    atspm.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer.atspm.compare import format_rows
    from trainer.atspm.report import atspm_report
    from trainer.report import print_table

    rows, notes, written = atspm_report(args.logged, args.learned, args.out, args.detectors)
    print_table(
        format_rows(rows, args.phases), title="ATSPM measures (atspm 2.6.1), all devices and episodes"
    )
    for note in notes:
        print(note)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
