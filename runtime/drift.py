"""Observation drift: served observations against the training data's distribution (docs/operations.md).

At export, :func:`build_reference` bins every feature at its training deciles and records the share of
training rows in each bin (plus a few quantiles for people), stored as ``obs_reference`` in policy.json.
At serving time each model keeps a ring buffer of its most recent observations (one vectorised copy per
request, nothing else on the hot path); at scrape time the population stability index (PSI) of the window
against the training shares is computed per feature and averaged per feature group:

    PSI = sum_bins (served share - training share) * ln(served share / training share)

exported as ``inspo_runtime_obs_drift_psi{model, group}`` (groups come from the model, at most
``MAX_GROUPS``) with ``inspo_runtime_obs_drift_window_rows{model}``. Features the reference marks as
``clock`` (time of day, episode phase) are left out: any window shorter than the training period sees
only part of their range, so they would always look shifted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily

QUANTILE_LEVELS = (0.01, 0.05, 0.5, 0.95, 0.99)  # stored for people reading policy.json
BIN_LEVELS = tuple(i / 10 for i in range(1, 10))  # deciles: at most 10 bins per feature
SHARE_FLOOR = 1e-3  # shares below this count as this (an empty bin would make PSI infinite)
MAX_GROUPS = 16  # label values per model, whatever policy.json says
DEFAULT_WINDOW = 8192  # rows, when the reference does not say how many rows a training episode has
MIN_WINDOW, MAX_WINDOW = 1024, 1 << 16


def _bin_counts(x: np.ndarray, edges: np.ndarray, n_bins: int) -> np.ndarray:
    """``x [R, O]``, ``edges [O, B-1]`` (ascending, +inf padded) -> ``[O, B]`` rows per bin.

    Bin ``k`` of a feature holds values with exactly ``k`` edges at or below them (``searchsorted`` right).
    """
    counts = np.zeros(x.shape[1] * n_bins, np.int64)
    offsets = np.arange(x.shape[1]) * n_bins
    for start in range(0, len(x), 4096):  # bounded temporaries: [4096, O, B-1] booleans at a time
        idx = (x[start : start + 4096, :, None] >= edges[None]).sum(axis=2)  # [R, O]
        counts += np.bincount((idx + offsets).ravel(), minlength=len(counts))
    return counts.reshape(x.shape[1], n_bins)


def build_reference(
    obs: np.ndarray,
    groups: dict[str, list[int]] | None = None,
    clock: list[int] | None = None,
    episode_rows: int | None = None,
    max_rows: int = 200_000,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``obs_reference`` of policy.json from the training observations ``obs [R, O]``.

    ``groups``: ``{name: [start, stop)}`` feature ranges (default one group ``all``); ``clock``: feature
    indices left out of the PSI; ``episode_rows``: observation rows of one training episode (agents x
    steps), the runtime's default window, so that a window spans a whole cycle of the training traffic
    (a down-peak hour's rising and falling demand, not a slice of it). Large logs are subsampled to ``max_rows`` rows (quantiles need no more).
    """
    x = np.asarray(obs, np.float64).reshape(-1, np.shape(obs)[-1])
    x = x[np.isfinite(x).all(axis=1)]
    if len(x) == 0:
        raise ValueError("no finite training observations to build the drift reference from")
    if len(x) > max_rows:
        x = x[np.random.default_rng(seed).choice(len(x), max_rows, replace=False)]
    dim = x.shape[1]
    cuts = np.quantile(x, BIN_LEVELS, axis=0)  # [9, O]
    edges = [_edges(x[:, f], cuts[:, f]) for f in range(dim)]
    padded, n_bins = _pad(edges)
    shares = _bin_counts(x, padded, n_bins) / len(x)
    expected = [shares[f, : len(edges[f]) + 1].round(6).tolist() for f in range(dim)]
    return {
        "rows": int(len(x)),
        "episode_rows": int(episode_rows) if episode_rows else None,
        "levels": list(QUANTILE_LEVELS),
        "quantiles": np.quantile(x, QUANTILE_LEVELS, axis=0).T.round(6).tolist(),  # [O, levels]
        "edges": edges,
        "expected": expected,
        "groups": {k: [int(a), int(b)] for k, (a, b) in (groups or {"all": [0, dim]}).items()},
        "clock": sorted(int(i) for i in (clock or [])),
    }


def _edges(column: np.ndarray, cuts: np.ndarray) -> list[float]:
    """Bin edges of one feature: one bin per value when it has at most 10 (flags, directions: deciles
    would lump a 5 % flag with the zeros), else its distinct deciles."""
    values = np.unique(column)
    if len(values) <= 10:
        return ((values[1:] + values[:-1]) / 2).tolist()
    return np.unique(cuts).tolist()


def _pad(edges: list[list[float]]) -> tuple[np.ndarray, int]:
    width = max(1, max(len(e) for e in edges))
    padded = np.full((len(edges), width), np.inf)
    for f, e in enumerate(edges):
        padded[f, : len(e)] = e
    return padded, width + 1


@dataclass
class DriftReference:
    """A validated ``obs_reference``: padded edges, floored training shares and the feature groups."""

    edges: np.ndarray  # [O, B-1]
    expected: np.ndarray  # [O, B], SHARE_FLOOR where a bin does not exist for that feature
    exists: np.ndarray  # [O, B] bool: the bin exists for that feature
    groups: dict[str, np.ndarray]  # name -> feature indices (clock features removed)
    episode_rows: int | None = None  # observation rows of one training episode

    @property
    def n_bins(self) -> int:
        return self.expected.shape[1]

    @classmethod
    def from_meta(cls, meta: dict[str, Any], obs_dim: int) -> DriftReference | None:
        """Parse ``meta["obs_reference"]`` (None when absent: models exported before it still load).

        Raises ``ValueError`` naming the field when it is present but malformed.
        """
        ref = meta.get("obs_reference")
        if ref is None:
            return None
        try:
            edges, expected = ref["edges"], ref["expected"]
            if len(edges) != obs_dim or len(expected) != obs_dim:
                raise ValueError(
                    f"edges/expected have {len(edges)}/{len(expected)} features, expected {obs_dim}"
                )
            edges = [[float(v) for v in e] for e in edges]
            for f, (e, s) in enumerate(zip(edges, expected, strict=True)):
                if len(s) != len(e) + 1 or any(b <= a for a, b in zip(e, e[1:], strict=False)):
                    raise ValueError(f"feature {f}: {len(e)} ascending edges need {len(e) + 1} shares")
            padded, n_bins = _pad(edges)
            shares = np.full((obs_dim, n_bins), 0.0)
            exists = np.zeros((obs_dim, n_bins), bool)
            for f, s in enumerate(expected):
                shares[f, : len(s)] = [float(v) for v in s]
                exists[f, : len(s)] = True
            if not np.isfinite(shares).all() or (shares < 0).any():
                raise ValueError("shares must be finite and non-negative")
            clock = {int(i) for i in ref.get("clock", [])}
            groups: dict[str, np.ndarray] = {}
            for name, (start, stop) in list(dict(ref.get("groups") or {"all": [0, obs_dim]}).items())[
                :MAX_GROUPS
            ]:
                start, stop = int(start), int(stop)
                if not 0 <= start < stop <= obs_dim:
                    raise ValueError(f"group {name!r}: range [{start}, {stop}) outside obs_dim {obs_dim}")
                idx = np.array([i for i in range(start, stop) if i not in clock], dtype=np.int64)
                if len(idx):
                    groups[str(name)[:64]] = idx
            episode_rows = ref.get("episode_rows")
            episode_rows = int(episode_rows) if episode_rows is not None else None
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"obs_reference: {err}") from None
        return cls(padded, np.maximum(shares, SHARE_FLOOR), exists, groups, episode_rows)

    def window_rows(self, configured: int | None = None) -> int:
        """The window: ``configured`` rows, else one training episode's rows, within [MIN_WINDOW, MAX_WINDOW]."""
        size = configured or self.episode_rows or DEFAULT_WINDOW
        return int(min(MAX_WINDOW, max(MIN_WINDOW, size)))

    def feature_psi(self, x: np.ndarray) -> np.ndarray:
        """``[O]`` PSI of the rows ``x [R, O]`` against the training shares."""
        served = _bin_counts(x, self.edges, self.n_bins) / max(len(x), 1)
        served = np.maximum(served, SHARE_FLOOR)
        terms = np.where(self.exists, (served - self.expected) * np.log(served / self.expected), 0.0)
        return terms.sum(axis=1)

    def group_psi(self, x: np.ndarray) -> dict[str, float]:
        psi = self.feature_psi(x)
        return {name: float(psi[idx].mean()) for name, idx in self.groups.items()}


class DriftWindow:
    """The last ``size`` observation rows of one model version (a ring buffer; writes are one copy)."""

    def __init__(self, reference: DriftReference, obs_dim: int, size: int):
        self.reference = reference
        self.buffer = np.zeros((size, obs_dim), np.float32)
        self.pos = 0
        self.count = 0
        self.added = 0  # rows ever added: a scrape without new rows reuses the last PSI
        self._cached: tuple[int, dict[str, float]] | None = None

    def add(self, obs: np.ndarray) -> None:
        n, size = len(obs), len(self.buffer)
        if n >= size:
            self.buffer[:] = obs[-size:]
            self.pos, self.count = 0, size
            self.added += n
            return
        end = self.pos + n
        if end <= size:
            self.buffer[self.pos : end] = obs
        else:
            split = size - self.pos
            self.buffer[self.pos :] = obs[:split]
            self.buffer[: n - split] = obs[split:]
        self.pos = end % size
        self.count = min(size, self.count + n)
        self.added += n

    def psi(self) -> dict[str, float] | None:
        """Group PSI over the window, None until it is full (part of a cycle is not the training mix).

        Runs at scrape time, off the serving path (about 10 ms for 8,192 rows of 139 features)."""
        added = self.added
        if self.count < len(self.buffer):
            return None
        if self._cached is not None and self._cached[0] == added:
            return self._cached[1]
        rows = self.buffer.copy()  # a concurrent write tears at most a few rows: harmless here
        result = self.reference.group_psi(rows)
        self._cached = (added, result)
        return result


class DriftMonitor:
    """Per model name: the window of the version that serves it; a Prometheus collector for the gauges.

    A model's window starts over when a version with another reference starts answering (its training
    data differs), so the gauge always compares with the data of the version being served.
    """

    def __init__(self, prefix: str, window_rows=lambda model_name: None):
        self.psi_name, self.rows_name = prefix + "obs_drift_psi", prefix + "obs_drift_window_rows"
        self.window_rows = window_rows  # model name -> configured window rows (None: one training episode)
        self.windows: dict[str, tuple[object, DriftWindow]] = {}
        self._lock = threading.Lock()

    def observe(self, model, obs: np.ndarray, finite: np.ndarray | None = None) -> None:
        """Add one request's observation rows (``finite``: rows to keep; None = all) of ``model``."""
        reference = getattr(model, "drift_reference", None)
        if reference is None:
            return
        entry = self.windows.get(model.name)
        if entry is None or entry[0] is not reference:
            with self._lock:
                size = reference.window_rows(self.window_rows(model.name))
                entry = self.windows[model.name] = (reference, DriftWindow(reference, model.obs_dim, size))
        entry[1].add(obs if finite is None else obs[finite])

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                self.psi_name,
                "Population stability index of the recent observations against the training data, "
                "mean over the features of each group (0: same distribution; > 0.25: a large shift)",
                labels=["model", "group"],
            ),
            GaugeMetricFamily(self.rows_name, "Observation rows in the drift window", labels=["model"]),
        )

    def describe(self):
        return list(self._families())

    def collect(self):
        psi_family, rows_family = self._families()
        with self._lock:
            windows = sorted((name, w) for name, (_, w) in self.windows.items())
        for name, window in windows:
            rows_family.add_metric([name], window.count)
            for group, value in sorted((window.psi() or {}).items()):
                psi_family.add_metric([name, group], value)
        return [psi_family, rows_family]
