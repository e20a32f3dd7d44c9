"""Linear advantage heads fitted in closed form (InSPO with ``estimator = "residual"``, ``adv_heads = "linear"``).

The residual regression ``G - b ~ sum_a (1[a_i = a] - e_i(a)) A_i(a | o_i)`` has effects of about 0.002
against residuals of about 0.04 on the elevator logs. Network heads fitted by Adam keep the size of that
noise and never beat "no advantage" on held-out episodes (bench/heads_holdout.py). Here ``A_i(a | o_i) =
theta_{i,a} . x(o_i)``, linear in the agent's own z-scored observation (and a constant), solved as ridge
regression in closed form:

* the ridge strength is chosen by the regression's loss on held-out episodes (the R-loss, which needs no
  simulator), over folds of whole episodes, and the fit's gain over all-zero heads there is reported;
* the ``M`` ensemble members are Bayesian-bootstrap refits (Exp(1) weights on blocks of episodes), so
  ``mean - kappa * std`` is pessimistic where the log is thin, as with the network heads;
* InSPO's sequential loop refits agent ``i`` every ``adv_refit_every`` iterations on its own random rows,
  weighted by the already-updated teammates' clipped ratios ``pi~/mu``, with the ridge pulling towards
  the fit of all agents (the prior), so a thin agent borrows from the others.

With ``ordinal`` blocks (``adv_ordinal``: one-hot ranges the env declares ordered, e.g. the floor a car
decides at), each block enters as "any level set", its level scaled to [0, 1] and that squared, instead of
one z-scored column per level: the effect of stopping at floor f is then a smooth function of f, fitted
on every floor's rows at once, not ten separate estimates each at its own noise. With ``teammates``
(``adv_teammates``), the env's summary of where the other agents are relative to this one's decision is
appended (envs/elevator/features.py), so that effect can depend on where teammates already wait. With
``columns`` (``adv_features = "context"``), the heads read only those columns of the observation, the ones
the env declares describe the decision itself (elevator: the car's direction, mode and the floor it decides
at), so two rows of one decision get one advantage: the rest of the observation moved the fit from row to
row by more than the floor did, and those moves did not replicate between two halves of a log
(docs/algorithm.md, "One advantage per decision").

Only rows where the agent's logged action was random carry information (elsewhere ``1[a] - e(a) = 0``),
so the sums run over those. bench/linear_heads.py compares feature sets offline (docs/algorithm.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

RIDGES = tuple(10.0**k for k in range(0, 7))  # candidates for the held-out choice
BLOCKS = 20  # episode blocks: folds for the ridge choice (4 blocks each) and units of the bootstrap
FOLDS = 5
PRECISION_BINS = 20  # quantile bins of the baseline's value for the residual's variance (adv_weights)


def linear_features(
    obs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, ordinal: Sequence[tuple[int, int]] = ()
) -> torch.Tensor:
    """``[n, dx]``: the constant, the z-scored observation outside the ordinal blocks, then per block
    ``[any level set, level / (width - 1), its square]`` (zeros where no level is set)."""
    z = (obs - mean) / std
    if ordinal:
        keep = torch.ones(obs.shape[1], dtype=torch.bool)
        for start, stop in ordinal:
            keep[start:stop] = False
        z = z[:, keep]
    parts = [torch.ones(len(obs), 1, dtype=obs.dtype), z]
    for start, stop in ordinal:
        block = obs[:, start:stop]
        on = (block.sum(1, keepdim=True) > 0).to(obs.dtype)
        level = on * block.argmax(1, keepdim=True).to(obs.dtype) / max(stop - start - 1, 1)
        parts += [on, level, level * level]
    return torch.cat(parts, 1)


class LinearAdvantageHeads(nn.Module):
    """``A_i(o_i) -> [M, A]``: ``theta[i, m] @ linear_features(o_i)``, same call as AdvantageHeads."""

    def __init__(
        self, obs_dim: int, n_agents: int, n_actions: int, members: int, obs_mean, obs_std,
        ordinal: Sequence[tuple[int, int]] = (), teammates: Callable[[np.ndarray], np.ndarray] | None = None,
        columns: Sequence[int] | None = None,
    ):  # fmt: skip
        super().__init__()
        self.columns = None if columns is None else [int(k) for k in columns]
        read = list(range(obs_dim)) if self.columns is None else self.columns
        self.ordinal = [_within(read, int(a), int(b)) for a, b in ordinal]
        self.teammates = teammates  # the env's function of the own observation (``adv_teammates``), or None
        dim = 1 + len(read) - sum(b - a for a, b in self.ordinal) + 3 * len(self.ordinal)
        if teammates is not None:
            dim += teammates(np.zeros((1, obs_dim), np.float32)).shape[1]
        self.register_buffer("theta", torch.zeros(n_agents, members, n_actions, dim))
        mean, std = (torch.as_tensor(v, dtype=torch.float32)[read] for v in (obs_mean, obs_std))
        self.register_buffer("obs_mean", mean.clone())
        self.register_buffer("obs_std", std.clamp(min=1e-6))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        read = obs if self.columns is None else obs[:, self.columns]
        x = linear_features(read, self.obs_mean, self.obs_std, self.ordinal)
        if self.teammates is None:
            return x
        extra = torch.as_tensor(self.teammates(obs.numpy()), dtype=x.dtype)
        return torch.cat([x, extra], 1)

    def forward(self, state: torch.Tensor, obs: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        del state  # the heads see the agent's own observation only (decentralised, and few coefficients)
        x = self.features(obs)
        n, m, a, _ = self.theta.shape
        out = torch.empty(len(obs), m, a)
        for i in torch.unique(agent).tolist():
            sel = agent == i
            out[sel] = torch.einsum("bd,mad->bma", x[sel], self.theta[i])
        return out


def _within(columns: list[int], start: int, stop: int) -> tuple[int, int]:
    """An ordinal block ``[start, stop)`` of the observation as a range of the columns the heads read (it
    must be read whole and in order)."""
    first = columns.index(start) if start in columns else -1
    if first < 0 or columns[first : first + stop - start] != list(range(start, stop)):
        raise ValueError(
            f"the heads' columns must hold the ordinal block [{start}, {stop}) whole and in order"
        )
    return first, first + stop - start


@dataclass
class Grams:
    """Normal equations of the residual regression per block of episodes: ``sum w z z^T``, ``sum w z y``,
    ``sum w y^2`` and the row count, with ``z = (1[a] - e) (x) x`` flattened action-major."""

    zz: np.ndarray  # [B, P, P]
    zy: np.ndarray  # [B, P]
    yy: np.ndarray  # [B]
    rows: np.ndarray  # [B]


def precision_weights(value: np.ndarray, residual: np.ndarray, bins: int = PRECISION_BINS) -> np.ndarray:
    """Per row ``1 / var(residual | value)``, scaled to mean 1: the residual's variance as a function of
    the baseline's value, estimated by its mean square in ``bins`` quantile bins of ``value``.

    Why: the residual's noise differs by orders of magnitude between calm and busy states (elevator
    down-peak: std 0.003 where the baseline says the next minutes cost little, 0.09 in the busiest
    states; docs/algorithm.md, "Calm rows and busy rows"). Least squares with equal weights lets the
    busy rows' noise set the estimate's variance; weighting each row by the inverse of its noise
    variance is the efficient (generalised least squares) fit. The weight depends on the baseline's
    value only, never on the action, so the regression's orthogonality is kept."""
    value, residual = np.asarray(value, np.float64), np.asarray(residual, np.float64)
    if len(value) == 0:
        return np.ones(0)
    edges = np.quantile(value, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    which = np.searchsorted(edges, value, side="right")
    square = np.bincount(which, residual**2, minlength=bins)
    count = np.bincount(which, minlength=bins)
    var = square / np.maximum(count, 1)
    floor = max(float(np.mean(residual**2)) * 1e-4, 1e-30)  # a bin of exact zeros gets no infinite weight
    w = 1.0 / np.maximum(var[which], floor)
    return w / w.mean()


def block_grams(
    x: np.ndarray, actions: np.ndarray, e: np.ndarray, y: np.ndarray, w: np.ndarray, block: np.ndarray,
    n_blocks: int = BLOCKS, chunk: int = 8192,
) -> Grams:  # fmt: skip
    """The per-block sums over rows (float64); ``w`` weights each row (teammates' ratios, or 1)."""
    n_act, dx = e.shape[1], x.shape[1]
    p = n_act * dx
    out = Grams(np.zeros((n_blocks, p, p)), np.zeros((n_blocks, p)), np.zeros(n_blocks), np.zeros(n_blocks))
    eye = np.eye(n_act)
    for b in range(n_blocks):
        idx = np.nonzero(block == b)[0]
        for start in range(0, len(idx), chunk):
            part = idx[start : start + chunk]
            d = eye[actions[part]] - e[part]
            z = (d[:, :, None] * x[part, None, :]).reshape(len(part), p)
            zw = z * w[part, None]
            out.zz[b] += zw.T @ z
            out.zy[b] += zw.T @ y[part]
            out.yy[b] += float((w[part] * y[part]) @ y[part])
            out.rows[b] += len(part)
    return out


def solve(zz: np.ndarray, zy: np.ndarray, ridge: float, prior: np.ndarray | None = None) -> np.ndarray:
    """``argmin sum w (y - z theta)^2 + ridge |theta - prior|^2`` (prior 0 if None)."""
    rhs = zy if prior is None else zy + ridge * prior
    return np.linalg.solve(zz + ridge * np.eye(len(zz)), rhs)


def choose_ridge(
    g: Grams, folds: int = FOLDS, prior: np.ndarray | None = None, ridges: tuple[float, ...] = RIDGES
) -> tuple[float, dict]:
    """The ridge with the lowest held-out R-loss over folds of blocks, and each candidate's gain over
    all-zero heads (negative: better than "no advantage"), per held-out row."""
    zz, zy = g.zz.sum(0), g.zy.sum(0)
    fold_of = np.arange(len(g.rows)) % folds
    gains = {}
    for ridge in ridges:
        loss = 0.0
        for f in range(folds):
            held = fold_of == f
            theta = solve(zz - g.zz[held].sum(0), zy - g.zy[held].sum(0), ridge, prior)
            hzz, hzy = g.zz[held].sum(0), g.zy[held].sum(0)
            loss += theta @ hzz @ theta - 2.0 * theta @ hzy  # minus that of theta = 0
        gains[ridge] = loss / max(g.rows.sum(), 1.0)
    best = min(gains, key=gains.__getitem__)
    return best, gains


def bootstrap_fits(
    g: Grams, ridge: float, members: int, rng: np.random.Generator, prior: np.ndarray | None = None
) -> np.ndarray:
    """``[M, P]``: each member solves the normal equations with Exp(1) weights on the blocks."""
    fits = []
    for _ in range(members):
        w = rng.exponential(size=len(g.rows))
        fits.append(solve(np.tensordot(w, g.zz, 1), np.tensordot(w, g.zy, 1), ridge, prior))
    return np.stack(fits)


__all__ = [
    "LinearAdvantageHeads",
    "linear_features",
    "Grams",
    "block_grams",
    "bootstrap_fits",
    "choose_ridge",
    "solve",
]
