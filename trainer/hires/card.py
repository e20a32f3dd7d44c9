"""The import card: what an event-log import found, counted and located (written as hires_card.json).

Nothing here stops an import: unknown codes, out-of-order rows, clock gaps, detectors missing from the
configuration and phases that never turn green are counted, with the time ranges they affect, so an
operator can see what the training log rests on (docs/traffic.md, "Hi-res event logs").
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trainer.hires.decisions import INDIANA_CODES
from trainer.hires.kernels import count_values, value_spans

EPOCH = dt.datetime(1970, 1, 1)
MAX_RANGES = 10  # time ranges listed per finding (the count covers all)


def iso(origin_us: int, seconds: float) -> str:
    """The time ``seconds`` after ``origin_us`` (microseconds since 1970), to the microsecond."""
    micros = origin_us + round(float(seconds) * 1e6)
    return (EPOCH + dt.timedelta(microseconds=micros)).isoformat(sep=" ")


def time_ranges(times: np.ndarray, merge_within: float) -> list[tuple[float, float]]:
    """Sorted times grouped into ranges where neighbours are at most ``merge_within`` s apart."""
    if not len(times):
        return []
    breaks = np.flatnonzero(np.diff(times) > merge_within)
    starts = np.r_[times[0], times[breaks + 1]]
    ends = np.r_[times[breaks], times[-1]]
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _ranges(ranges: list[tuple[float, float]], origin: int) -> list[str]:
    return [f"{iso(origin, a)} .. {iso(origin, b)}" for a, b in ranges[:MAX_RANGES]]


@dataclass
class ImportCard:
    options: dict
    decision_model: str
    reward: str
    behavior_prob: str = "unknown (null): the controller's probabilities are not logged; trainers estimate mu"
    episodes: int = 0
    steps: int = 0
    events: int = 0
    events_per_code: Counter = field(default_factory=Counter)
    unknown_codes: Counter = field(default_factory=Counter)
    findings: dict[str, list[dict]] = field(default_factory=dict)
    coverage: dict[str, dict[str, dict]] = field(default_factory=dict)
    decisions_per_action: dict[str, dict[int, int]] = field(default_factory=dict)
    phase_map: dict[str, dict[int, int]] = field(default_factory=dict)  # device -> phase -> action
    origin_us: int = 0  # the current file's first event (microseconds since 1970): times are relative to it

    def _add(self, kind: str, **entry) -> None:
        self.findings.setdefault(kind, []).append(entry)

    def count_codes(self, path: Path, code: np.ndarray) -> None:
        small, counts = count_values(code, 1 << 16)  # counting, not sorting
        if small:
            values = np.flatnonzero(counts)
            counts = counts[values]
        else:
            values, counts = np.unique(code, return_counts=True)
        self.events += int(len(code))
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            self.events_per_code[v] += c
            if v not in INDIANA_CODES:
                self.unknown_codes[v] += c
        unknown = sum(
            c for v, c in zip(values.tolist(), counts.tolist(), strict=True) if v not in INDIANA_CODES
        )
        if unknown:
            self._add("unknown_codes_skipped", file=str(path), rows=unknown)

    def out_of_order(self, path: Path, rows: int, ranges) -> None:
        self._add("out_of_order_rows", file=str(path), rows=int(rows), ranges=_ranges(ranges, self.origin_us))

    def clock_gaps(self, path: Path, gaps: list[tuple[float, float]]) -> None:
        self._add(
            "clock_gaps",
            file=str(path),
            count=len(gaps),
            seconds=round(sum(b - a for a, b in gaps), 3),
            ranges=_ranges(gaps, self.origin_us),
            note=f"no event for more than {self.options['max_gap_s']} s: each gap starts a new episode",
        )

    def devices_not_in_map(self, path: Path, names: list[str]) -> None:
        self._add("devices_not_in_phase_map", file=str(path), devices=names, note="their events are skipped")

    def phases_not_in_map(self, device: str, phases: np.ndarray) -> None:
        counts = Counter(phases.tolist())
        self._add("greens_of_unmapped_phases", device=device, phases=dict(sorted(counts.items())))

    def phases_never_green(self, device: str, phases: list[int]) -> None:
        if phases:
            self._add("phases_never_green", device=device, phases=phases)

    def detectors_missing(self, device: str, channels: np.ndarray, times: np.ndarray) -> None:
        """Per channel (ascending) its events and the time range they span."""
        if len(channels) and channels.min() >= 0 and channels.max() < 1 << 16:
            seen, counts, earliest, latest = value_spans(channels, times)
        else:
            order = np.lexsort((times, channels))
            channels, times = channels[order], times[order]
            bounds = np.r_[0, np.flatnonzero(np.diff(channels)) + 1, len(channels)]
            seen, counts = channels[bounds[:-1]], np.diff(bounds)
            earliest, latest = times[bounds[:-1]], times[bounds[1:] - 1]
        for channel, events, a, b in zip(
            seen.tolist(), counts.tolist(), earliest.tolist(), latest.tolist(), strict=True
        ):
            self._add(
                "detectors_missing_from_config",
                device=device,
                detector=channel,
                events=events,
                ranges=_ranges([(a, b)], self.origin_us),
                note="their on/off events are skipped",
            )

    def detector_phase_unmapped(self, device: str, channel: int, phase: int) -> None:
        self._add("detectors_on_unmapped_phases", device=device, detector=channel, phase=phase)

    def detector_coverage(self, device: str, channel: int, phase: int, stopbar: bool, events: int) -> None:
        entry = self.coverage.setdefault(device, {}).setdefault(
            str(phase), {"stop_bar": 0, "advance": 0, "silent": []}
        )
        entry["stop_bar" if stopbar else "advance"] += 1
        if events == 0:
            entry["silent"].append(channel)

    def decisions(self, device: str, actions: np.ndarray) -> None:
        counts = self.decisions_per_action.setdefault(device, {})
        per_action = np.bincount(actions)  # actions are >= 0 (phase map); counting, not sorting
        for a in np.flatnonzero(per_action).tolist():
            counts[a] = counts.get(a, 0) + int(per_action[a])

    def warnings(self) -> list[str]:
        out = []
        for kind, entries in self.findings.items():
            for e in entries:
                detail = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("note",))
                out.append(f"{kind.replace('_', ' ')}: {detail}")
        return out

    def to_dict(self) -> dict:
        return {
            "options": self.options,
            "decision_model": self.decision_model,
            "reward": self.reward,
            "behavior_prob": self.behavior_prob,
            "episodes": self.episodes,
            "steps": self.steps,
            "events": self.events,
            "events_per_code": {str(k): v for k, v in sorted(self.events_per_code.items())},
            "unknown_codes": {str(k): v for k, v in sorted(self.unknown_codes.items())},
            "phase_map": {d: {str(p): a for p, a in sorted(m.items())} for d, m in self.phase_map.items()},
            "detector_coverage": self.coverage,
            "decisions_per_action": {
                d: {str(a): c for a, c in sorted(v.items())} for d, v in self.decisions_per_action.items()
            },
            "findings": self.findings,
        }

    def write(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
