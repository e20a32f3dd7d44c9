"""``inspo data import hires``: controller hi-res event logs -> a training log (docs/traffic.md).

One agent per ``DeviceId``; decisions, actions and the detector observation as in
:mod:`trainer.hires.decisions`; reward ``occupancy`` (minus occupied loop-seconds per second); no
``env_steps`` (the reader derives the state, every device's observation, and the team reward, the
devices' mean); ``behavior_prob`` null (the controller's probabilities are unknown: trainers estimate
mu). Bad input is counted and located in the import card (``hires_card.json`` beside the log) or, where
nothing sensible can be derived, a one-line error; the log is staged and renamed into place, never
half-written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from contract.logformat import LogMeta, LogWriter, list_column
from envs.traffic.detectors import obs_width
from trainer.hires import threads
from trainer.hires.card import ImportCard
from trainer.hires.decisions import (
    BEGIN_GREEN,
    BEGIN_YELLOW,
    DeviceEvents,
    device_steps,
    green_ends,
)
from trainer.hires.events import Events, read_events
from trainer.hires.kernels import group_events
from trainer.hires.site import Site, read_site

DECISION_MODEL = (
    "fixed interval: every delta_time s from the first event, the action is the phase serving the next "
    "interval (the last to begin green, or the next one during a change interval), as the SUMO env decides"
)
REWARD = (
    "occupancy: minus the device's occupied loop-seconds per second over the interval after the decision; "
    "team reward: the devices' mean (no env_steps written: the reader derives it, and the state as all "
    "devices' observations concatenated)"
)


class _CardCalls:
    """Stands in for the import card on a worker thread: records the calls, replayed later in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.recorded = threading.Event()  # set once the device has made all its calls, or failed
        self.complete = False  # whether it made them all

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def replay(self, card: ImportCard) -> None:
        for name, args, kwargs in self.calls:
            getattr(card, name)(*args, **kwargs)


@dataclass(frozen=True)
class ImportOptions:
    delta_time: float = 5.0
    min_green_s: float = 0.0  # a switch is legal this long after a change began (0: always)
    max_gap_s: float = 60.0  # a longer silence starts a new episode
    env_id: str = "hires"


def device_events(ev: Events, name: str, site: Site, card: ImportCard) -> DeviceEvents:
    ts, code, param = ev.devices[name]
    mapping = site.phase_action.get(name, {})
    rows = sorted(site.loops.get(name, []))  # by channel, a row per phase a loop serves
    configured = sorted({channel for channel, _, _ in rows})
    used = sorted({channel for channel, phase, _ in rows if phase in mapping})
    n = len(used)
    table, known, slot_of = slot_lookup(configured, used)
    times, states, params, bounds = group_events(
        ts, ev.origin_us, code, param, n, table, known, slot_of, BEGIN_GREEN, BEGIN_YELLOW
    )
    at = bounds - bounds[n]  # params: from group n on
    green_ts, green_nema = times[bounds[n + 2] : bounds[n + 3]], params[at[n + 2] : at[n + 3]]
    unmapped = ~np.isin(green_nema, list(mapping))
    if unmapped.any():
        card.phases_not_in_map(name, green_nema[unmapped])
        green_ts, green_nema = green_ts[~unmapped], green_nema[~unmapped]
    if not len(green_ts):
        raise ValueError(
            f"{ev.path}: device {name} has no begin-green events (EventId {BEGIN_GREEN}) for a mapped phase: "
            "no decisions can be derived"
        )
    yellow_ts, yellow_nema = times[bounds[n + 3] : bounds[n + 4]], params[at[n + 3] : at[n + 4]]
    phases = np.array(sorted(mapping), dtype=np.int64)  # every green left is of a mapped phase
    actions = np.array([mapping[p] for p in phases.tolist()], dtype=np.int64)
    card.phases_never_green(name, sorted(set(mapping) - set(green_nema.tolist())))
    stopbar_of = {channel: stopbar for channel, _, stopbar in rows}
    serves = np.zeros((n, max(mapping.values()) + 1 if mapping else 0), dtype=bool)
    for channel, phase, _ in rows:
        if phase in mapping:
            serves[used.index(channel), mapping[phase]] = True
    if bounds[n + 2] > bounds[n + 1]:
        missing = slice(bounds[n + 1], bounds[n + 2])
        card.detectors_missing(name, params[at[n + 1] : at[n + 2]], times[missing])
    events = dict(zip(used, np.diff(bounds[: n + 1]).tolist(), strict=True))
    for channel, phase, stopbar in rows:
        if phase not in mapping:
            card.detector_phase_unmapped(name, channel, phase)
        else:
            card.detector_coverage(name, channel, phase, stopbar, events[channel])
    return DeviceEvents(
        green_ts=green_ts,
        green_action=actions[np.searchsorted(phases, green_nema)],
        green_end=green_ends(green_ts, green_nema, yellow_ts, yellow_nema),
        loop_times=times[: bounds[n]],
        loop_states=states[: bounds[n]],
        loop_bounds=bounds[: n + 1],
        loop_serves=serves,
        loop_stopbar=np.array([stopbar_of[channel] for channel in used], dtype=bool),
        n_green=max(mapping.values()) + 1 if mapping else 0,
    )


def slot_lookup(configured: list[int], used: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How ``kernels.group_events`` finds a detector channel's loop: its index in ``used``
    (configured, phase mapped), ``len(used)`` for a configured loop whose phase is not mapped,
    ``len(used) + 1`` for a channel not in the configuration.

    A table indexed by channel covers ``0 ..`` the largest configured channel (at most 2**16: Indiana
    channels are bytes); other channels are found by binary search among the sorted configured ones."""
    n = len(used)
    if 2 * (n + 5) > 1 << 16:
        raise ValueError(f"{n} detectors on one device: at most {(1 << 15) - 5} are supported")
    known = np.array(configured, dtype=np.int64)
    slot_of = np.array([used.index(c) if c in used else n for c in configured], dtype=np.int64)
    inside = (known >= 0) & (known < 1 << 16)
    table = np.full(int(known[inside].max(initial=-1)) + 1, n + 1, np.int64)
    table[known[inside]] = slot_of[inside]
    return table, known, slot_of


def decision_grid(ev: Events, delta: float, card: ImportCard) -> list[np.ndarray]:
    """Decision times per segment: from the first event, a new segment after every clock gap."""
    if ev.gaps:
        card.clock_gaps(ev.path, ev.gaps)
    starts = [0.0] + [b for _, b in ev.gaps]
    ends = [a for a, _ in ev.gaps] + [ev.end]
    return [
        s + delta * np.arange(int(np.floor((e - s) / delta)) + 1) for s, e in zip(starts, ends, strict=True)
    ]


def import_hires(
    events: list[Path], detectors: Path, phase_map: Path | None, out: Path, options: ImportOptions
) -> ImportCard:
    """Import event files (each its own episodes) into the log ``out``; returns the import card."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty: import into a new directory")
    card = ImportCard(options=options.__dict__, decision_model=DECISION_MODEL, reward=REWARD)
    parsed = [read_events(Path(p), card, options.max_gap_s) for p in events]
    green_phases: dict[str, set[int]] = {}
    for ev in parsed:
        for name, phases in ev.green_phases.items():
            green_phases.setdefault(name, set()).update(phases)
    site = read_site(Path(detectors), phase_map and Path(phase_map), green_phases)
    card.phase_map = site.phase_action
    a_max = site.n_actions
    meta = LogMeta(
        env_id=options.env_id,
        obs_dim=obs_width(a_max),
        n_actions=a_max,
        agent_ids=site.devices,
        state_dim=len(site.devices) * obs_width(a_max),
    )
    staging = out.parent / f".{out.name}.importing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # One writer per device, so each device's part files are written on the thread that computed
        # them, while others compute (pyarrow writes without the GIL); the names are the device's
        # index, so the files are the same whichever thread finished first.
        with contextlib.ExitStack() as open_writers:
            writers = [
                open_writers.enter_context(LogWriter(staging, meta, site="hires", writer_id=f"import{i}"))
                for i in range(len(site.devices))
            ]
            for ev in parsed:
                _import_file(ev, site, options, card, writers)
        card.write(staging / "hires_card.json")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return card


def _import_file(
    ev: Events, site: Site, options: ImportOptions, card: ImportCard, writers: list[LogWriter]
) -> None:
    card.origin_us = ev.origin_us
    absent = [d for d in site.devices if d not in ev.devices]
    if absent:
        raise ValueError(f"{ev.path}: no events of device(s) {', '.join(absent)} named in the phase map")
    extra = sorted(set(ev.devices) - set(site.devices))
    if extra:
        card.devices_not_in_map(ev.path, extra)
    segments = decision_grid(ev, options.delta_time, card)
    t = np.concatenate(segments)
    first = np.concatenate([np.arange(len(s)) == 0 for s in segments])
    n, k, a_max = len(site.devices), len(t), site.n_actions
    stem = ev.path.name.split(".")[0]
    names = pa.array([stem] if len(segments) == 1 else [f"{stem}~{j}" for j in range(len(segments))])
    # what every device's rows share: a row per decision step
    steps = {
        "episode_id": names.take(np.repeat(np.arange(len(segments)), [len(s) for s in segments])),
        "t": pa.array(np.concatenate([np.arange(len(s)) for s in segments]).astype(np.int32)),
        "terminated": pa.array(np.zeros(k, bool)),
        "truncated": pa.array(np.r_[first[1:], True]),
        "behavior_prob": pa.nulls(k, pa.float32()),
        "controller": pa.repeat(pa.scalar(f"hires:{stem}"), k),
        "model_version": pa.nulls(k, pa.string()),
        "ts": pa.array((ev.origin_us + np.round(t * 1e6).astype(np.int64)).astype("datetime64[us]")),
    }

    def one_device(i: int, name: str, device_card: ImportCard | _CardCalls) -> None:
        recording = device_card if isinstance(device_card, _CardCalls) else None
        try:
            dev = device_events(ev, name, site, device_card)
            obs = np.zeros((k, obs_width(a_max)), np.float32)
            _, a, m, r = device_steps(
                dev, t, first, options.delta_time, 0.0, a_max, options.min_green_s, obs=obs
            )
            device_card.decisions(name, a)
            rows = {
                **steps,
                "agent_id": pa.repeat(pa.scalar(name, pa.string()), k),
                "obs": list_column(obs, pa.float32()),
                "action": pa.array(a.astype(np.int32, copy=False)),
                "action_mask": list_column(m, pa.bool_()),
                "reward": pa.array(r.astype(np.float32, copy=False)),
            }
            if recording:  # all its card entries are in: the caller replays them while this writes
                recording.complete = True
        finally:
            if recording:
                recording.recorded.set()
        # No env_steps: its state would be exactly the joint observation, which the reader derives,
        # and writing that second list<float> column cost about 20 ms of a 175 ms import
        # (docs/benchmarks.md).
        writers[i].add_tables(pa.table(rows), None)

    if threads.workers(n) < 2:
        for i, name in enumerate(site.devices):
            one_device(i, name, card)
    else:
        # Devices are independent: each computes its own arrays and writes its own part file, and the
        # compiled kernels, numpy's whole-array passes and pyarrow's writer run without the GIL, so a
        # second core (the readers use two) takes half the devices. The card's entries are recorded
        # per device and replayed in device order, so the card is the same bytes as one device after
        # another; a device's are replayed as soon as it has computed, while it writes (the last
        # device's replay no longer follows its write).
        calls = [_CardCalls() for _ in site.devices]
        done = [threads.pool().submit(one_device, i, name, calls[i]) for i, name in enumerate(site.devices)]
        try:
            for recorded in calls:
                recorded.recorded.wait()
                if not recorded.complete:
                    break  # it failed: raised below, after the error of any device before it
                recorded.replay(card)
            for future in done:
                future.result()  # the first device (in order) that failed raises its error
        finally:
            for future in done:  # an error leaves no device running behind it
                future.cancel() or future.exception()
    card.episodes += len(segments)
    card.steps += k
