"""One event log file, parsed: per device its events with Indiana codes, in time order, and what was off.

Out-of-order rows, unknown codes and silences are counted into the import card here, while the file's
rows are at hand (docs/traffic.md, "Hi-res event logs").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from trainer.hires.card import ImportCard, time_ranges
from trainer.hires.decisions import INDIANA_CODES
from trainer.hires.read import EVENT_COLUMNS, as_int, as_micros, read_table


@dataclass
class Events:
    """One events file, parsed: per device its events with Indiana codes, in time order.

    Times are seconds since the file's first event (``origin_us``, microseconds since 1970), so decision
    times on the grid and event times compare exactly.
    """

    path: Path
    origin_us: int
    end: float  # the last event
    devices: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (seconds, code, parameter)
    gaps: list[tuple[float, float]]  # silences of every device longer than max_gap


def read_events(path: Path, card: ImportCard, max_gap: float) -> Events:
    table = read_table(path, EVENT_COLUMNS, "event log")
    micros = as_micros(table, path)
    if not len(micros):
        raise ValueError(f"{path}: the event log has no rows")
    origin = int(micros.min())
    card.origin_us = origin
    ts = (micros - origin) / 1e6
    code = as_int(table, "EventId", path)
    param = as_int(table, "Parameter", path)
    encoded = table.column("DeviceId").cast(pa.string()).combine_chunks().dictionary_encode()
    device = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = encoded.dictionary.to_pylist()
    card.count_codes(path, code)
    order = np.argsort(device, kind="stable")  # grouped by device, file order within
    bounds = np.searchsorted(device[order], np.arange(len(names) + 1))
    known = (code >= INDIANA_CODES.start) & (code < INDIANA_CODES.stop)
    devices, late_times, gaps = {}, [], None
    for d, name in enumerate(names):
        rows = order[bounds[d] : bounds[d + 1]]
        t = ts[rows]
        if (np.diff(t) < 0).any():  # out of order: earlier than a row before it of the same device
            late = np.r_[False, t[1:] < np.maximum.accumulate(t)[:-1]]
            late_times.append(t[late])
            rows = rows[np.argsort(t, kind="stable")]
        rows = rows[known[rows]]
        t = ts[rows]
        devices[name] = (t, code[rows], param[rows])
        silent = np.flatnonzero(np.diff(t) > max_gap)
        mine = list(zip(t[silent].tolist(), t[silent + 1].tolist(), strict=True))
        gaps = mine if gaps is None else _intersect(gaps, mine)
    if late_times:
        late = np.sort(np.concatenate(late_times))
        card.out_of_order(path, len(late), time_ranges(late, 60.0))
    if not known.any():
        raise ValueError(f"{path}: no events with Indiana event codes (0-255)")
    gaps = [(a, b) for a, b in gaps or [] if b - a > max_gap]
    return Events(path, origin, float(ts[known].max()), devices, gaps)


def _intersect(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Intersection of two sorted lists of disjoint intervals."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
