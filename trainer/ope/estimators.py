"""Off-policy estimators on padded episode arrays (the ``OfflineData`` shapes of trainer/logs/dataset.py): per-decision weighted importance
sampling (PDWIS) with bootstrap intervals and effective sample size, and fitted-Q evaluation (FQE).

Multi-agent importance ratios are products over agents of ``pi_i(a_i | o_i) / mu_i(a_i | o_i)`` (the
logging and target policies are decentralised), accumulated over time *in log space* so long horizons
and many agents underflow to a clean zero weight instead of NaN.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WISResult:
    value: float  # NaN when undefined (no episode keeps weight at some step)
    ess: float  # effective sample size of the trajectory weights (1 / sum of squared normalised weights)
    ess_min: float  # the smallest per-step ESS over the horizon
    matched_episodes: int  # episodes with a non-zero trajectory weight
    episodes: int
    ci: tuple[float, float] = (float("nan"), float("nan"))
    boot: np.ndarray = field(default_factory=lambda: np.zeros(0))


def log_ratios(
    target_prob: np.ndarray,
    behavior_prob: np.ndarray,
    filled: np.ndarray,
    clip_step: float | None = None,
) -> np.ndarray:
    """``[E, T]`` log of the per-step joint ratio ``prod_i pi_i / mu_i`` (0 on padding).

    ``clip_step`` caps the joint per-step ratio (variance for bias); ``-inf`` where the target never
    takes the logged action.
    """
    with np.errstate(divide="ignore"):
        lr = np.log(np.asarray(target_prob, np.float64)) - np.log(np.asarray(behavior_prob, np.float64))
    lr = lr.sum(axis=2)
    if clip_step is not None:
        lr = np.minimum(lr, np.log(clip_step))
    return np.where(filled, lr, 0.0)


def _softmax_cols(logw: np.ndarray) -> np.ndarray:
    """Normalise ``[E, T]`` log weights over episodes per step; a column of -inf gives NaN."""
    m = logw.max(axis=0, keepdims=True)
    with np.errstate(invalid="ignore"):
        w = np.exp(logw - m)
        return w / w.sum(axis=0, keepdims=True)


def pdwis_value(
    logr: np.ndarray, rewards: np.ndarray, filled: np.ndarray, gamma: float, clip_weight: float | None = None
) -> tuple[float, np.ndarray]:
    """PDWIS: ``sum_t gamma^t sum_e w_{e,t} r_{e,t} / sum_e w_{e,t}``; returns (value, normalised weights).

    Ended episodes keep their final weight with reward 0, so the estimate is of the whole-episode return.
    """
    logw = np.cumsum(logr, axis=1)
    if clip_weight is not None:
        logw = np.minimum(logw, np.log(clip_weight))
    nw = _softmax_cols(logw)
    disc = gamma ** np.arange(logr.shape[1])
    r = np.where(filled, rewards, 0.0)
    per_t = (nw * r).sum(axis=0)
    value = float((disc * per_t).sum()) if np.isfinite(per_t).all() else float("nan")
    return value, nw


def pdwis(
    target_prob: np.ndarray,
    behavior_prob: np.ndarray,
    rewards: np.ndarray,
    filled: np.ndarray,
    gamma: float = 1.0,
    clip_step: float | None = None,
    clip_weight: float | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> WISResult:
    """PDWIS with ESS and a percentile bootstrap over episodes.

    ``target_prob`` / ``behavior_prob``: ``[E, T, N]`` probability of each logged action under the
    target / logging policy; ``rewards``: ``[E, T]`` team rewards; ``filled``: ``[E, T]``.
    """
    logr = log_ratios(target_prob, behavior_prob, filled, clip_step)
    value, nw = pdwis_value(logr, rewards, filled, gamma, clip_weight)
    E = logr.shape[0]
    final = nw[:, -1]
    ess = float(1.0 / np.sum(final**2)) if np.isfinite(final).all() else 0.0
    with np.errstate(invalid="ignore"):
        per_t = 1.0 / np.sum(nw**2, axis=0)
    ess_min = float(np.nanmin(np.where(np.isfinite(per_t), per_t, 0.0)))
    matched = int(np.isfinite(np.cumsum(logr, axis=1)[:, -1]).sum())
    result = WISResult(value, ess, ess_min, matched, E)
    if bootstrap > 0 and E > 1:
        rng = np.random.default_rng(seed)
        boot = np.empty(bootstrap)
        for b in range(bootstrap):
            idx = rng.integers(0, E, E)
            boot[b] = pdwis_value(logr[idx], rewards[idx], filled[idx], gamma, clip_weight)[0]
        result.boot = boot
        result.ci = percentile_ci(boot, level)
    return result


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    ok = samples[np.isfinite(samples)]
    if len(ok) < max(10, 0.5 * len(samples)):
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(ok, [50 * (1 - level), 100 - 50 * (1 - level)])
    return (float(lo), float(hi))


def bootstrap_mean(values: np.ndarray, bootstrap: int = 200, seed: int = 0, level: float = 0.95):
    """Mean of per-episode values and its percentile bootstrap interval."""
    values = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    boot = np.array([values[rng.integers(0, len(values), len(values))].mean() for _ in range(bootstrap)])
    return float(values.mean()), percentile_ci(boot, level) if bootstrap else (float("nan"),) * 2


# -- fitted-Q evaluation -----------------------------------------------------------------------
@dataclass
class FQEConfig:
    hidden: int = 128
    iterations: int = 40  # target refreshes (Bellman backups)
    steps_per_iteration: int = 150
    batch_size: int = 512
    lr: float = 1e-3
    samples: int = 8  # joint actions sampled from the target at s' (1 suffices for a deterministic target)
    seed: int = 0


@dataclass
class FQEResult:
    value: float
    per_episode: np.ndarray  # estimated value of each episode's initial state
    ci: tuple[float, float] = (float("nan"), float("nan"))
    final_td: float = float("nan")
    heldout_q: np.ndarray | None = None  # Q at the ``heldout`` rows (the logged joint action)


def fqe(
    states: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    filled: np.ndarray,
    target_dist: np.ndarray,
    masks: np.ndarray,
    gamma: float = 1.0,
    config: FQEConfig | None = None,
    bootstrap: int = 200,
    heldout: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> FQEResult:
    """Fit ``Q(s, t, a_joint)`` to the target policy's Bellman backups, value = ``E_{a~pi} Q(s_0, 0, a)``.

    ``states [E, T, S]`` (global state), ``actions [E, T, N]``, ``rewards [E, T]`` (team), ``filled``,
    ``target_dist [E, T, N, A]`` (the target's per-agent distribution at each logged step), ``masks``.
    The episode end is terminal (a finite-horizon value, as the simulator's episode return); the
    normalised step index is an input so a time limit is learnable. Intervals bootstrap the episodes'
    initial-state values under the fitted Q (they leave out the fitting variance). ``heldout``: rows
    ``(states [M, S], t [M], joint actions [M, N])`` at which the fitted Q is also returned (``heldout_q``).
    """
    import torch
    from torch import nn

    from trainer.threads import single_threaded

    cfg = config or FQEConfig()
    with single_threaded():  # a small MLP: threads only contend on a shared machine
        return _fqe(torch, nn, cfg, states, actions, rewards, filled, target_dist, gamma, bootstrap, heldout)


def _fqe(
    torch, nn, cfg, states, actions, rewards, filled, target_dist, gamma, bootstrap, heldout=None
) -> FQEResult:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    E, T, N = actions.shape
    A = target_dist.shape[-1]
    S = states.shape[-1]
    mean = states[filled].mean(axis=0)
    std = states[filled].std(axis=0) + 1e-6
    r_scale = float(np.abs(rewards[filled]).std() + 1e-6)

    def features(s: np.ndarray, t: np.ndarray) -> torch.Tensor:
        x = np.concatenate([(s - mean) / std, (t / max(T - 1, 1))[..., None]], axis=-1)
        return torch.as_tensor(x, dtype=torch.float32)

    net = nn.Sequential(
        nn.Linear(S + 1 + N * A, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, cfg.hidden),
        nn.ReLU(),
        nn.Linear(cfg.hidden, 1),
    )
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    def q(feat: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        onehot = torch.nn.functional.one_hot(joint, A).reshape(*joint.shape[:-1], N * A).float()
        return net(torch.cat([feat, onehot], dim=-1)).squeeze(-1)

    def sample_joint(dist: np.ndarray, k: int) -> np.ndarray:
        """``dist [M, N, A]`` -> ``[k, M, N]`` joint actions sampled per agent."""
        cdf = np.cumsum(dist, axis=-1)
        u = rng.random((k, *dist.shape[:-1], 1)) * cdf[..., -1:]
        return np.minimum((cdf[None] < u).sum(axis=-1), A - 1)

    rows = np.argwhere(filled)  # [M, 2] (e, t)
    e_i, t_i = rows[:, 0], rows[:, 1]
    last = np.zeros(len(rows), bool)
    nxt_t = t_i + 1
    last = (nxt_t >= T) | ~filled[e_i, np.minimum(nxt_t, T - 1)]
    nxt_t = np.minimum(nxt_t, T - 1)
    feat = features(states[e_i, t_i], t_i.astype(np.float64))
    feat_next = features(states[e_i, nxt_t], nxt_t.astype(np.float64))
    joint = torch.as_tensor(actions[e_i, t_i], dtype=torch.long)
    reward = torch.as_tensor(rewards[e_i, t_i] / r_scale, dtype=torch.float32)
    cont = torch.as_tensor(~last, dtype=torch.float32)
    dist_next = target_dist[e_i, nxt_t]
    deterministic = bool(np.all(target_dist[filled].max(axis=-1) > 1 - 1e-6))
    k = 1 if deterministic else cfg.samples
    M = len(rows)
    td = float("nan")
    for _ in range(cfg.iterations):
        with torch.no_grad():
            a_next = torch.as_tensor(sample_joint(dist_next, k), dtype=torch.long)  # [k, M, N]
            v_next = torch.stack([q(feat_next, a_next[j]) for j in range(k)]).mean(0)
            y = reward + gamma * cont * v_next
        for _ in range(cfg.steps_per_iteration):
            idx = torch.as_tensor(rng.integers(0, M, min(cfg.batch_size, M)))
            loss = torch.mean((q(feat[idx], joint[idx]) - y[idx]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        td = float(loss.detach())
    with torch.no_grad():
        first = np.flatnonzero(filled[:, 0])
        f0 = features(states[first, 0], np.zeros(len(first)))
        a0 = torch.as_tensor(
            sample_joint(target_dist[first, 0], max(k, 32 if not deterministic else 1)), dtype=torch.long
        )
        v0 = torch.stack([q(f0, a0[j]) for j in range(a0.shape[0])]).mean(0).numpy() * r_scale
        heldout_q = None
        if heldout is not None:
            h_states, h_t, h_actions = heldout
            h_joint = torch.as_tensor(h_actions, dtype=torch.long)
            heldout_q = q(features(h_states, np.asarray(h_t, np.float64)), h_joint).numpy() * r_scale
    value, ci = bootstrap_mean(v0, bootstrap, cfg.seed)
    return FQEResult(value, v0, ci, td * r_scale**2, heldout_q)
