"""``inspo report atspm``: the real atspm package, in the real .venv-atspm, on SUMO events and the real sample.

The measures tests need .venv-atspm (``bash scripts/setup-atspm.sh``; .ci/run creates it) and skip where it
is absent; the error tests do not need it. SUMO episodes run in subprocesses (libsumo: one simulation per
process).
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.cli import main

ROOT = Path(__file__).resolve().parents[1]
ATSPM_PYTHON = ROOT / ".venv-atspm" / "bin" / "python"
HAS_SUMO = all(importlib.util.find_spec(m) for m in ("sumo_rl", "libsumo", "sumo"))


def need_atspm_env() -> None:
    if not ATSPM_PYTHON.is_file() and not os.environ.get("INSPO_ATSPM_PYTHON"):
        pytest.skip("no .venv-atspm (the atspm environment): bash scripts/setup-atspm.sh")


def report(logged: Path, learned: Path, out: Path) -> dict[tuple[str, str], dict]:
    """Run the command; its atspm.csv rows keyed by (measure, phase)."""
    assert (
        main(["report", "atspm", "--logged", str(logged), "--learned", str(learned), "--out", str(out)]) == 0
    )
    with (out / "atspm.csv").open() as f:
        return {(row["measure"], row["phase"]): row for row in csv.DictReader(f)}


def total(rows: dict, measure: str, column: str) -> float:
    return float(rows[(measure, "all")][column])


@pytest.fixture(scope="module")
def sumo_events(tmp_path_factory) -> Path:
    """Ten simulated minutes of grid4x4 (evaluation seed 0) under max-pressure and under fixed-time, as events."""
    if not HAS_SUMO:
        pytest.skip("SUMO (traffic extra) not installed")
    need_atspm_env()
    root = tmp_path_factory.mktemp("atspm")
    for controller in ("max-pressure", "fixed"):
        cmd = [sys.executable, "-m", "trainer.cli", "eval", "--controller", controller, "--env", "sumo:grid4x4",
               "--env-arg", "num_seconds=600", "--env-arg", f"events_dir={root / controller}", "--seeds", "1"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.mark.sumo
def test_sumo_events_against_themselves_give_sane_measures_and_ratio_one(sumo_events, tmp_path):
    rows = report(sumo_events / "max-pressure", sumo_events / "max-pressure", tmp_path)
    for measure in ("detector actuations (count)", "arrivals on green (%)", "platoon ratio"):
        assert total(rows, measure, "logged") > 0, measure
    assert 0 < total(rows, "arrivals on green (%)", "logged") < 100
    assert total(rows, "actuations on red (Yellow_Red loops)", "logged") > 0  # the 10 events open red
    finite = [row for row in rows.values() if row["ratio"] not in ("", "nan")]
    assert finite and [row for row in finite if float(row["ratio"]) != 1.0] == []
    assert (tmp_path / "atspm.png").stat().st_size > 10_000
    assert {p.name for p in (tmp_path / "logged-measures").iterdir()} >= {"split_failures.parquet"}


@pytest.mark.sumo
def test_measures_tell_max_pressure_from_fixed_time(sumo_events, tmp_path):
    """Same seed, same demand: max-pressure serves the arrivals (more on green, fewer waiting on red)."""
    rows = report(sumo_events / "fixed", sumo_events / "max-pressure", tmp_path)
    assert float(rows[("arrivals on green (%)", "all")]["ratio"]) > 1.5
    assert float(rows[("actuations on red (Yellow_Red loops)", "all")]["ratio"]) < 0.9


def test_real_sample_against_itself(tmp_path):
    """The real controller log the atspm wheel ships has what SUMO lacks: split failures and terminations."""
    from trainer.hires.sample import atspm_sample

    need_atspm_env()
    found = atspm_sample()
    if found is None:
        pytest.skip("the atspm wheel (its sample event log) is not installed: bash scripts/setup.sh")
    events, config = found
    sample = tmp_path / "sample"
    sample.mkdir()
    shutil.copy(events, sample / "sample.events.parquet")
    shutil.copy(config, sample / "detectors.parquet")
    rows = report(sample, sample, tmp_path / "out")
    assert total(rows, "split failures (cycles)", "logged") > 0
    assert total(rows, "gap-outs + max-outs + force-offs", "logged") > 0
    assert total(rows, "arrivals on green (%)", "ratio") == 1.0


def test_missing_atspm_environment_is_one_line_naming_the_setup(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSPO_ATSPM_PYTHON", str(tmp_path / "nowhere" / "python"))
    code = main(
        ["report", "atspm", "--logged", str(tmp_path), "--learned", str(tmp_path), "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "bash scripts/setup-atspm.sh" in err, err


def test_event_sets_without_a_common_episode_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSPO_ATSPM_PYTHON", sys.executable)  # found; never run: the inputs fail first
    for name, seed in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"seed-{seed:06d}.events.parquet").write_bytes(b"")
        (tmp_path / name / "detectors.csv").write_text("DeviceId,Phase,Parameter,Function\n")
    args = ["report", "atspm", "--logged", str(tmp_path / "a"), "--learned", str(tmp_path / "b")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no episode in both event sets" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # nothing written


def test_eval_refuses_one_events_dir_for_several_controllers(tmp_path, capsys):
    """Both controllers' episodes would be written as seed-<seed>.events.parquet, the second over the first."""
    code = main(["eval", "--controller", "max-pressure", "--controller", "fixed", "--env", "sumo:grid4x4",
                 "--env-arg", "num_seconds=60", "--env-arg", f"events_dir={tmp_path}", "--seeds", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "evaluate one controller per events_dir" in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_truncated_events_file_is_one_line_naming_it(tmp_path, capsys):
    need_atspm_env()
    sets = {}
    for name in ("logged", "learned"):
        sets[name] = tmp_path / name
        sets[name].mkdir()
        (sets[name] / "detectors.csv").write_text("DeviceId,Phase,Parameter,Function\nA0,1,1,Presence\n")
    good = pa.table(
        {"TimeStamp": [dt.datetime(2026, 1, 1)], "DeviceId": ["A0"], "EventId": [1], "Parameter": [1]}
    )
    pq.write_table(good, sets["learned"] / "seed-000001.events.parquet")
    data = (sets["learned"] / "seed-000001.events.parquet").read_bytes()
    (sets["logged"] / "seed-000001.events.parquet").write_bytes(data[: len(data) // 2])
    args = ["report", "atspm", "--logged", str(sets["logged"]), "--learned", str(sets["learned"])]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"{sets['logged'] / 'seed-000001.events.parquet'}:" in err, err
