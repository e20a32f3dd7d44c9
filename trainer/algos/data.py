"""Flat transition tensors built from :class:`OfflineData` (the padded ``[E, T, N, ...]`` arrays).

Row ``k`` is one filled step; ``next_index[k]`` is the row of the following step of the same
episode (or ``k`` itself when there is none). ``done`` is true at true terminals and at the last
logged step of a truncated episode: the log holds no observation after it, so it cannot be
bootstrapped (a documented approximation; time-limited envs without time in the state are
non-stationary anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer.logs.dataset import OfflineData


def discounted_returns_to_go(
    rewards: np.ndarray, filled: np.ndarray, gamma: float | np.ndarray
) -> np.ndarray:
    """``G_t = r_t + gamma_t G_{t+1}`` per episode over ``[E, T]`` arrays (0 past the end).

    ``gamma`` is one factor for every step, or ``[E, T]``: the discount from step t to step t+1.
    """
    out = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[0])
    factors = np.broadcast_to(np.asarray(gamma, dtype=np.float64), rewards.shape)
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = np.where(filled[:, t], rewards[:, t] + factors[:, t] * running, 0.0)
        out[:, t] = running
    return out


def step_discounts(data: OfflineData, gamma: float, discount: str, horizon_s: float) -> np.ndarray:
    """``[E, T]`` discount from each step to the next.

    ``"step"``: ``gamma`` per decision step. ``"time"``: ``exp(-dt / horizon_s)`` over the seconds ``dt``
    between the steps' ``ts``, so the horizon is the same number of seconds whatever the decisions'
    spacing (the elevator decides at every floor an empty car passes, a parked car rarely).
    """
    if discount == "step":
        return np.full(data.filled.shape, gamma, dtype=np.float64)
    if discount != "time":
        raise ValueError(f"discount must be 'step' or 'time', got {discount!r}")
    if horizon_s <= 0:
        raise ValueError(f"discount='time' needs horizon_s > 0 (seconds), got {horizon_s}")
    if data.ts is None or np.isnan(data.ts[data.filled]).any():
        raise ValueError("discount='time' needs the log's ts column on every step; use discount='step'")
    dt = np.zeros(data.filled.shape, dtype=np.float64)
    dt[:, :-1] = np.nan_to_num(data.ts[:, 1:] - data.ts[:, :-1], nan=0.0)
    if (dt < 0).any():
        e, t = np.argwhere(dt < 0)[0]
        raise ValueError(f"ts goes backwards in episode {data.episode_ids[e]!r} at t={t}")
    return np.exp(-dt / horizon_s)


def auto_reward_scale(returns: np.ndarray) -> float:
    """The 5-95% spread of in-sample discounted returns-to-go; 1 when the data show one value.

    Dividing rewards by it puts Q on a unit scale, so ``alpha`` means the same in every domain. It is
    invariant to shifting rewards (a property the pessimistic baseline needs, see tests).
    """
    if returns.size == 0:
        return 1.0
    spread = float(np.quantile(returns, 0.95) - np.quantile(returns, 0.05))
    if spread < 1e-6:
        spread = float(returns.max() - returns.min())
    return spread if spread > 1e-6 else 1.0


@dataclass
class Transitions:
    obs: torch.Tensor  # [K, N, O]
    actions: torch.Tensor  # [K, N] int64
    masks: torch.Tensor  # [K, N, A] bool
    states: torch.Tensor  # [K, S]
    rewards: torch.Tensor  # [K] normalised team reward
    agent_rewards: torch.Tensor  # [K, N] normalised per-agent rewards (the log's ``reward`` column)
    returns: torch.Tensor  # [K] normalised discounted return-to-go along the logged episode
    done: torch.Tensor  # [K] float (1: no bootstrap)
    next_index: torch.Tensor  # [K] int64
    discounts: torch.Tensor  # [K] discount from this row to the next (gamma, or exp(-dt/horizon_s))
    episode: torch.Tensor  # [K] int64 episode index (for episode folds)
    behavior_prob: torch.Tensor  # [K, N] logged probability of the executed action; NaN where unknown
    reward_scale: float
    obs_mean: torch.Tensor  # [O]
    obs_std: torch.Tensor
    obs_low: np.ndarray
    obs_high: np.ndarray
    state_mean: torch.Tensor  # [S]
    state_std: torch.Tensor
    exogenous: torch.Tensor | None = None  # [K, X] hindsight features of the log's exogenous inputs

    @property
    def size(self) -> int:
        return int(self.actions.shape[0])

    @property
    def n_agents(self) -> int:
        return int(self.actions.shape[1])

    @property
    def n_actions(self) -> int:
        return int(self.masks.shape[2])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[2])

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[1])


def drift_reference(env_id: str, site_spec: dict | None, flat_obs: np.ndarray, n_episodes: int) -> dict:
    """Per-feature training bins and shares for the runtime's drift gauge, with the env's feature groups;
    a window of one training episode's rows (agents x mean steps) by default. Only the exported policy
    needs it (seconds on a large log), so it is computed there, not when training sets up."""
    from contract.obs_reference import build_reference
    from envs.registry import obs_groups

    # a site log's env id names a file that may not be here: its recorded spec names the family's env
    env_id = site_spec["base"] if site_spec else env_id
    layout = obs_groups(env_id, flat_obs.shape[1]) if env_id else None
    groups, clock = layout if layout is not None else (None, None)
    episode_rows = round(len(flat_obs) / max(n_episodes, 1))
    return build_reference(flat_obs, groups, clock, episode_rows=episode_rows)


def build_transitions(
    data: OfflineData,
    gamma: float,
    reward_scale: float | None = None,
    discount: str = "step",
    horizon_s: float = 0.0,
    exogenous: bool = False,
) -> Transitions:
    """The log's filled steps as rows; ``exogenous``: also the hindsight features of its exogenous input
    events (trainer/algos/exogenous.py), which need the events, ``ts`` and ``horizon_s``."""
    filled = data.filled.astype(bool)
    if not filled.any():
        raise ValueError("the dataset has no filled steps")
    e_idx, t_idx = np.nonzero(filled)  # row-major: episodes in order, t increasing
    rows = np.arange(len(e_idx))
    has_next = np.zeros(len(e_idx), dtype=bool)
    nxt = t_idx + 1 < filled.shape[1]
    has_next[nxt] = filled[e_idx[nxt], t_idx[nxt] + 1]
    next_index = np.where(has_next, rows + 1, rows)
    done = data.terminated[e_idx, t_idx].astype(bool) | ~has_next
    factors = step_discounts(data, gamma, discount, horizon_s)
    returns = discounted_returns_to_go(data.team_rewards.astype(np.float64), filled, factors)
    scale = float(reward_scale) if reward_scale else auto_reward_scale(returns[filled])
    obs = data.obs[e_idx, t_idx].astype(np.float32)
    masks = data.masks[e_idx, t_idx].astype(bool)
    actions = data.actions[e_idx, t_idx].astype(np.int64)
    legal = np.take_along_axis(masks, actions[..., None], axis=-1)[..., 0]
    if not legal.all():
        bad = np.argwhere(~legal)[0]
        raise ValueError(f"logged action outside its mask at step row {bad[0]}, agent {bad[1]}")
    flat_obs = obs.reshape(-1, obs.shape[-1])
    states = data.states[e_idx, t_idx].astype(np.float32)
    features = None
    if exogenous:
        from trainer.algos.exogenous import row_features

        features = torch.from_numpy(row_features(data, horizon_s, "this log"))
    return Transitions(
        obs=torch.from_numpy(obs),
        actions=torch.from_numpy(actions),
        masks=torch.from_numpy(masks),
        states=torch.from_numpy(states),
        rewards=torch.from_numpy((data.team_rewards[e_idx, t_idx] / scale).astype(np.float32)),
        agent_rewards=torch.from_numpy((data.rewards[e_idx, t_idx] / scale).astype(np.float32)),
        returns=torch.from_numpy((returns[e_idx, t_idx] / scale).astype(np.float32)),
        done=torch.from_numpy(done.astype(np.float32)),
        next_index=torch.from_numpy(next_index.astype(np.int64)),
        discounts=torch.from_numpy(factors[e_idx, t_idx].astype(np.float32)),
        episode=torch.from_numpy(e_idx.astype(np.int64)),
        behavior_prob=torch.from_numpy(data.behavior_prob[e_idx, t_idx].astype(np.float32)),
        reward_scale=scale,
        # statistics in float64 (then float32): what the streamed row store computes chunk by chunk
        obs_mean=torch.from_numpy(flat_obs.mean(0, dtype=np.float64).astype(np.float32)),
        obs_std=torch.from_numpy(flat_obs.std(0, dtype=np.float64).astype(np.float32)).clamp(min=1e-3),
        obs_low=flat_obs.min(0),
        obs_high=flat_obs.max(0),
        state_mean=torch.from_numpy(states.mean(0, dtype=np.float64).astype(np.float32)),
        state_std=torch.from_numpy(states.std(0, dtype=np.float64).astype(np.float32)).clamp(min=1e-3),
        exogenous=features,
    )
