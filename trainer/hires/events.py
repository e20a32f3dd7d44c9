"""One event log file, parsed: per device its events with Indiana codes, in time order, and what was off.

Out-of-order rows, unknown codes and silences are counted into the import card here, while the file's
rows are at hand (docs/traffic.md, "Hi-res event logs"). Rows are grouped by device with one stable sort
(none where the file is already grouped, as controller exports are) and each device is then a slice,
scanned for order, silences and its greens' phases by one compiled pass (trainer/hires/kernels.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from trainer.hires import threads
from trainer.hires.card import ImportCard, time_ranges
from trainer.hires.decisions import BEGIN_GREEN, INDIANA_CODES
from trainer.hires.kernels import run_starts, scan_device
from trainer.hires.read import EVENT_COLUMNS, as_int, as_micros, read_table
from trainer.hires.sorting import stable_order

KNOWN = (INDIANA_CODES.start, INDIANA_CODES.stop)  # codes whose events end a silence


@dataclass
class Events:
    """One events file, parsed: per device its events with Indiana codes, in time order.

    Event times are kept as the file gives them, microseconds since 1970; the import works in seconds
    since the file's first event (``origin_us``): ``(micros - origin_us) / 1e6``, so decision times on
    the grid and event times compare exactly.
    """

    path: Path
    origin_us: int
    end: float  # the last event (seconds since origin_us)
    # name -> (microseconds since 1970, code, parameter); codes outside the Indiana range stay (counted in the card, they
    # match none of the codes decisions use)
    devices: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    gaps: list[tuple[float, float]]  # silences of every device longer than max_gap
    green_phases: dict[str, set[int]]  # name -> the phases (parameters) of its begin-green events


def read_events(path: Path, card: ImportCard, max_gap: float) -> Events:
    table = read_table(path, EVENT_COLUMNS, "event log")
    origin, ts = as_micros(table, path)
    if not len(ts):
        raise ValueError(f"{path}: the event log has no rows")
    card.origin_us = origin
    code = as_int(table, "EventId", path)
    param = as_int(table, "Parameter", path)
    all_codes = code
    (ts, code, param), slices = _by_device(table.column("DeviceId"), (ts, code, param))

    def scan(lo: int, hi: int) -> tuple:
        # other codes never match the ones decisions use, but they do not end a gap either
        return scan_device(ts[lo:hi], origin, code[lo:hi], param[lo:hi], *KNOWN, max_gap, BEGIN_GREEN)

    # The devices' scans on up to two threads (compiled, without the GIL) while this one counts the
    # codes for the card; results are taken in device order, so nothing depends on the threads.
    if threads.workers(len(slices)) > 1:
        pending = [threads.pool().submit(scan, lo, hi) for _, lo, hi in slices]
        card.count_codes(path, all_codes)
        scans = [f.result() for f in pending]
    else:
        card.count_codes(path, all_codes)
        scans = [scan(lo, hi) for _, lo, hi in slices]
    devices, greens, late_times, ends, gaps = {}, {}, [], [], None
    for (name, lo, hi), scanned in zip(slices, scans, strict=True):
        t, c, p = ts[lo:hi], code[lo:hi], param[lo:hi]
        ordered, known, end, starts, stops, green = scanned
        if not ordered:  # out of order: earlier than a row before it of the same device
            late = np.r_[False, t[1:] < np.maximum.accumulate(t)[:-1]]
            late_times.append((t[late] - origin) / 1e6)
            rows = np.argsort(t, kind="stable")
            t, c, p = t[rows], c[rows], p[rows]
            _, known, end, starts, stops, _ = scan_device(t, origin, c, p, *KNOWN, max_gap, BEGIN_GREEN)
        devices[name], greens[name] = (t, c, p), set(green.tolist())
        if known:
            ends.append(end)
        mine = list(zip(starts.tolist(), stops.tolist(), strict=True))
        gaps = mine if gaps is None else _intersect(gaps, mine)
    if late_times:
        late = np.sort(np.concatenate(late_times))
        card.out_of_order(path, len(late), time_ranges(late, 60.0))
    if not ends:
        raise ValueError(f"{path}: no events with Indiana event codes (0-255)")
    gaps = [(a, b) for a, b in gaps or [] if b - a > max_gap]
    return Events(path, origin, float(max(ends)), devices, gaps, greens)


def _by_device(column: pa.ChunkedArray, arrays: tuple) -> tuple[tuple, list[tuple[str, int, int]]]:
    """``arrays`` grouped by device (file order within) and each device's name and rows ``[lo, hi)``.

    Controller exports come grouped by device: then nothing moves and each device is a slice.
    """
    key, name = _device_key(column)
    starts = run_starts(key)
    if len(np.unique(key[np.r_[0, starts]])) < len(starts) + 1:  # interleaved
        order = stable_order(key)
        arrays, key = tuple(a[order] for a in arrays), key[order]
        starts = run_starts(key)
    bounds = np.r_[0, starts, len(key)].tolist()
    slices = [(name(key[lo]), lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return arrays, slices


def _device_key(column: pa.ChunkedArray) -> tuple[np.ndarray, Callable[[int], str]]:
    """Per row an integer naming its device, and the device's name (what casting the id to a string
    gives) from it: integer ids as they are (no hashing), other ids by their index in a dictionary."""
    if pa.types.is_integer(column.type):
        return column.to_numpy(), lambda k: str(int(k))
    encoded = column.combine_chunks().dictionary_encode()
    names = encoded.dictionary.cast(pa.string()).to_pylist()
    return encoded.indices.to_numpy(zero_copy_only=False), lambda k: names[k]


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
