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

from envs.traffic.detectors import ACTUATION_SCALE, obs_width, scaled_time

BEGIN_GREEN, BEGIN_YELLOW, DETECTOR_OFF, DETECTOR_ON = 1, 8, 81, 82
INDIANA_CODES = range(0, 256)  # the published enumerations fit a byte; other codes are vendor extensions


@dataclass
class DeviceEvents:
    """One device's events (sorted by time) with phases already mapped to actions."""

    green_ts: np.ndarray  # begin-green times
    green_action: np.ndarray  # the action (phase map) of each begin green
    green_end: np.ndarray  # when each of those greens ended (begin yellow of that phase), inf if never
    loop_on: list[
        tuple[np.ndarray, np.ndarray]
    ]  # per configured loop: (event times, state after: 1 on / 0 off)
    loop_action: np.ndarray  # per loop: the action its phase maps to
    loop_stopbar: np.ndarray  # per loop: True for stop-bar loops (anything not "Advance")
    n_green: int


def green_ends(
    ts: np.ndarray, nema: np.ndarray, yellow_ts: np.ndarray, yellow_nema: np.ndarray
) -> np.ndarray:
    """For every begin green, the first begin yellow of the same phase at or after it (inf if none)."""
    out = np.full(len(ts), np.inf)
    for phase in np.unique(nema):
        sel = nema == phase
        ends = np.sort(yellow_ts[yellow_nema == phase])
        if len(ends):
            k = np.searchsorted(ends, ts[sel], side="left")
            out[sel] = np.where(k < len(ends), ends[np.minimum(k, len(ends) - 1)], np.inf)
    return out


def occupied_seconds(times: np.ndarray, states: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A loop's total occupied seconds up to each time in ``at`` (off before its first event)."""
    if not len(times):
        return np.zeros(len(at))
    cum = np.concatenate([[0.0], np.cumsum(np.diff(times) * states[:-1])])
    j = np.searchsorted(times, at, side="right") - 1
    safe = np.maximum(j, 0)
    return np.where(j >= 0, cum[safe] + (at - times[safe]) * states[safe], 0.0)


def shown_green(dev: DeviceEvents, t: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the green serving each time, whether a change interval is running, the last began green."""
    side = "left" if strict else "right"
    idx = np.searchsorted(dev.green_ts, t, side=side) - 1
    safe = np.maximum(idx, 0)
    end = dev.green_end[safe]
    ended = (end < t) if strict else (end <= t)
    changing = (idx < 0) | ended
    n = len(dev.green_ts)
    shown = np.where(idx < 0, 0, np.where(ended & (idx + 1 < n), idx + 1, safe))
    return shown, changing, idx


def device_steps(
    dev: DeviceEvents,
    t: np.ndarray,
    first: np.ndarray,
    delta: float,
    start: float,
    n_actions: int,
    min_green_s: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(obs [K, 6A+2], actions [K], masks [K, A], rewards [K])`` at decision times ``t``.

    ``first``: True where a decision starts a segment (no previous interval: zero detector features);
    ``start``: the log's first event (time since a phase never served counts from there).
    """
    k, a_max = len(t), n_actions
    obs = np.zeros((k, obs_width(a_max)))
    shown_act, _, _ = shown_green(dev, t, strict=False)
    actions = dev.green_action[shown_act]
    # The observation is the controller's view before it decides: the green that began last before t is
    # the current phase even if its change interval has started (real controllers end greens between
    # grid points; showing the change would give the decision away).
    _, changing, idx = shown_green(dev, t, strict=True)
    safe = np.maximum(idx, 0)
    phase = dev.green_action[safe]
    rows = np.arange(k)
    obs[rows, phase] = 1.0
    prev_end = np.where(idx >= 1, dev.green_end[np.maximum(idx - 1, 0)], dev.green_ts[safe])
    in_phase = np.where(idx >= 0, np.maximum(t - prev_end, 0.0), 0.0)  # since its change interval began
    can = in_phase >= min_green_s
    obs[:, a_max] = can
    obs[:, a_max + 1] = scaled_time(in_phase)
    # detector features over the interval before each decision, the reward over the one after it; the
    # intervals tile the grid, so each loop needs its occupied seconds and actuations at the grid points
    # only (plus one interval past each segment's last decision)
    n_loops = len(dev.loop_on)
    last = np.r_[first[1:], True]
    on_before, on_after, rises = np.zeros((k, n_loops)), np.zeros((k, n_loops)), np.zeros((k, n_loops))
    for j, (times, states) in enumerate(dev.loop_on):
        at_t = occupied_seconds(times, states, t)
        on_before[1:, j] = np.diff(at_t)
        on_after[:-1, j] = on_before[1:, j]
        on_after[last, j] = occupied_seconds(times, states, t[last] + delta) - at_t[last]
        on_times = times[states == 1]
        rises[1:, j] = np.diff(np.searchsorted(on_times, t, "left"))
    on_before[first] = rises[first] = 0.0
    for block, kind in enumerate((True, False)):
        sel = dev.loop_stopbar == kind
        onehot = np.zeros((n_loops, a_max))
        onehot[np.flatnonzero(sel), dev.loop_action[sel]] = 1.0
        count = onehot.sum(axis=0)
        base = a_max + 2 + 2 * block * a_max
        obs[:, base : base + a_max] = np.divide(
            on_before @ onehot, count * delta, out=np.zeros((k, a_max)), where=count > 0
        )
        obs[:, base + a_max : base + 2 * a_max] = (rises @ onehot) / ACTUATION_SCALE
    # time since each phase was last green: its greens' ends before t (never: since the log's start)
    served = np.zeros((k, a_max))
    for g in range(dev.n_green):
        ends = np.sort(dev.green_end[(dev.green_action == g) & np.isfinite(dev.green_end)])
        j = np.searchsorted(ends, t, side="left") - 1
        last = np.where(j >= 0, ends[np.maximum(j, 0)] if len(ends) else start, start)
        served[:, g] = scaled_time(t - last)
    served[rows[idx >= 0], phase[idx >= 0]] = 0.0
    obs[:, 5 * a_max + 2 :] = served
    legal = np.arange(a_max) < dev.n_green
    # inside min-green only the current phase, unless the controller's change is already under way
    free = can | (changing & (actions != phase))
    masks = np.where(free[:, None], legal[None, :], np.arange(a_max)[None, :] == phase[:, None])
    rewards = -on_after.sum(axis=1) / delta
    return obs, actions, masks, rewards
