"""The compiled merges (trainer/hires/kernels.py) give bit for bit what the whole-array numpy
formulations they replaced give: on events exactly on grid points and a rounding step either side,
loops without events or starting with an off event, grids of several segments."""

from __future__ import annotations

import numpy as np
import pytest

from envs.traffic.detectors import ACTUATION_SCALE, TIME_CAP, TIME_SCALE, obs_width, scaled_time
from trainer.hires import decisions
from trainer.hires.decisions import DeviceEvents, between_counts, between_loops, detector_features
from trainer.hires.kernels import action_masks, next_same, phase_features, scan_device


def reference_intervals(dev: DeviceEvents, t: np.ndarray, last: np.ndarray, delta: float):
    """The numpy formulation before the kernel (binary searches, per-cell counts, running sums)."""
    times, states, bounds = dev.loop_times, dev.loop_states, dev.loop_bounds
    k, n_loops = len(t), len(bounds) - 1
    cum = np.zeros(len(times))
    if len(times) > 1:
        step = np.diff(times) * states[:-1]
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            if hi - lo > 1:
                np.cumsum(step[lo : hi - 1], out=cum[lo + 1 : hi])

    def occupied_at(latest: np.ndarray, at: np.ndarray) -> np.ndarray:
        if not len(times):
            return np.zeros(latest.shape)
        has = latest >= bounds[:-1, None]
        safe = np.where(has, latest, 0)
        return np.where(has, cum[safe] + (at - times[safe]) * states[safe], 0.0)

    loop = np.repeat(np.arange(n_loops) * (k + 1), np.diff(bounds))
    left = np.searchsorted(t, times, side="left")
    at_or_before = np.bincount(loop + left, minlength=n_loops * (k + 1)).reshape(n_loops, k + 1)
    latest = np.cumsum(at_or_before[:, :k], axis=1) + bounds[:-1, None] - 1
    at_t = occupied_at(latest, t)
    on_before = np.zeros((n_loops, k))
    on_before[:, 1:] = np.diff(at_t, axis=1)
    on_after = np.empty((n_loops, k))
    on_after[:, :-1] = on_before[:, 1:]
    ahead = t[last] + delta
    latest_ahead = np.zeros((n_loops, len(ahead)), np.int64)
    for j, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)):
        latest_ahead[j] = np.searchsorted(times[lo:hi], ahead, side="right") - 1 + lo
    on_after[:, last] = occupied_at(latest_ahead, ahead) - at_t[:, last]
    right = np.searchsorted(t, times, side="right")
    cells = np.bincount(loop + right, weights=states, minlength=n_loops * (k + 1))
    rises = cells.reshape(n_loops, k + 1)[:, :k]
    rises[:, 0] = 0.0
    return on_before, on_after, rises


def device(seed: int, t: np.ndarray, n_loops: int = 6) -> DeviceEvents:
    """Random on/off events per loop (some exactly on grid points or a rounding step off), loop 2 empty."""
    rng = np.random.default_rng(seed)
    times, states, bounds = [], [], [0]
    for j in range(n_loops):
        n = 0 if j == 2 else int(rng.integers(1, 400))
        x = rng.uniform(0.0, t[-1] + 8.0, n)
        on_grid = rng.choice(t, n)
        pick = rng.integers(0, 4, n)
        x = np.where(pick == 1, on_grid, x)
        x = np.where(pick == 2, np.nextafter(on_grid, -np.inf), x)
        x = np.where(pick == 3, np.nextafter(on_grid, np.inf), x)
        x = np.sort(np.floor(x * 10) / 10 if j == 4 else x)  # loop 4: many events in one second
        s = (rng.random(n) < 0.5).astype(np.float64)
        times.append(x)
        states.append(s)
        bounds.append(bounds[-1] + n)
    a = 3
    return DeviceEvents(
        green_ts=np.zeros(1),
        green_action=np.zeros(1, np.int64),
        green_end=np.full(1, np.inf),
        loop_times=np.concatenate(times),
        loop_states=np.concatenate(states),
        loop_bounds=np.array(bounds, np.int64),
        loop_serves=rng.random((n_loops, a)) < 0.5,
        loop_stopbar=rng.random(n_loops) < 0.5,
        n_green=a,
    )


GRIDS = {
    "one segment": (5.0 * np.arange(400), np.r_[True, np.zeros(399, bool)]),
    "three segments": (
        np.r_[5.0 * np.arange(100), 612.37 + 5.0 * np.arange(150), 1500.5 + 5.0 * np.arange(60)],
        np.r_[True, np.zeros(99, bool), True, np.zeros(149, bool), True, np.zeros(59, bool)],
    ),
    "odd step": (1 / 3 * np.arange(900), np.r_[True, np.zeros(899, bool)]),
}


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("seed", range(4))
def test_detector_features_match_the_numpy_formulation(grid, seed):
    t, first = GRIDS[grid]
    delta, a_max = float(t[1] - t[0]), 3
    dev = device(seed, t)
    obs = np.zeros((len(t), obs_width(a_max)))
    on_after = detector_features(dev, t, first, delta, a_max, obs)
    on_before, want_after, rises = reference_intervals(dev, t, np.r_[first[1:], True], delta)
    on_before[:, first] = rises[:, first] = 0.0
    want = np.zeros_like(obs)
    for block, kind in enumerate((True, False)):
        base = a_max + 2 + 2 * block * a_max
        for a in range(a_max):
            mine = np.flatnonzero((dev.loop_stopbar == kind) & dev.loop_serves[:, a])
            if len(mine):  # summed row by row in loop order, then divided
                occupied, rising = on_before[mine[0]].copy(), rises[mine[0]].copy()
                for r in mine[1:]:
                    occupied += on_before[r]
                    rising += rises[r]
                want[:, base + a] = occupied / (len(mine) * delta)
                want[:, base + a_max + a] = rising / ACTUATION_SCALE
    assert want.any()
    assert np.array_equal(obs, want)
    assert np.array_equal(on_after, want_after.T)


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("seed", range(4))
def test_between_loop_counts_match_the_numpy_formulation(grid, seed, monkeypatch):
    t, first = GRIDS[grid]
    dev = device(seed, t)
    got = between_counts(dev, t, first)
    want = np.stack(
        [between_loops(dev, np.flatnonzero(dev.loop_serves[:, a]), t, first) for a in range(3)], 1
    )
    assert want.any()
    assert np.array_equal(got, want)
    monkeypatch.setattr(decisions, "MAX_SECONDS", 0)  # files longer than 48 days: the numpy path
    assert np.array_equal(between_counts(dev, t, first), want)


def reference_phase_features(dev: DeviceEvents, t: np.ndarray, start: float, min_green_s: float, a_max: int):
    """The numpy formulation before ``kernels.phase_features`` (binary searches, whole-array passes)."""

    def shown_green(strict: bool):
        idx = np.searchsorted(dev.green_ts, t, side="left" if strict else "right") - 1
        safe = np.maximum(idx, 0)
        ended = (dev.green_end[safe] < t) if strict else (dev.green_end[safe] <= t)
        n = len(dev.green_ts)
        return np.where(idx < 0, 0, np.where(ended & (idx + 1 < n), idx + 1, safe)), (idx < 0) | ended, idx

    k = len(t)
    obs = np.zeros((k, obs_width(a_max)))
    shown_act, _, _ = shown_green(strict=False)
    actions = dev.green_action[shown_act]
    _, changing, idx = shown_green(strict=True)
    safe = np.maximum(idx, 0)
    phase = dev.green_action[safe]
    rows = np.arange(k)
    obs[rows, phase] = 1.0
    prev_end = np.where(idx >= 1, dev.green_end[np.maximum(idx - 1, 0)], dev.green_ts[safe])
    in_phase = np.where(idx >= 0, np.maximum(t - prev_end, 0.0), 0.0)
    can = in_phase >= min_green_s
    obs[:, a_max] = can
    obs[:, a_max + 1] = scaled_time(in_phase)
    served = np.zeros((k, a_max))
    for g in range(dev.n_green):
        ends = np.sort(dev.green_end[(dev.green_action == g) & np.isfinite(dev.green_end)])
        j = np.searchsorted(ends, t, side="left") - 1
        last = np.where(j >= 0, ends[np.maximum(j, 0)] if len(ends) else start, start)
        served[:, g] = scaled_time(t - last)
    served[rows[idx >= 0], phase[idx >= 0]] = 0.0
    obs[:, 5 * a_max + 2 : 6 * a_max + 2] = served
    return obs, actions, phase, changing, can


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("seed", range(4))
def test_phase_features_match_the_numpy_formulation(grid, seed):
    """Greens on grid points and off them, a phase that never ends (inf) and one never green."""
    t, _ = GRIDS[grid]
    rng = np.random.default_rng(seed)
    a_max, n = 4, 60
    green_ts = np.sort(np.where(rng.random(n) < 0.3, rng.choice(t, n), rng.uniform(1.0, t[-1], n)))
    green_action = rng.integers(0, 3, n)  # action 3 never green
    green_end = green_ts + np.where(
        rng.random(n) < 0.3, rng.choice([0.0, t[1] - t[0]], n), rng.uniform(0, 40, n)
    )
    green_end[-1] = np.inf
    dev = device(seed, t)
    dev.green_ts, dev.green_action, dev.green_end, dev.n_green = green_ts, green_action, green_end, a_max
    obs = np.zeros((len(t), obs_width(a_max)))
    got = phase_features(t, green_ts, green_action, green_end, a_max, 0.0, 7.0, TIME_SCALE, TIME_CAP, obs)
    want_obs, *want = reference_phase_features(dev, t, 0.0, 7.0, a_max)
    assert np.array_equal(obs, want_obs)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scan_device_matches_the_numpy_formulation(seed):
    """Order, silences (of rows in time order) and green phases in one pass, as the numpy passes it
    replaced found them on the events' seconds: the neighbour comparison, the gap scan over known codes,
    the greens' np.unique. Times come as microseconds; silences of exactly the gap, a microsecond either
    side of it and 2 µs below it are among them (the kernel converts only near and above the gap)."""
    rng = np.random.default_rng(seed)
    n = 2000
    origin = 1_713_182_400_000_000  # 2024-04-15 12:00 in microseconds since 1970
    steps = rng.integers(1, 10_000_000, n)  # up to 10 s apart
    steps[rng.choice(n, 3)] += 500_000_000  # silences longer than the gap
    steps[[100, 200, 300, 400, 500]] = [60_000_000, 60_000_001, 59_999_999, 59_999_998, 60_000_002]
    micros = origin + 123_456 + np.cumsum(steps)
    micros[0] = origin
    t = (micros - origin) / 1e6  # the seconds the numpy formulation worked on
    code = rng.choice(np.array([1, 8, 81, 82, 300, -4]), n)
    code[[99, 100, 199, 200, 299, 300, 399, 400, 499, 500]] = 82
    param = rng.integers(-2, 40, n)
    ordered, known, last, starts, ends, greens = scan_device(micros, origin, code, param, 0, 256, 60.0, 1)
    valid = (code >= 0) & (code < 256)
    kt = t[valid]
    big = np.flatnonzero(np.diff(kt) > 60.0)
    assert len(big) >= 5 and ordered and known == valid.sum() and last == kt[-1]
    np.testing.assert_array_equal(starts, kt[big])
    np.testing.assert_array_equal(ends, kt[big + 1])
    np.testing.assert_array_equal(greens, np.unique(param[code == 1]))
    shuffled = micros.copy()
    shuffled[[10, 11]] = shuffled[[11, 10]]
    assert not scan_device(shuffled, origin, code, param, 0, 256, 60.0, 1)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_next_same_matches_the_per_phase_searches(seed):
    """The green ends by one merge backwards: as the per-phase mask, sort and binary search found them,
    with yellows exactly on greens, phases never ending, yellows of phases with no green, none at all."""
    rng = np.random.default_rng(seed)
    for n, m in ((300, 280), (50, 0), (0, 10), (1, 1)):
        ts = np.sort(np.round(rng.uniform(0, 500, n), 1))
        keys = rng.choice(np.array([2, 4, 6, 9]), n)
        later_ts = np.sort(
            np.r_[rng.choice(ts, m // 2) if n else [], np.round(rng.uniform(0, 520, m - m // 2), 1)]
        )
        later_keys = rng.choice(np.array([2, 4, 7, 9]), len(later_ts))  # 6 never ends, 7 never green
        want = np.full(n, np.inf)
        for phase in np.unique(keys):
            sel = keys == phase
            ends = np.sort(later_ts[later_keys == phase])
            if len(ends):
                k = np.searchsorted(ends, ts[sel], side="left")
                want[sel] = np.where(k < len(ends), ends[np.minimum(k, len(ends) - 1)], np.inf)
        assert np.array_equal(next_same(ts, keys, later_ts, later_keys), want)


@pytest.mark.parametrize("seed", [0, 1])
def test_action_masks_match_the_broadcast_formulation(seed):
    """Every served action where min-green has passed or a change is under way, else the phase shown;
    devices serving fewer actions than the site has."""
    rng = np.random.default_rng(seed)
    k, a_max = 500, 5
    for n_green in (5, 3):
        actions, phase = rng.integers(0, n_green, k), rng.integers(0, n_green, k)
        changing, can = rng.random(k) < 0.4, rng.random(k) < 0.5
        legal = np.arange(a_max) < n_green
        free = can | (changing & (actions != phase))
        want = np.where(free[:, None], legal[None, :], np.arange(a_max)[None, :] == phase[:, None])
        assert np.array_equal(action_masks(actions, phase, changing, can, n_green, a_max), want)
