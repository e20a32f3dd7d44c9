"""Find an event set's files and run atspm on them in the separate ``.venv-atspm`` (a subprocess).

atspm 2.6.1 cannot share the project's environment (it needs pandas < 3 and duckdb < 2), so
``trainer/atspm/measures_script.py`` runs with ``.venv-atspm/bin/python`` and writes one Parquet file per
measure; nothing here imports atspm.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# the rule lives with the script (it runs in .venv-atspm and imports nothing of the project's; its own
# imports are the standard library's at the top, so importing it here is cheap)
from trainer.atspm.measures_script import episode_name

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("measures_script.py")
SETUP_HINT = "bash scripts/setup-atspm.sh"
SITE_FILES = {"detectors", "phase_map"}  # the writer's site files beside the events


def atspm_python() -> Path:
    """The interpreter of the atspm environment (``INSPO_ATSPM_PYTHON`` overrides ``.venv-atspm``)."""
    override = os.environ.get("INSPO_ATSPM_PYTHON")
    python = Path(override) if override else ROOT / ".venv-atspm" / "bin" / "python"
    if not python.is_file():
        raise FileNotFoundError(
            f"no atspm environment at {python}: create it with `{SETUP_HINT}` (docs/traffic.md)"
        )
    return python


@dataclass(frozen=True)
class EventSet:
    """One controller's events: episode name -> events file, and the detector configuration."""

    label: str
    episodes: dict[str, Path]
    detectors: Path


def find_event_set(label: str, directory: Path, detectors: Path | None = None) -> EventSet:
    """The events files in ``directory`` (``*.events.parquet``, else other ``.parquet``/``.csv`` files
    except the site files) and its ``detectors.csv``/``.parquet`` unless ``detectors`` is given."""
    if not directory.is_dir():
        raise ValueError(f"--{label}: {directory} is not a directory of event files")
    files = sorted(directory.glob("*.events.parquet")) or sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in (".parquet", ".csv") and episode_name(p) not in SITE_FILES
    )
    if not files:
        raise ValueError(f"--{label}: no event files (*.events.parquet, *.parquet, *.csv) in {directory}")
    if detectors is None:
        found = [
            directory / f"detectors{s}"
            for s in (".csv", ".parquet")
            if (directory / f"detectors{s}").is_file()
        ]
        if not found:
            raise ValueError(
                f"--{label}: no detectors.csv or detectors.parquet in {directory} (or pass --detectors)"
            )
        detectors = found[0]
    return EventSet(label, {episode_name(p): p for p in files}, detectors)


def run_measures(events: EventSet, episodes: list[str], out: Path, python: Path) -> Path:
    """atspm's measures of ``events``' ``episodes`` into ``out/<measure>.parquet``; returns ``out``."""
    files = [str(events.episodes[e]) for e in episodes]
    cmd = [str(python), str(SCRIPT), *files, "--detectors", str(events.detectors), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        reason = lines[-1].removeprefix("atspm measures: ") if lines else f"exit {proc.returncode}"
        raise ValueError(f"atspm on the {events.label} events: {reason}")
    return out
