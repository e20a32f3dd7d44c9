"""One device's decisions from its events: actions, detector observations, masks and rewards.

The decision model (docs/traffic.md, "Hi-res event logs"): decisions every ``delta`` seconds on a grid
from the segment's first event, as the SUMO env decides; the action at ``t`` is the green serving the
interval that starts at ``t``: the phase that most recently began green (event 1) at or before ``t``, or,
if its green has ended (event 8, begin yellow) by ``t``, the next phase to begin green. The observation
at ``t`` uses only events strictly before ``t`` and shows the last green to begin as the current phase
(a change already under way is the decision, not part of what it is based on); in SUMO, where decisions
fall on the grid, that is exactly the env's ``detectors`` observation (envs/traffic/detectors.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.traffic.detectors import (
    ACTUATION_SCALE,
    CLEAR_S,
    COUNT_SCALE,
    TIME_CAP,
    TIME_SCALE,
    obs_width,
)
from trainer.hires.kernels import (
    MAX_SECONDS,
    action_masks,
    between_loop_counts,
    loop_features,
    next_same,
    phase_features,
)

BEGIN_GREEN, BEGIN_YELLOW = 1, 8
INDIANA_CODES = range(0, 256)  # the published enumerations fit a byte; other codes are vendor extensions


@dataclass
class DeviceEvents:
    """One device's events (sorted by time) with phases already mapped to actions."""

    green_ts: np.ndarray  # begin-green times
    green_action: np.ndarray  # the action (phase map) of each begin green
    green_end: np.ndarray  # when each of those greens ended (begin yellow of that phase), inf if never
    loop_times: np.ndarray  # the configured loops' on/off event times, loop after loop, time order within
    loop_states: np.ndarray  # the state after each of those events: 1 on, 0 off (uint8 from the import)
    loop_bounds: np.ndarray  # loop j's events are loop_times[loop_bounds[j] : loop_bounds[j + 1]]
    loop_serves: np.ndarray  # [loops, actions]: True where the loop serves (one of the phases of) the action
    loop_stopbar: np.ndarray  # per loop: True for stop-bar loops (anything not "Advance")
    n_green: int


def green_ends(
    ts: np.ndarray, nema: np.ndarray, yellow_ts: np.ndarray, yellow_nema: np.ndarray
) -> np.ndarray:
    """For every begin green, the first begin yellow of the same phase at or after it (inf if none);
    both in time order, as a device's grouped events are (``kernels.group_events``)."""
    return next_same(ts, nema, yellow_ts, yellow_nema)


def detector_features(
    dev: DeviceEvents, t: np.ndarray, first: np.ndarray, delta: float, a_max: int, obs: np.ndarray
) -> np.ndarray:
    """Write the per-phase detector blocks of ``obs`` (occupancy and actuations over the interval before
    each decision, stop-bar loops then advance loops: the mean over the phase's loops, 0 at a segment's
    ``first`` decision); returns each loop's occupied seconds over the interval after each decision
    ``[K, loops]`` (the reward's).

    The intervals tile the grid ``t``, so each loop needs its occupied seconds and actuation count at
    the grid points only (plus one interval past each segment's last decision): one merge of the
    loops' events with the grid (``kernels.loop_features``, compiled).
    """
    columns, members = [], []
    for block, kind in enumerate((True, False)):
        base = a_max + 2 + 2 * block * a_max
        for a in range(dev.loop_serves.shape[1]):
            mine = np.flatnonzero((dev.loop_stopbar == kind) & dev.loop_serves[:, a])
            if len(mine):
                columns.append((base + a, base + a_max + a))
                members.append(mine)
    ends = np.flatnonzero(np.r_[first[1:], True])  # the last decision of each segment
    return loop_features(
        dev.loop_times,
        dev.loop_states,
        dev.loop_bounds,
        t,
        first,
        ends,
        t[ends] + delta,
        np.concatenate(members) if members else np.zeros(0, np.int64),
        np.cumsum([0] + [len(m) for m in members]),
        np.array(columns, np.int64).reshape(-1, 2),
        delta,
        ACTUATION_SCALE,
        obs,
    )


def device_steps(
    dev: DeviceEvents,
    t: np.ndarray,
    first: np.ndarray,
    delta: float,
    start: float,
    n_actions: int,
    min_green_s: float,
    obs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(obs [K, 7A+2], actions [K], masks [K, A], rewards [K])`` at decision times ``t``.

    ``first``: True where a decision starts a segment (no previous interval: zero detector features);
    ``start``: the log's first event (time since a phase never served counts from there); ``obs``: zeros
    to write the observations into (the log's float32 array: each value is computed in float64 and
    rounded once, on assignment), else a new float64 array.
    """
    k, a_max = len(t), n_actions
    obs = np.zeros((k, obs_width(a_max))) if obs is None else obs
    # The observation is the controller's view before it decides: the green that began last before t is
    # the current phase even if its change interval has started (real controllers end greens between
    # grid points; showing the change would give the decision away). Also written: min-green passed,
    # the time in the phase and, per phase, the time since it was last green (one compiled merge of the
    # grid with the greens).
    actions, phase, changing, can = phase_features(
        t,
        dev.green_ts,
        dev.green_action,
        dev.green_end,
        dev.n_green,
        start,
        min_green_s,
        TIME_SCALE,
        TIME_CAP,
        obs,
    )
    # detector features over the interval before each decision, the reward over the one after it
    on_after = detector_features(dev, t, first, delta, a_max, obs)
    between = between_counts(dev, t, first)
    obs[:, 6 * a_max + 2 : 6 * a_max + 2 + between.shape[1]] = between / COUNT_SCALE
    # inside min-green only the current phase, unless the controller's change is already under way
    masks = action_masks(actions, phase, changing, can, dev.n_green, a_max)
    rewards = -on_after.sum(axis=1) / delta
    return obs, actions, masks, rewards


def between_counts(dev: DeviceEvents, t: np.ndarray, first: np.ndarray) -> np.ndarray:
    """``between_loops`` of every action ``[K, actions]``: compiled, per second, where the loops' events
    and the grid span at most ``MAX_SECONDS`` (else the numpy formulation, action by action)."""
    latest = dev.loop_times[dev.loop_bounds[1:][np.diff(dev.loop_bounds) > 0] - 1]  # each loop's last
    seconds = int(np.ceil(max(latest.max(initial=0.0), t[-1]))) + CLEAR_S + 2
    if seconds <= MAX_SECONDS:
        return between_loop_counts(
            dev.loop_times,
            dev.loop_states,
            dev.loop_bounds,
            dev.loop_serves,
            dev.loop_stopbar,
            t,
            t[first],
            CLEAR_S,
            seconds,
        )
    actions = range(dev.loop_serves.shape[1])
    return np.stack(
        [between_loops(dev, np.flatnonzero(dev.loop_serves[:, a]), t, first) for a in actions], axis=1
    ).reshape(len(t), -1)


def between_loops(dev: DeviceEvents, loops: np.ndarray, t: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The vehicles between one action's advance and stop-bar loops at each decision (the env's count,
    envs/traffic/detectors.py): advance actuations in, stop-bar actuations out, never below 0, reset to 0
    once all the loops have been off for ``CLEAR_S`` s and at each segment's start.

    As the env reads its loops once per second, an actuation at ``s`` is read at ``floor(s) + 1``, a loop
    is off from the whole second after its off event, and the actuations read together are summed before
    the floor at 0; the value at ``t`` is the count after the reads at or before ``t``.

    Whole-array numpy: what ``between_counts`` uses past ``MAX_SECONDS``, and the reference its compiled
    path is tested against (tests/test_hires_kernels.py).
    """
    out = np.zeros(len(t))
    if not len(loops):
        return out
    rise_read, sign, change_row, change = [], [], [], []
    for j in loops.tolist():
        lo, hi = dev.loop_bounds[j], dev.loop_bounds[j + 1]
        times, state = dev.loop_times[lo:hi], dev.loop_states[lo:hi]
        rows, on = np.floor(times), state == 1.0
        rise_read.append(rows[on] + 1)
        sign.append(np.full(int(on.sum()), -1.0 if dev.loop_stopbar[j] else 1.0))
        step = np.diff(state, prepend=0.0)  # the loop's state changes (off before its first event)
        # a loop on during part of a second reads on for it: it turns off at the next whole second
        change_row.append(np.where(step > 0, rows, np.ceil(times))[step != 0])
        change.append(step[step != 0])
    # clears: the reads that end CLEAR_S off seconds of every loop (a sweep over the loops' changes)
    rows, step = np.concatenate(change_row), np.concatenate(change)
    order = np.lexsort((-step, rows))  # at one row, ons before offs: no false all-off instant
    rows, active = rows[order], np.cumsum(step[order])
    all_off = np.flatnonzero(active <= 0)
    start, next_on = rows[all_off], np.r_[rows, np.inf][all_off + 1]
    clears = start[next_on - start >= CLEAR_S] + CLEAR_S
    # segment starts clear too (a decision at a segment's first point sees nothing before it)
    resets = np.r_[clears, t[first]]
    reads = np.concatenate([*rise_read, resets])
    delta = np.concatenate([*sign, np.zeros(len(resets))])
    is_reset = np.r_[np.zeros(len(reads) - len(resets), bool), np.ones(len(resets), bool)]
    reads_at, where = np.unique(reads, return_inverse=True)
    delta = np.bincount(where, weights=delta, minlength=len(reads_at))
    reset = np.bincount(where, weights=is_reset, minlength=len(reads_at)) > 0
    return count_at(reads_at, delta, reset, t)


def count_at(reads: np.ndarray, delta: np.ndarray, reset: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The count after each sorted read (``c = max(c + delta, 0)``, or 0 at a reset), looked up at ``t``.

    Without the loop over reads: within a run between resets, ``c = S - min(0, min S so far)`` with ``S``
    the run's running sum (a sum reflected at 0); the runs' minima come from one running minimum over
    the sums shifted down by a step per run, so no run sees an earlier one's.
    """
    delta = np.where(reset, 0.0, delta)
    run = np.cumsum(reset)
    total = np.cumsum(delta)
    start = np.r_[0.0, total[reset]]  # each run's sum before it (a reset read adds nothing)
    sums = total - start[run]
    shift = (np.abs(sums).max(initial=0.0) + 1.0) * 2.0 * run
    low = np.minimum.accumulate(sums - shift) + shift
    counts = sums - np.minimum(low, 0.0)
    at = np.searchsorted(reads, t, side="right") - 1
    return np.where(at >= 0, np.r_[counts, 0.0][at], 0.0)
