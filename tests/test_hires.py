"""Hi-res controller event logs: SUMO round trip, the real ATSPM sample, and malformed input.

The round trip runs SUMO in a subprocess (libsumo: one simulation per process; tests/test_traffic.py).
The real sample is the event log and detector configuration the ``atspm`` wheel ships (scripts/setup.sh
installs the wheel without its dependencies; the package is located, never imported).
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from subprocess_helpers import run_python

from trainer.cli import main
from trainer.hires.importer import ImportOptions, import_hires
from trainer.logs import load_log

ROOT = Path(__file__).resolve().parents[1]
HAS_SUMO = all(importlib.util.find_spec(m) for m in ("sumo_rl", "libsumo", "sumo"))
OBS_TOLERANCE = 1e-6  # float32 rounding of the same sums (observed: 0)


def atspm_sample() -> tuple[Path, Path]:
    from trainer.hires.sample import atspm_sample as files

    found = files()
    if found is None:
        pytest.skip("the atspm wheel (its sample event log) is not installed: bash scripts/setup.sh")
    return found


# -- SUMO round trip ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sumo_episode(tmp_path_factory):
    """Five simulated minutes of grid4x4 under explored max-pressure: the detector log and its events."""
    if not HAS_SUMO:
        pytest.skip("SUMO (traffic extra) not installed")
    root = tmp_path_factory.mktemp("hires")
    code = f"""
        from trainer.collect import collect
        collect('sumo:grid4x4', {str(root / "log")!r}, controller='max-pressure@eps=0.3', episodes=1,
                start_seed=11, workers=1, progress=False,
                env_kwargs={{'num_seconds': 300, 'observation': 'detectors', 'reward': 'occupancy',
                             'events_dir': {str(root / "events")!r}}})
    """
    proc = run_python(code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


@pytest.mark.sumo
def test_sumo_episode_rendered_to_events_and_imported_gives_the_same_log(sumo_episode):
    events = sumo_episode / "events"
    assert sorted(p.name for p in events.iterdir()) == [
        "detectors.csv",
        "phase_map.csv",
        "seed-000011.events.parquet",
    ]
    card = import_hires(
        [events / "seed-000011.events.parquet"],
        events / "detectors.csv",
        events / "phase_map.csv",
        sumo_episode / "imported",
        ImportOptions(delta_time=5, min_green_s=2 + 5, env_id="sumo:grid4x4"),
    )
    assert not card.unknown_codes and "clock_gaps" not in card.findings
    logged, imported = load_log(sumo_episode / "log"), load_log(sumo_episode / "imported")
    assert logged.agent_ids == imported.agent_ids and len(logged.agent_ids) == 16
    assert logged.obs.shape == imported.obs.shape == (1, 60, 16, 7 * 8 + 2)
    assert logged.episode_ids == imported.episode_ids == ["seed-000011"]
    np.testing.assert_array_equal(imported.actions, logged.actions)
    np.testing.assert_array_equal(imported.masks, logged.masks)
    np.testing.assert_allclose(imported.obs, logged.obs, rtol=0, atol=OBS_TOLERANCE)
    np.testing.assert_allclose(imported.rewards, logged.rewards, rtol=0, atol=OBS_TOLERANCE)
    # the import writes no env_steps: the reader's state is the joint observation, as the env's state();
    # its team reward is the agents' mean, the traffic env's their sum (docs/traffic.md)
    np.testing.assert_allclose(imported.states, logged.states, rtol=0, atol=OBS_TOLERANCE)
    np.testing.assert_allclose(
        imported.team_rewards * 16, logged.team_rewards, rtol=1e-6, atol=16 * OBS_TOLERANCE
    )
    assert np.isnan(imported.behavior_prob).all()
    # the comparison can fail: phases switched, loops fired, some decisions were inside min-green
    assert (np.diff(logged.actions[0], axis=0) != 0).sum() > 20
    a = 8
    detector_block = logged.obs[..., a + 2 : 5 * a + 2]
    assert (detector_block > 0).mean() > 0.01 and (logged.rewards < 0).any()
    between = logged.obs[..., 6 * a + 2 :]  # vehicles between the loops: counted up, held, cleared
    assert (between > 0).mean() > 0.05 and (between >= 0.2).any() and (between == 0).mean() > 0.05
    assert (~logged.masks.all(axis=-1) & (logged.masks.sum(axis=-1) == 1)).any()


@pytest.mark.sumo
def test_loop_count_controller_picks_the_phase_with_the_most_vehicles_between_its_loops(tmp_path):
    """The rule a cabinet can run: its every free choice is the largest count its observation shows."""
    if not HAS_SUMO:
        pytest.skip("SUMO (traffic extra) not installed")
    code = f"""
        from trainer.collect import collect
        collect('sumo:grid4x4', {str(tmp_path / "log")!r}, controller='loop-count', episodes=1, start_seed=3,
                workers=1, progress=False, env_kwargs={{'num_seconds': 300, 'observation': 'detectors'}})
    """
    proc = run_python(code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = load_log(tmp_path / "log")
    a = 8
    counts = np.where(log.masks, log.obs[..., 6 * a + 2 :], -np.inf)
    free = log.masks.sum(axis=-1) > 1
    assert free.sum() > 100 and (log.obs[..., 6 * a + 2 :] > 0).any(axis=-1)[free].mean() > 0.2
    np.testing.assert_array_equal(log.actions[free], counts.argmax(axis=-1)[free])


# -- the real sample ---------------------------------------------------------------------------------------
def test_real_atspm_sample_imports_with_a_located_card(tmp_path, capsys):
    events, config = atspm_sample()
    card = import_hires([events], config, None, tmp_path / "log", ImportOptions())
    assert card.events == 37152 == sum(card.events_per_code.values())
    assert set(card.unknown_codes) == {301, 304, 305, 307, 316, 318, 320, 400, 500, 501, 502, 503}
    missing = {e["detector"] for e in card.findings["detectors_missing_from_config"]}
    assert missing == {3, 9, 18, 24, 42, 58, 59}  # on/off events of loops the configuration does not name
    assert card.phase_map == {"1136": {2: 0, 5: 1, 6: 2, 8: 3}}
    assert "phases_never_green" not in card.findings and "clock_gaps" not in card.findings
    data = load_log(tmp_path / "log")
    assert data.agent_ids == ["1136"] and data.obs.shape == (1, 1440, 1, 7 * 4 + 2)  # 2 h at 5 s
    assert sorted(card.decisions_per_action["1136"]) == [0, 1, 2, 3]
    assert np.isfinite(data.obs).all() and (data.rewards <= 0).all()
    stored = json.loads((tmp_path / "log" / "hires_card.json").read_text())
    assert stored["events"] == 37152 and stored["behavior_prob"].startswith("unknown")
    assert main(["data", "inspect", str(tmp_path / "log")]) == 0  # the dataset card shows the findings
    out = " ".join(capsys.readouterr().out.split())
    assert "import: detectors missing from config: device=1136, detector=18, events=2742" in out
    assert not (tmp_path / "log" / "env_steps").exists() and "no env_steps in this log" in out


# -- malformed input (a small hand-made log in the ATSPM layout) -------------------------------------------
T0 = dt.datetime(2025, 3, 1, 7, 0)


def small_log(minutes: int = 4) -> list[list]:
    """Two phases (2, 4) alternating every 20 s with 3 s yellow; one stop-bar loop per phase."""
    rows = []
    for k in range(minutes * 3):
        start = 20.0 * k
        phase, other = (2, 4) if k % 2 == 0 else (4, 2)
        rows.append([start, 1, phase])
        rows.append([start + 17, 8, phase])
        rows.append([start + 17, 7, phase])
        channel = 1 if phase == 2 else 2
        for s in (2.0, 9.0):
            rows.append([start + s, 82, channel])
            rows.append([start + s + 1.5, 81, channel])
        rows.append([start + 5.0, 82, 3 - channel])
        rows.append([start + 6.0, 81, 3 - channel])
    rows.sort(key=lambda r: r[0])
    return [[T0 + dt.timedelta(seconds=s), "7", code, p] for s, code, p in rows]


def write_events(path: Path, rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["TimeStamp", "DeviceId", "EventId", "Parameter"])
        for ts, device, code, param in rows:
            w.writerow([ts.isoformat(sep=" "), device, code, param])
    return path


def write_config(path: Path, rows=(("7", 2, 1, "Presence"), ("7", 4, 2, "Presence"))) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["DeviceId", "Phase", "Parameter", "Function"])
        w.writerows(rows)
    return path


def test_clean_small_log_imports_without_findings(tmp_path):
    card = import_hires(
        [write_events(tmp_path / "e.csv", small_log())],
        write_config(tmp_path / "d.csv"),
        None,
        tmp_path / "log",
        ImportOptions(),
    )
    assert card.findings == {} and card.episodes == 1
    data = load_log(tmp_path / "log")
    # phase 2 greens at 0, 40, ... s: decisions at 0..15 s pick action 0, the change at 17 s gives 4 -> 1
    assert data.actions[0, :8, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    # at 20 s the observation still shows phase 2 (its yellow from 17 s is the decision, not its input),
    # 5 s later phase 4 (green since 20 s, its change interval began at 17 s: 8 s in phase)
    obs = data.obs[0, :, 0]
    assert obs[4, :2].tolist() == [1, 0] and obs[5, :2].tolist() == [0, 1]
    assert obs[5, 3] == pytest.approx(8 / 60)


def test_between_loops_count_counts_in_and_out_and_clears_when_the_loops_are_quiet(tmp_path):
    """Phase 2's advance loop (3) sees three vehicles, its stop bar (1) one; a detector listed for both
    phases (4: a stop bar of phase 2 and 4) counts for each; all quiet for 10 s clears the count."""
    rows = [r for r in small_log() if r[2] in (1, 7, 8)]  # its phase events, none of its detector events
    at = [(30.0, 82, 3), (30.5, 81, 3), (32.0, 82, 3), (32.5, 81, 3), (34.0, 82, 3), (34.5, 81, 3)]
    at += [(36.0, 82, 1), (36.5, 81, 1), (37.0, 82, 4), (37.5, 81, 4)]
    rows += [[T0 + dt.timedelta(seconds=sec), "7", code, ch] for sec, code, ch in at]
    rows.sort(key=lambda r: r[0])
    config = (("7", 2, 1, "Presence"), ("7", 4, 2, "Presence"), ("7", 2, 3, "Advance"))
    config += (("7", 2, 4, "Presence"), ("7", 4, 4, "Presence"))
    import_hires(
        [write_events(tmp_path / "e.csv", rows)],
        write_config(tmp_path / "d.csv", config),
        None,
        tmp_path / "log",
        ImportOptions(),
    )
    a = 2
    count = load_log(tmp_path / "log").obs[0, :, 0, 6 * a + 2 :] * 10  # decisions every 5 s from 0
    # at 35 s: 3 in (read at 31, 33, 35); at 40 s: minus stop bars 1 and 4 -> 1; phase 4 never below 0;
    # the last on/off ends at 37.5 s (row 37): quiet from row 38, cleared by the read at 48 s
    assert count[7].tolist() == [3, 0] and count[8].tolist() == [1, 0] and count[9].tolist() == [1, 0]
    assert count[10].tolist() == [0, 0] and count[:6].sum() == 0


def test_out_of_order_unknown_codes_gaps_and_unconfigured_detectors_are_counted_and_located(tmp_path):
    rows = small_log(minutes=8)
    rows[10], rows[11] = rows[11], rows[10]  # one pair swapped
    rows.insert(20, [rows[20][0], "7", 999, 1])  # a vendor code
    rows.insert(30, [rows[30][0], "7", 82, 5])  # a loop the configuration does not name
    gap_from, gap_to = T0 + dt.timedelta(seconds=120), T0 + dt.timedelta(seconds=300)
    rows = [r for r in rows if not gap_from < r[0] < gap_to]
    card = import_hires(
        [write_events(tmp_path / "e.csv", rows)],
        write_config(tmp_path / "d.csv"),
        None,
        tmp_path / "log",
        ImportOptions(max_gap_s=60),
    )
    f = card.findings
    assert card.unknown_codes == {999: 1} and f["unknown_codes_skipped"][0]["rows"] == 1
    assert f["out_of_order_rows"][0]["rows"] == 1 and "07:00:" in f["out_of_order_rows"][0]["ranges"][0]
    gap = f["clock_gaps"][0]
    assert gap["count"] == 1 and gap["ranges"] == ["2025-03-01 07:02:00 .. 2025-03-01 07:05:00"]
    assert f["detectors_missing_from_config"][0]["detector"] == 5
    assert card.episodes == 2 and load_log(tmp_path / "log").episode_ids == ["e~0", "e~1"]


def test_phase_never_green_and_missing_config_detector_are_reported(tmp_path):
    config = write_config(tmp_path / "d.csv", (("7", 2, 1, "Presence"), ("7", 6, 9, "Advance")))
    card = import_hires(
        [write_events(tmp_path / "e.csv", small_log())], config, None, tmp_path / "log", ImportOptions()
    )
    assert card.findings["phases_never_green"] == [{"device": "7", "phases": [6]}]
    assert card.coverage["7"]["6"]["silent"] == [9]
    assert {e["detector"] for e in card.findings["detectors_missing_from_config"]} == {2}


def test_truncated_files_and_missing_columns_fail_in_one_line_and_write_nothing(tmp_path, capsys):
    events = write_events(tmp_path / "e.csv", small_log())
    config = write_config(tmp_path / "d.csv")
    pq.write_table(pa.csv.read_csv(events), tmp_path / "e.parquet")
    data = (tmp_path / "e.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    text = events.read_text()
    (tmp_path / "cut.csv").write_text(text[: len(text) // 2].rsplit(",", 1)[0])  # ends inside a row
    (tmp_path / "nocol.csv").write_text(text.replace("EventId", "Event"))
    cases = {
        "cut.parquet": "cut.parquet: cannot read the event log",
        "cut.csv": "cut.csv: cannot read the event log",
        "nocol.csv": "nocol.csv: the event log lacks column(s) EventId",
    }
    for name, expected in cases.items():
        out = tmp_path / f"out-{name}"
        code = main(
            ["data", "import", "hires", str(tmp_path / name), "--detectors", str(config), "--out", str(out)]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and len(err.splitlines()) == 1, err
        assert not out.exists() and not list(tmp_path.glob(".out-*"))
    # a detector may serve several phases (a row each), but not twice the same one, nor be two kinds
    for rows, expected in (
        (
            (("7", 2, 1, "Presence"), ("7", 2, 1, "Presence")),
            "row 3: detector 1 of device 7 is configured twice",
        ),
        (
            (("7", 2, 1, "Presence"), ("7", 4, 1, "Advance")),
            "row 3: detector 1 of device 7 is an advance loop",
        ),
    ):
        bad_config = write_config(tmp_path / "bad.csv", rows)
        code = main(
            [
                "data",
                "import",
                "hires",
                str(events),
                "--detectors",
                str(bad_config),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and f"bad.csv: {expected}" in err and len(err.splitlines()) == 1, err
    assert (
        main(
            [
                "data",
                "import",
                "hires",
                str(events),
                "--detectors",
                str(config),
                "--out",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    assert load_log(tmp_path / "ok").obs.shape[2] == 1
