"""Hindsight features of a log's exogenous inputs, for the residual estimator's state baseline.

Why: in an elevator group most of the noise in a return is *who arrives next*, not what the cars did.
A baseline ``b(s, z)`` that also sees ``z``, the input events after the decision, leaves the residual
regression ``G - b ~ 1[a_i = a] - e_i(a)`` unbiased as long as the action does not change ``z``
(``E[(1[a] - e(a)) b(s, z)] = 0`` when ``a`` is drawn independently of ``z`` given ``s``), and it removes
the part of ``G`` that ``z`` explains: an input-dependent baseline (Mao et al., ICLR 2019, for queueing
systems driven by an arrival process). docs/algorithm.md, "Exogenous inputs", has the measured effect.

The features of a row at time ``t`` (seconds), with the return's horizon ``H``:

* per channel, the discounted count of events after ``t``: ``sum over events a > t of exp(-(a - t) / H)``;
* over all channels, the number of events in ``(t, t + w]`` for ``w`` in ``H * WINDOWS``.
"""

from __future__ import annotations

import numpy as np

from trainer.logs.dataset import OfflineData
from trainer.logs.exogenous import ExogenousEvents

WINDOWS = (1 / 12, 1 / 4, 1 / 2, 1.0, 2.0, 5.0)  # multiples of the horizon


def missing_events(log: str) -> ValueError:
    """The error for a config that asks for the exogenous baseline on a log without the events."""
    return ValueError(
        "baseline_inputs='state+exogenous' needs the log's exogenous input events "
        f"(<log>/exogenous/..., docs/log-format.md); {log} has none"
    )


def wanted(config) -> bool:
    """Whether an algorithm config asks for the exogenous baseline (only InSPO's has the field)."""
    return getattr(config, "baseline_inputs", "state") == "state+exogenous"


def row_features(data: OfflineData, horizon_s: float, log: str) -> np.ndarray:
    """:func:`hindsight_features` of every filled step of ``data``, in row order (episodes in order, ``t``
    increasing), as the in-memory and the streamed training rows both lay them out."""
    if data.exogenous is None:
        raise missing_events(log)
    if data.ts is None:
        raise ValueError("baseline_inputs='state+exogenous' needs the log's ts column")
    e_idx, t_idx = np.nonzero(np.asarray(data.filled).astype(bool))
    return hindsight_features(
        np.asarray(data.ts)[e_idx, t_idx], e_idx, data.episode_ids, data.exogenous, horizon_s
    )


def discounted_future_counts(events: np.ndarray, times: np.ndarray, horizon_s: float) -> np.ndarray:
    """``[len(times)]``: sum over ``events > t`` of ``exp(-(event - t) / horizon_s)``; ``events`` sorted.

    A backward recursion over the events (``S_k = 1 + exp(-(e_{k+1} - e_k) / H) S_{k+1}``), exact on
    any clock and any episode length (no exponent of an absolute time)."""
    n = len(events)
    out = np.zeros(len(times))
    if n == 0:
        return out
    decay = np.exp(-np.diff(events) / horizon_s)
    tail = np.empty(n)
    acc = 0.0
    for k in range(n - 1, -1, -1):
        acc = 1.0 + (decay[k] * acc if k < n - 1 else 0.0)
        tail[k] = acc
    first = np.searchsorted(events, times, side="right")  # first event strictly after t
    has = first < n
    k = first[has]
    out[has] = np.exp(-(events[k] - times[has]) / horizon_s) * tail[k]
    return out


def hindsight_features(
    ts: np.ndarray, episode: np.ndarray, episode_ids: list[str], events: ExogenousEvents, horizon_s: float
) -> np.ndarray:
    """``[K, channels + len(WINDOWS)]`` float32 for rows at ``ts`` (seconds) of episode index ``episode``."""
    if horizon_s <= 0:
        raise ValueError(f"exogenous features need a horizon in seconds > 0, got {horizon_s}")
    n_channels = len(events.channels)
    out = np.zeros((len(ts), n_channels + len(WINDOWS)), np.float64)
    if len(ts) == 0:
        return out.astype(np.float32)
    order = np.argsort(episode, kind="stable")  # rows of one episode together (already so in row order)
    starts = np.flatnonzero(np.r_[True, episode[order][1:] != episode[order][:-1]])
    for rows in np.split(order, starts[1:]):
        t = ts[rows]
        eid = episode_ids[int(episode[rows[0]])]
        times, channel = events.times[eid], events.channel[eid]
        for c in range(n_channels):
            out[rows, c] = discounted_future_counts(times[channel == c], t, horizon_s)
        after = np.searchsorted(times, t, side="right")
        for j, w in enumerate(WINDOWS):
            out[rows, n_channels + j] = np.searchsorted(times, t + w * horizon_s, side="right") - after
    return out.astype(np.float32)


__all__ = [
    "WINDOWS",
    "discounted_future_counts",
    "hindsight_features",
    "missing_events",
    "row_features",
    "wanted",
]
