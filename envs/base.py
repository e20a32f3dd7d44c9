"""The multi-agent environment contract every domain implements (docs/architecture.md).

A ``MultiAgentEnv`` is a PettingZoo ``ParallelEnv`` with a few extra facts the trainer,
the log format and the runtime need: a fixed agent list, one padded observation size,
one action count (illegal actions masked per step), a global ``state()``, a team reward,
a neighbour graph (for restricting importance-ratio products) and per-episode metrics.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

ObsDict = dict[str, np.ndarray]
ActionDict = dict[str, int]
InfoDict = dict[str, dict[str, Any]]


class MultiAgentEnv(ParallelEnv):
    """Base class: subclasses set the attributes below in ``__init__`` and implement reset/step/state.

    Contract:
      * ``reset(seed)`` -> ``(obs, infos)``; ``step(actions)`` -> ``(obs, rewards, terminations, truncations, infos)``.
      * ``obs[agent]`` is float32 of shape ``(obs_dim,)`` (padded with zeros where an agent has fewer features).
      * ``infos[agent]["action_mask"]`` is a bool array of shape ``(n_actions,)`` with at least one True.
      * The agent set is fixed for an episode; an episode ends for all agents at once.
      * Everything is deterministic given the seed passed to ``reset``.
    """

    env_id: str = ""
    possible_agents: list[str]
    obs_dim: int
    n_actions: int
    state_dim: int
    action_names: list[str] | None = None

    @abstractmethod
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[ObsDict, InfoDict]: ...

    @abstractmethod
    def step(
        self, actions: ActionDict
    ) -> tuple[ObsDict, dict[str, float], dict[str, bool], dict[str, bool], InfoDict]: ...

    @abstractmethod
    def state(self) -> np.ndarray: ...

    def team_reward(self, rewards: dict[str, float]) -> float:
        """The shared cooperative reward of one step. Default: the mean of the agents' rewards."""
        return float(np.mean([rewards[a] for a in self.possible_agents])) if rewards else 0.0

    def neighbors(self) -> dict[str, list[str]]:
        """Teammates whose policies matter to each agent's update. Default: everyone else."""
        return {a: [b for b in self.possible_agents if b != a] for a in self.possible_agents}

    def sim_time(self) -> float:
        """Seconds of simulated time since the episode began (used for the log's ``ts``)."""
        return float(getattr(self, "_t", 0))

    def episode_metrics(self) -> dict[str, float]:
        """Domain KPIs of the finished episode (for ``inspo eval``). Default: none beyond the return."""
        return {}

    def exogenous_inputs(self) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """The episode's exogenous input events so far, logged beside its steps (docs/log-format.md,
        "Exogenous inputs"): what no control action changes, as (seconds, channel, channel names).
        Default: none known."""
        return None

    def episode_extras(self) -> dict:
        """Per-episode traces for plots (e.g. waiting passengers per floor over time). Default: none."""
        return {}

    def observation_space(self, agent: str):  # noqa: D102 - PettingZoo API
        import gymnasium as gym

        return gym.spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)

    def action_space(self, agent: str):  # noqa: D102 - PettingZoo API
        import gymnasium as gym

        return gym.spaces.Discrete(self.n_actions)
