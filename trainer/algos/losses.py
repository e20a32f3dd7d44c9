"""InSPO's losses and targets as pure functions of tensors (unit-testable on tiny inputs).

Shapes: ``B`` batch rows, ``N`` agents, ``A`` actions. ``mask`` is a bool tensor of legal actions;
illegal entries of any per-action tensor are ignored (never ``-inf`` arithmetic, so no NaN).
Notation follows ``docs/algorithm.md``: ``alpha`` weighs the reverse KL to the behaviour policy
``mu``, ``beta`` the entropy bonus, ``tau = alpha + beta``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

NEG = -1e9  # finite "minus infinity" for masked log-sum-exp


def bc_loss(logits: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) behaviour cloning: ``-mean(w * log softmax(logits)[a])``.

    ``logits [B, A]`` must already be masked (``PolicyNet`` does it); ``actions [B]``; ``weights [B]``.
    """
    log_p = torch.log_softmax(logits, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    if weights is None:
        return -log_p.mean()
    return -(weights * log_p).mean()


def floored_log_probs(logits: torch.Tensor, mask: torch.Tensor, floor: float) -> torch.Tensor:
    """``log((1 - floor) * softmax + floor * uniform_legal)``: a behaviour policy that is never 0 on a legal action.

    Illegal actions get ``NEG``. ``floor`` is the total mass spread uniformly over legal actions.
    """
    p = torch.softmax(logits.masked_fill(~mask, NEG), dim=-1)
    n_legal = mask.sum(-1, keepdim=True).clamp(min=1)
    p = (1.0 - floor) * p + floor * mask.to(p.dtype) / n_legal
    return torch.where(mask, torch.log(p.clamp(min=1e-30)), torch.full_like(p, NEG))


def clipped_log_ratios(
    log_pi: torch.Tensor, log_mu: torch.Tensor, log_min: float, log_max: float
) -> torch.Tensor:
    """Per-agent importance log-ratios ``log pi - log mu`` clipped to ``[log_min, log_max]`` (log space)."""
    return (log_pi - log_mu).clamp(min=log_min, max=log_max)


def teammate_log_weights(log_ratios: torch.Tensor, teammates: torch.Tensor) -> torch.Tensor:
    """``log w_{-i} = sum_{j in teammates(i)} log r_j`` for every agent ``i`` at once.

    ``log_ratios [B, N]``, ``teammates [N, N]`` float 0/1 (row ``i`` marks the agents whose ratios enter
    agent ``i``'s weight; the diagonal must be 0). Returns ``[B, N]``.
    """
    return log_ratios @ teammates.T.to(log_ratios.dtype)


def remembered_log_ratios(
    log_ratios: torch.Tensor, episode: torch.Tensor, decay: torch.Tensor, log_min: float, log_max: float
) -> torch.Tensor:
    """Each agent's log-ratios summed over the earlier rows of its episode, discounted on the way.

    ``L_k = log_r_k + decay_{k-1} L_{k-1}`` within an episode (rows in episode order, steps increasing),
    restarting at each episode's first row, then clipped to ``[log_min, log_max]``. ``log_ratios [K, N]``
    (already clipped per step), ``episode [K]``, ``decay [K]``: the factor from row ``k`` to the next.
    ``decay`` 0 gives the per-step ratios back; 1 the log of the product over the episode so far.
    """
    log_r = log_ratios.double().numpy()
    ep = episode.numpy()
    fade = decay.double().numpy()
    first = np.r_[True, ep[1:] != ep[:-1]]
    starts = np.flatnonzero(first)
    lengths = np.diff(np.r_[starts, len(ep)])
    out = log_r.copy()
    for t in range(1, int(lengths.max(initial=0))):  # one step of every episode longer than t at once
        at = starts[lengths > t] + t
        out[at] += fade[at - 1, None] * out[at - 1]
    return torch.from_numpy(out).clamp(min=log_min, max=log_max).to(log_ratios.dtype)


def mean_one_weights(log_w: torch.Tensor) -> torch.Tensor:
    """``exp(log_w)`` rescaled to mean 1, shifted by the largest first so no weight overflows. No rows, no
    weights (an agent whose logged actions were all certain has no random rows to weigh)."""
    if log_w.numel() == 0:
        return log_w.exp()
    w = torch.exp(log_w - log_w.max())
    return w / w.mean().clamp(min=1e-12)


def soft_td_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q: torch.Tensor,
    next_log_pi: torch.Tensor,
    next_log_mu: torch.Tensor,
    gamma: float,
    alpha: float,
    beta: float,
) -> torch.Tensor:
    """MEBR soft TD target at dataset next actions (Eq. 10 as reconstructed):

    ``y = r + gamma (1 - done) [Q(s', a') - alpha sum_i log(pi^i/mu^i)(a'^i) - beta sum_i log pi^i(a'^i)]``.
    ``next_log_pi`` / ``next_log_mu`` are ``[B, N]`` log-probabilities of the logged next actions.
    """
    reg = alpha * (next_log_pi - next_log_mu).sum(-1) + beta * next_log_pi.sum(-1)
    return reward + gamma * (1.0 - done.to(reward.dtype)) * (next_q - reg)


def pessimistic_baseline(
    q_values: torch.Tensor, quantile: float = 0.0, min_margin: float = 1.0
) -> torch.Tensor:
    """``b = quantile_q(in-sample Q) - max(in-sample Q range, min_margin)``.

    Uncovered teammate actions are valued at ``b`` by the unnormalized local-Q estimator (docs/algorithm.md, tabular check 3);
    ``b`` well below every in-sample value keeps the estimator from preferring out-of-distribution joint
    actions whatever the sign of the rewards. ``min_margin`` is in (normalised) reward units: it stands in
    for the range when the data show a single value (XOR ``balanced``) or a critic's noise-sized spread.
    """
    q = q_values.detach().flatten()
    low = torch.quantile(q, quantile) if quantile > 0 else q.min()
    spread = (q.max() - q.min()).clamp(min=min_margin)
    return low - spread


def unnormalized_local_q_target(
    joint_q: torch.Tensor, log_w: torch.Tensor, baseline: torch.Tensor | float
) -> torch.Tensor:
    """Regression target for agent i's local Q at the logged ``a^i``: ``w_{-i} (Q(s, a) - b) + b``.

    Its conditional mean over the data given ``(s, a^i)`` is ``E_{a^-i ~ D}[w_{-i} (Q - b)] + b``: the
    unnormalized importance-weighted estimate of ``E_{a^-i ~ pi~^{-i}}[Q(s, a)]`` in which teammate
    actions the data do not cover count as ``b`` (docs/algorithm.md, tabular check 3). ``joint_q [B]``, ``log_w [B]``.
    """
    return torch.exp(log_w) * (joint_q - baseline) + baseline


def soft_value(q_all: torch.Tensor, log_mu_all: torch.Tensor, mask: torch.Tensor, alpha: float, beta: float):
    """``V(s) = tau * logsumexp_{a legal}((alpha/tau) log mu(a|s) + Q(s, a)/tau)``; ``[B, A] -> [B]``."""
    tau = alpha + beta
    z = (alpha / tau) * log_mu_all + q_all / tau
    return tau * torch.logsumexp(z.masked_fill(~mask, NEG), dim=-1)


def closed_form_log_policy(
    q_all: torch.Tensor, log_mu_all: torch.Tensor, mask: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """``log pi*(a|s) = (alpha/tau) log mu + Q/tau - V/tau``: the per-agent MEBR optimum (Eq. 13)."""
    tau = alpha + beta
    z = ((alpha / tau) * log_mu_all + q_all / tau).masked_fill(~mask, NEG)
    return torch.log_softmax(z, dim=-1).masked_fill(~mask, NEG)


def supported_actions(log_mu_all: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Legal actions with ``mu(a) >= ratio * max_a mu(a)`` (all legal ones with ``ratio = 0``); ``[B, A]`` bool.

    The behaviour's own top action always qualifies, so every row keeps at least one action.
    """
    if ratio <= 0:
        return mask
    top = log_mu_all.masked_fill(~mask, NEG).max(-1, keepdim=True).values
    return mask & (log_mu_all >= top + math.log(ratio))


def anchor_on_certain(log_mu_all: torch.Tensor, actions: torch.Tensor, certain: torch.Tensor) -> torch.Tensor:
    """``log mu`` with the rows where the logged action was certain (``certain [B]``) set to that action with
    probability 1 (``NEG`` elsewhere): the closed form keeps it there, with weight 1, whatever ``Q`` says."""
    one_hot = torch.full_like(log_mu_all, NEG).scatter(-1, actions.long().unsqueeze(-1), 0.0)
    return torch.where(certain.unsqueeze(-1), one_hot, log_mu_all)


def target_weights(
    q_all: torch.Tensor,
    log_mu_all: torch.Tensor,
    mask: torch.Tensor,
    actions: torch.Tensor,
    alpha: float,
    beta: float,
    exp_clip: float = 10.0,
    support_ratio: float = 0.0,
) -> torch.Tensor:
    """Weights ``pi*/mu`` at the logged actions: ``exp(clip((Q(a) - beta log mu(a) - V)/tau))``.

    ``E_mu[weight] = 1`` per state, so ``-E_D[weight * log pi(a)]`` is the cross-entropy to ``pi*``.
    With ``support_ratio > 0``, ``pi*`` is the closed form restricted to :func:`supported_actions`: a
    logged action outside it gets weight 0.
    """
    tau = alpha + beta
    support = supported_actions(log_mu_all, mask, support_ratio)
    v = soft_value(q_all, log_mu_all, support, alpha, beta)
    idx = actions.long().unsqueeze(-1)
    q_a = q_all.gather(-1, idx).squeeze(-1)
    log_mu_a = log_mu_all.gather(-1, idx).squeeze(-1)
    z = ((q_a - beta * log_mu_a - v) / tau).clamp(min=-exp_clip, max=exp_clip)
    return torch.where(support.gather(-1, idx).squeeze(-1), torch.exp(z), torch.zeros_like(z))


def effective_sample_size(weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Kish's ESS as a fraction of the sample: ``(sum w)^2 / (n sum w^2)``, in ``(0, 1]``."""
    n = weights.shape[dim]
    return weights.sum(dim) ** 2 / (n * (weights**2).sum(dim)).clamp(min=1e-30)


def ess_from_log_weights(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """ESS fraction computed stably from log-weights (max-subtracted)."""
    w = torch.exp(log_w - log_w.max(dim=dim, keepdim=True).values)
    return effective_sample_size(w, dim)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target.detach())


def centre_advantages(adv: torch.Tensor, probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``A - sum_a probs(a) A(a)`` over legal actions, illegal entries set to 0.

    ``adv [B, M, A]`` (``M`` ensemble members), ``probs [B, A]`` (mu), ``mask [B, A]``. Centring makes the
    heads identifiable: only differences between actions are learnable from the residual regression.
    """
    adv = adv.masked_fill(~mask.unsqueeze(1), 0.0)
    mean = (adv * probs.unsqueeze(1)).sum(-1, keepdim=True)
    return (adv - mean).masked_fill(~mask.unsqueeze(1), 0.0)


def residual_advantage_loss(
    adv: torch.Tensor,
    actions: torch.Tensor,
    propensity: torch.Tensor,
    residual: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted squared error of the residual regression ``G - V(s) ~ A(a_logged) - sum_a e(a) A(a)``.

    ``adv [B, M, A]``, ``actions [B]``, ``propensity [B, A]`` (e), ``residual [B]`` (G - V), ``weights [B, M]``
    (teammate importance weight times each member's bootstrap weight). Rows where ``e`` is one-hot carry
    no information about ``A`` and contribute no gradient.
    """
    index = actions.long().view(-1, 1, 1).expand(-1, adv.shape[1], 1)
    taken = adv.gather(-1, index).squeeze(-1)
    expected = (adv * propensity.unsqueeze(1)).sum(-1)
    return (weights * (residual.unsqueeze(-1) - (taken - expected)) ** 2).mean()


def pessimistic_advantage(adv: torch.Tensor, kappa: float) -> torch.Tensor:
    """``mean - kappa * std`` over the ensemble axis: ``[B, M, A] -> [B, A]`` (std 0 with one member)."""
    mean = adv.mean(1)
    if adv.shape[1] < 2 or kappa == 0:
        return mean
    return mean - kappa * adv.std(1)
