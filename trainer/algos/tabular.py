"""Exact (tabular) InSPO on one-step two-agent games, built from the same loss functions as the neural
algorithm: the tabular checks of docs/algorithm.md, and the monotonic-improvement property tests.

``R[a1, a2]`` payoff, ``D[a1, a2]`` dataset joint-action distribution, ``mus`` its marginals,
``pis`` the agents' policies (1-D probability vectors, strictly positive where ``mu`` is).
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.algos import losses


def _as_agent(M: np.ndarray, agent: int) -> np.ndarray:
    return M if agent == 0 else M.T


def mebr_objective(
    R: np.ndarray, pis: list[np.ndarray], mus: list[np.ndarray], alpha: float, beta: float
) -> float:
    """``J(pi) = E_pi[R - alpha sum_i log(pi^i/mu^i) - beta sum_i log pi^i]`` (one step)."""
    joint = np.outer(pis[0], pis[1])
    value = float((joint * R).sum())
    for pi, mu in zip(pis, mus, strict=True):
        support = pi > 0
        value -= float(
            (pi[support] * (alpha * np.log(pi[support] / mu[support]) + beta * np.log(pi[support]))).sum()
        )
    return value


def exact_local_q(R: np.ndarray, pis: list[np.ndarray], agent: int) -> np.ndarray:
    """``Q^i(a^i) = E_{a^-i ~ pi^-i}[R(a)]``."""
    return _as_agent(R, agent) @ pis[1 - agent]


def insample_local_q(
    D: np.ndarray, R: np.ndarray, pis: list[np.ndarray], mus: list[np.ndarray], agent: int, baseline: float
) -> np.ndarray:
    """The unnormalized estimator ``E_{a^-i ~ D(.|a^i)}[w (R - b)] + b`` with ``w = pi^-i/mu^-i`` (exact expectation)."""
    Dm, Rm = _as_agent(D, agent), _as_agent(R, agent)
    other = 1 - agent
    log_w = torch.as_tensor(np.log(np.maximum(pis[other], 1e-300)) - np.log(np.maximum(mus[other], 1e-300)))
    target = losses.unnormalized_local_q_target(torch.as_tensor(Rm), log_w[None, :], baseline).numpy()
    mu_i = Dm.sum(1)
    return (Dm * target).sum(1) / np.maximum(mu_i, 1e-300)


def closed_form(q: np.ndarray, mu: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    mask = torch.as_tensor(mu > 0)
    log_mu = torch.as_tensor(np.log(np.maximum(mu, 1e-300)))
    log_pi = losses.closed_form_log_policy(torch.as_tensor(q)[None], log_mu[None], mask[None], alpha, beta)[0]
    return torch.where(mask, log_pi.exp(), torch.zeros_like(log_pi)).numpy()


def iteration(
    R: np.ndarray,
    pis: list[np.ndarray],
    mus: list[np.ndarray],
    alpha: float,
    beta: float,
    order: list[int],
    sequential: bool = True,
    D: np.ndarray | None = None,
    baseline: float | None = None,
) -> list[np.ndarray]:
    """One InSPO iteration: agents in ``order`` take the closed-form step against teammates
    (already updated ones when ``sequential``). ``D`` given: in-sample unnormalized local Q, else exact."""
    new = [p.copy() for p in pis]
    old = [p.copy() for p in pis]
    if D is not None and baseline is None:
        support = D > 0
        baseline = float(losses.pessimistic_baseline(torch.as_tensor(R[support])))
    for i in order:
        teammates = new if sequential else old
        if D is None:
            q = exact_local_q(R, teammates, i)
        else:
            q = insample_local_q(D, R, teammates, mus, i, baseline)
        new[i] = closed_form(q, mus[i], alpha, beta)
    return new
