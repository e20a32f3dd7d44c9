"""The detector configuration and the phase map of an import (ATSPM layout; docs/traffic.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer.hires.read import DETECTOR_COLUMNS, PHASE_MAP_COLUMNS, as_int, device_ids, read_table


@dataclass
class Site:
    """The detector configuration and phase map: per device, loops and phase -> action."""

    devices: list[str]
    phase_action: dict[str, dict[int, int]]
    loops: dict[
        str, list[tuple[int, int, bool]]
    ]  # device -> (channel, phase, stop-bar), a row per phase served
    n_actions: int


def read_site(detectors: Path, phase_map: Path | None, events_phases: dict[str, set[int]]) -> Site:
    config = read_table(detectors, DETECTOR_COLUMNS, "detector configuration")
    dev = device_ids(config)
    phase = as_int(config, "Phase", detectors)
    channel = as_int(config, "Parameter", detectors)
    function = config.column("Function").to_pylist()
    loops: dict[str, list[tuple[int, int, bool]]] = {}
    seen: dict[tuple[str, int, int], int] = {}
    kind: dict[tuple[str, int], tuple[bool, int]] = {}  # a detector serving several phases has one Function
    for row, (d, p, c, f) in enumerate(zip(dev, phase, channel, function, strict=True)):
        stopbar = "advance" not in str(f).lower()
        if (d, int(c), int(p)) in seen:
            raise ValueError(
                f"{detectors}: row {row + 2}: detector {c} of device {d} is configured twice for phase {p} "
                f"(first on row {seen[(d, int(c), int(p))] + 2})"
            )
        first = kind.setdefault((d, int(c)), (stopbar, row))
        if first[0] != stopbar:
            raise ValueError(
                f"{detectors}: row {row + 2}: detector {c} of device {d} is an advance loop on one row and a "
                f"stop-bar loop on another (row {first[1] + 2})"
            )
        seen[(d, int(c), int(p))] = row
        loops.setdefault(d, []).append((int(c), int(p), stopbar))
    if phase_map is not None:
        table = read_table(phase_map, PHASE_MAP_COLUMNS, "phase map")
        phase_action: dict[str, dict[int, int]] = {}
        for row, (d, p, a) in enumerate(
            zip(
                device_ids(table),
                as_int(table, "Phase", phase_map),
                as_int(table, "Action", phase_map),
                strict=True,
            )
        ):
            if a < 0:
                raise ValueError(f"{phase_map}: row {row + 2}: column Action must be >= 0, got {a}")
            phase_action.setdefault(d, {})[int(p)] = int(a)
        devices = list(phase_action)
    else:  # every phase that turns green or has a detector, in number order
        devices = sorted(set(events_phases) | set(loops))
        phase_action = {
            d: {
                p: i
                for i, p in enumerate(
                    sorted(events_phases.get(d, set()) | {p for _, p, _ in loops.get(d, [])})
                )
            }
            for d in devices
        }
    n_actions = max((max(m.values()) + 1 for m in phase_action.values() if m), default=0)
    if n_actions == 0:
        raise ValueError(f"no phases: neither the phase map nor {detectors} names a phase")
    return Site(devices, phase_action, loops, n_actions)
