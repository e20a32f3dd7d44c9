"""One-step cooperative matrix games: XOR and M-NE (InSPO paper §4.2-4.3; M-NE as in docs/algorithm.md, tabular check 5).

An episode is a single decision: both agents act once, every agent receives the payoff of the
joint action (a team reward), and the episode terminates. The state never changes, so the
observation and the state are one constant feature ``[1.0]``: the policy can only learn a
distribution over actions, which is exactly what these games test. (A one-step episode is the
repeated game of AlberDICE's ``episode_limit = 100`` cut at each step; with a constant state the
two give the same data distribution.)
"""

from __future__ import annotations

import numpy as np

from envs.base import MultiAgentEnv

XOR_PAYOFF = np.array([[0.0, 1.0], [1.0, -2.0]])  # rows: agent_0's action, columns: agent_1's
MNE_PAYOFF = np.diag([2.0, 1.0, 1.0])  # three pure equilibria of value 2, 1 and 1


class MatrixGame(MultiAgentEnv):
    """A one-step game with a shared payoff table, one axis per agent (``payoff[a0, a1, ...]``, every axis
    the same length); deterministic (the seed changes nothing)."""

    obs_dim = 1
    state_dim = 1

    def __init__(self, env_id: str, payoff: np.ndarray, action_names: list[str]):
        self.env_id = env_id
        self.payoff = np.asarray(payoff, dtype=np.float64)
        self.possible_agents = [f"agent_{i}" for i in range(self.payoff.ndim)]
        self.n_actions = self.payoff.shape[0]
        self.action_names = action_names
        self.agents: list[str] = []
        self._t = 0
        self.last_joint: tuple[int, ...] | None = None

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self._t = 0
        self.last_joint = None
        return self._obs(), self._infos()

    def state(self) -> np.ndarray:
        return np.ones(1, dtype=np.float32)

    def _obs(self):
        return {a: np.ones(1, dtype=np.float32) for a in self.possible_agents}

    def _infos(self):
        return {a: {"action_mask": np.ones(self.n_actions, dtype=bool)} for a in self.possible_agents}

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset()")
        joint = tuple(int(actions[a]) for a in self.possible_agents)
        payoff = float(self.payoff[joint])
        self.last_joint = joint
        self._t = 1
        self.agents = []
        done = dict.fromkeys(self.possible_agents, True)
        return (
            self._obs(),
            dict.fromkeys(self.possible_agents, payoff),
            done,
            dict.fromkeys(self.possible_agents, False),
            self._infos(),
        )

    def optimal_return(self) -> float:
        return float(self.payoff.max())

    def episode_metrics(self):
        """Whether the joint action was optimal: the paper games' success criterion."""
        if self.last_joint is None:
            return {}
        return {"optimal": float(self.payoff[self.last_joint] == self.payoff.max())}


def xor(payoff=XOR_PAYOFF, action_names: list[str] | None = None) -> MatrixGame:
    """XOR: (A,A)=0, (A,B)=(B,A)=1, (B,B)=-2; the optima need the agents to differ."""
    return MatrixGame("xor", payoff, action_names or ["A", "B"])


def mne(payoff=MNE_PAYOFF, action_names: list[str] | None = None) -> MatrixGame:
    """M-NE: payoff diag(2, 1, 1); three pure equilibria, one of them best."""
    return MatrixGame("mne", payoff, action_names or ["a0", "a1", "a2"])


def check_payoff(value) -> list:
    """A payoff table for ``--env-arg payoff=...`` or a site file: nested lists of numbers, one axis per
    agent (at least 2), every axis the same length (at least 2)."""
    try:
        table = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise ValueError("nested lists of numbers of equal lengths") from None
    if table.ndim < 2 or table.dtype == object:
        raise ValueError("one axis per agent, at least 2 agents")
    if len(set(table.shape)) != 1 or table.shape[0] < 2:
        raise ValueError(
            f"every agent needs the same number (>= 2) of actions, got shape {list(table.shape)}"
        )
    if not np.isfinite(table).all():
        raise ValueError("finite numbers")
    return table.tolist()
