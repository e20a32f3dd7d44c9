"""The model card's ``obs_reference``: the training observations' per-feature bins and shares.

Export builds it (:func:`build_reference`); the runtime's drift gauge compares served observations with
it (runtime/drift.py, docs/operations.md). Binning lives here so both sides bin a value the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILE_LEVELS = (0.01, 0.05, 0.5, 0.95, 0.99)  # stored for people reading policy.json
BIN_LEVELS = tuple(i / 10 for i in range(1, 10))  # deciles: at most 10 bins per feature


def bin_counts(x: np.ndarray, edges: np.ndarray, n_bins: int) -> np.ndarray:
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
    padded, n_bins = pad_edges(edges)
    shares = bin_counts(x, padded, n_bins) / len(x)
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


def pad_edges(edges: list[list[float]]) -> tuple[np.ndarray, int]:
    width = max(1, max(len(e) for e in edges))
    padded = np.full((len(edges), width), np.inf)
    for f, e in enumerate(edges):
        padded[f, : len(e)] = e
    return padded, width + 1
