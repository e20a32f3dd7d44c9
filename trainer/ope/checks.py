"""Checks that decide whether a fitted-Q estimate may be used (docs/ope.md, "When an estimate is trusted").

* :func:`value_range`: the values the log's rewards allow. An episode's discounted return lies between
  ``r_min * sum(gamma^t)`` and ``r_max * sum(gamma^t)`` over its length; across the logged lengths that
  gives an interval no value of any policy (on these episode ends) can leave. FQE outside it is impossible,
  not merely inaccurate.
* :func:`heldout_check`: FQE of the *logging* policy (next action = the logged one) fitted on three
  quarters of the episodes, with the same network and backups as the target's FQE, predicts the discounted
  return-to-go of every step of the held-out quarter; those returns are Monte Carlo samples of exactly that
  Q. If the fit cannot reproduce the behaviour's own held-out returns (too few backups for the horizon, a
  diverging fit, too little data), its estimate for another policy deserves no trust either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

HELDOUT_TOLERANCE = 0.10  # |mean(Q - G)| / mean|G| on held-out steps at most this
HELDOUT_SHARE = 4  # every 4th episode is held out
MIN_EPISODES = 4  # fewer: no held-out check possible


def _horizon_sums(lengths: np.ndarray, gamma: float) -> np.ndarray:
    lengths = np.asarray(lengths, np.float64)
    return lengths if gamma >= 1 else (1 - gamma**lengths) / (1 - gamma)


def value_range(rewards: np.ndarray, filled: np.ndarray, gamma: float) -> tuple[float, float]:
    """``(lo, hi)``: the discounted returns the per-step rewards ``[E, T]`` allow over the logged lengths."""
    r = rewards[filled]
    lengths = filled.sum(axis=1)
    sums = _horizon_sums(np.array([lengths.min(), lengths.max()]), gamma)
    r_min, r_max = float(r.min()), float(r.max())
    return float(min(r_min * sums)), float(max(r_max * sums))


def outside_range(value: float, lo: float, hi: float, scale: float) -> bool:
    """True when ``value`` leaves ``[lo, hi]`` by more than 1 % of ``scale``, the typical size of a logged
    return (the interval's width can be far larger than the values: a +0.02 where every reward is <= 0
    and returns are about -0.02 is impossible, though tiny next to ``r_min * S``)."""
    slack = 0.01 * max(scale, 1e-9)
    return not lo - slack <= value <= hi + slack


def returns_to_go(rewards: np.ndarray, filled: np.ndarray, gamma: float) -> np.ndarray:
    """``[E, T]`` discounted return from each step to the episode end (0 on padding)."""
    r = np.where(filled, rewards, 0.0).astype(np.float64)
    out = np.zeros_like(r)
    running = np.zeros(r.shape[0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = r[:, t] + gamma * running
        out[:, t] = running
    return np.where(filled, out, 0.0)


@dataclass
class HeldOutCheck:
    passed: bool
    reason: str
    fit_episodes: int = 0
    heldout_episodes: int = 0
    heldout_steps: int = 0
    mean_return: float | None = None  # mean discounted return-to-go over held-out steps (Monte Carlo)
    mean_q: float | None = None  # the behaviour FQE's mean prediction at the same steps
    relative_error: float | None = None  # |mean_q - mean_return| / mean |return|
    tolerance: float = HELDOUT_TOLERANCE

    def as_dict(self) -> dict:
        return asdict(self)


def heldout_check(states, actions, rewards, filled, masks, gamma: float, config) -> HeldOutCheck:
    """Fit FQE of the logging policy on 3/4 of the episodes, compare it with the held-out 1/4's returns."""
    from trainer.ope.estimators import fqe

    E = len(actions)
    if E < MIN_EPISODES:
        return HeldOutCheck(False, f"only {E} episodes: at least {MIN_EPISODES} are needed to hold some out")
    held = np.arange(E) % HELDOUT_SHARE == HELDOUT_SHARE - 1
    fit = ~held
    n_actions = masks.shape[-1]
    logged = np.eye(n_actions)[actions[fit]]  # the logging policy's next action is the logged one
    e_i, t_i = np.nonzero(filled[held])
    h_states, h_actions = states[held][e_i, t_i], actions[held][e_i, t_i]
    result = fqe(
        states[fit],
        actions[fit],
        rewards[fit],
        filled[fit],
        logged,
        masks[fit],
        gamma,
        config,
        bootstrap=0,
        heldout=(h_states, t_i, h_actions),
    )
    g = returns_to_go(rewards[held], filled[held], gamma)[e_i, t_i]
    mean_g, mean_q = float(g.mean()), float(result.heldout_q.mean())
    error = abs(mean_q - mean_g) / max(float(np.abs(g).mean()), 1e-9)
    passed = bool(error <= HELDOUT_TOLERANCE)
    reason = (
        f"the same FQE fitted to the logging policy predicts held-out returns within {error:.0%}"
        if passed
        else f"the same FQE fitted to the logging policy misses the held-out episodes' returns by {error:.0%} "
        f"(mean {mean_q:.4g} vs {mean_g:.4g}; tolerance {HELDOUT_TOLERANCE:.0%}): the fit cannot be trusted "
        "on this log (more --fqe-iterations for the horizon, a discount, or more episodes)"
    )
    return HeldOutCheck(passed, reason, int(fit.sum()), int(held.sum()), len(g), mean_g, mean_q, float(error))
