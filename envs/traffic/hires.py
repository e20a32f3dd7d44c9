"""Render a SUMO episode as a controller's high-resolution event log (the ATSPM / Indiana layout).

What a real cabinet records, from what the env executed (docs/traffic.md, "Hi-res event logs"):

* phase events: ``1`` begin green at the green's first second, ``7`` green termination and ``8`` begin
  yellow at the switch decision, ``9`` end yellow when the next green begins, and there ``10`` begin / ``11``
  end red clearance: sumo-rl has no all-red, so the clearance is zero long, but ATSPM's measures (split
  failures, yellow/red actuations) start a phase's red at ``10``;
* detector events: ``82`` on / ``81`` off at the start of the simulated second in which a loop's state
  changed (the env reads the loops once per second, envs/traffic/detectors.py).

Phase numbers are 1-based green phase indices (``Phase = action + 1``), written with the matching
detector configuration (``detectors.csv``: DeviceId, Phase, Parameter = detector channel, Function; a row
per phase a loop serves) and
the phase map (``phase_map.csv``: DeviceId, Phase, Action). ``DeviceId`` is the SUMO traffic light id.
``make_env('sumo:<net>', events_dir=DIR)`` writes ``DIR/seed-<seed>.events.parquet`` for every episode.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from envs.traffic.detectors import DetectorBank

EPOCH = dt.datetime(2026, 1, 1)  # simulated time 0, as in the Parquet logs' ts
EVENT_SCHEMA = pa.schema(
    [
        pa.field("TimeStamp", pa.timestamp("us")),
        pa.field("DeviceId", pa.string()),
        pa.field("EventId", pa.int64()),
        pa.field("Parameter", pa.int64()),
    ]
)


def event_table(bank: DetectorBank) -> pa.Table:
    """All events of the episode the bank recorded, in time order (phase events first within a second)."""
    rows = []
    for event in bank.events:
        rows.append(event)
        if event[2] == 9:  # end yellow: the zero-length red clearance (module docstring)
            rows += [(event[0], event[1], 10, event[3]), (event[0], event[1], 11, event[3])]
    phase = np.array(rows, dtype=np.float64).reshape(-1, 4)
    seconds = [phase[:, 0]]
    device = [phase[:, 1].astype(np.int64)]
    code = [phase[:, 2].astype(np.int64)]
    param = [phase[:, 3].astype(np.int64) + 1]
    if bank.bits:
        bits = np.vstack([np.zeros((1, len(bank.ids)), bool), np.array(bank.bits)])
        changed_t, loop = np.nonzero(bits[1:] != bits[:-1])
        seconds.append(changed_t.astype(np.float64))  # row s is the step to second s + 1: starts at s
        loop_agent = np.searchsorted(bank.bounds, loop, side="right") - 1
        device.append(loop_agent)
        code.append(np.where(bits[1:][changed_t, loop], 82, 81))
        channels = np.array([lp.channel for a in bank.agents for lp in bank.loops[a]], dtype=np.int64)
        param.append(channels[loop])
    seconds_all = np.concatenate(seconds)
    order = np.argsort(seconds_all, kind="stable")
    micros = np.round(seconds_all[order] * 1e6).astype("timedelta64[us]")
    agents = np.array(bank.agents, dtype=object)
    return pa.table(
        {
            "TimeStamp": pa.array(np.datetime64(EPOCH, "us") + micros),
            "DeviceId": pa.array(agents[np.concatenate(device)[order]].tolist(), pa.string()),
            "EventId": pa.array(np.concatenate(code)[order]),
            "Parameter": pa.array(np.concatenate(param)[order]),
        },
        schema=EVENT_SCHEMA,
    )


def _atomic_csv(path: Path, header: list[str], rows: list[list]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # collection workers write the same files
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def write_site_files(bank: DetectorBank, out: Path) -> None:
    """``detectors.csv`` and ``phase_map.csv`` for the events (the same for every episode of a net)."""
    detectors = [  # a loop serving several phases is listed once per phase
        [a, phase + 1, loop.channel, loop.function]
        for a in bank.agents
        for loop in bank.loops[a]
        for phase in loop.phases
    ]
    _atomic_csv(out / "detectors.csv", ["DeviceId", "Phase", "Parameter", "Function"], detectors)
    phases = [[a, g + 1, g] for a, n in zip(bank.agents, bank.n_green, strict=True) for g in range(n)]
    _atomic_csv(out / "phase_map.csv", ["DeviceId", "Phase", "Action"], phases)


def write_episode(bank: DetectorBank, out: str | os.PathLike, name: str) -> Path:
    """Write the episode's events (and the site files) into ``out``; returns the events file."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_site_files(bank, out)
    final = out / f"{name}.events.parquet"
    tmp = out / f".{final.name}.{os.getpid()}.tmp"
    pq.write_table(event_table(bank), tmp, compression="zstd")
    os.replace(tmp, final)
    return final
