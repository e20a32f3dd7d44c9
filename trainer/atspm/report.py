"""``inspo report atspm``: atspm's measures of the logged and the learned controller on the same episodes.

Episodes pair by file name (the SUMO writer names them ``seed-<seed>``), so only episodes present in both
event sets count: the same simulated hours under both controllers (``inspo eval --env-arg events_dir=DIR``
on the same evaluation seeds writes them). Writes ``OUT/{logged,learned}-measures/<measure>.parquet``
(atspm's binned tables), ``OUT/atspm.csv`` (the side-by-side table) and ``OUT/atspm.png``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from trainer.atspm.compare import per_phase, read_measures, side_by_side
from trainer.atspm.plots import plot_measures
from trainer.atspm.run import EventSet, atspm_python, find_event_set, run_measures


def read_config(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)


def common_episodes(logged: EventSet, learned: EventSet) -> tuple[list[str], str | None]:
    """The episodes in both sets, and a note on those left out (None when the sets match)."""
    both = sorted(set(logged.episodes) & set(learned.episodes))
    if not both:

        def names(s: EventSet) -> str:
            shown = sorted(s.episodes)
            return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")

        raise ValueError(
            f"no episode in both event sets (logged: {names(logged)}; learned: {names(learned)}): "
            "run both controllers on the same seeds"
        )
    only = {s.label: sorted(set(s.episodes) - set(both)) for s in (logged, learned)}
    note = "; ".join(f"{len(v)} {k} episode(s) not in the other set left out" for k, v in only.items() if v)
    return both, note or None


def atspm_report(
    logged_dir: Path, learned_dir: Path, out: Path, detectors: Path | None = None
) -> tuple[list[dict], list[str], list[Path]]:
    """Run atspm on both event sets; returns (side-by-side rows, notes, files written)."""
    python = atspm_python()
    logged = find_event_set("logged", logged_dir, detectors)
    learned = find_event_set("learned", learned_dir, detectors)
    episodes, note = common_episodes(logged, learned)
    notes = [f"{len(episodes)} episode(s) in both sets"] + ([note] if note else [])
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for events in (logged, learned):
        measures_dir = run_measures(events, episodes, out / f"{events.label}-measures", python)
        summaries.append(per_phase(read_measures(measures_dir), read_config(events.detectors)))
    rows = side_by_side(*summaries)
    table = out / "atspm.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    figure = plot_measures(*summaries, ("logged", "learned"), out / "atspm.png")
    return rows, notes, [table, figure, out / "logged-measures", out / "learned-measures"]
