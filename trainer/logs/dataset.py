"""Padded episode arrays: what every algorithm trains on (docs/log-format.md).

Shapes use E episodes, T the longest episode, N agents, O obs_dim, A n_actions, S state_dim.
Steps past an episode's end are zero-padded and have ``filled == False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trainer.logs.exogenous import ExogenousEvents


@dataclass
class OfflineData:
    env_id: str
    agent_ids: list[str]
    obs: np.ndarray  # [E, T, N, O] float32
    actions: np.ndarray  # [E, T, N] int64 (executed action)
    masks: np.ndarray  # [E, T, N, A] bool (legal actions)
    rewards: np.ndarray  # [E, T, N] float32 (per-agent reward)
    team_rewards: np.ndarray  # [E, T] float32 (shared reward; what cooperative methods optimise)
    states: np.ndarray  # [E, T, S] float32 (global state)
    terminated: np.ndarray  # [E, T] bool (true terminal: no bootstrap)
    truncated: np.ndarray  # [E, T] bool (time limit: bootstrap)
    behavior_prob: np.ndarray  # [E, T, N] float32, NaN where unknown
    filled: np.ndarray  # [E, T] bool
    episode_ids: list[str] = field(default_factory=list)
    fingerprint: str = ""  # content hash of the source log (for caching and the model card)
    ts: np.ndarray | None = None  # [E, T] float64 seconds of each step (NaN past the end); None if not logged
    site_spec: dict | None = None  # the resolved site the log was collected on (envs/site.py), if recorded
    exogenous: ExogenousEvents | None = None  # the log's exogenous input events, if it has them

    @property
    def n_episodes(self) -> int:
        return int(self.obs.shape[0])

    @property
    def n_agents(self) -> int:
        return int(self.obs.shape[2])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[3])

    @property
    def n_actions(self) -> int:
        return int(self.masks.shape[3])

    @property
    def state_dim(self) -> int:
        return int(self.states.shape[2])

    @property
    def n_steps(self) -> int:
        return int(self.filled.sum())

    def episode_returns(self) -> np.ndarray:
        """Undiscounted team return per episode."""
        return (self.team_rewards * self.filled).sum(axis=1)
