"""Correlated behaviour policies: one joint action drawn per step, exact per-agent marginals logged.

The paper games' datasets are *correlated*: XOR ``balanced`` holds only (A,B) and (B,A), Bridge
``optimal`` one of two orderings per episode. Independent per-agent sampling cannot produce
them, so these controllers draw a joint action from a list of (probability, joint action) and
log, for each agent, the exact *marginal* probability of its action given the state,
mu^i(a^i | s). That is the per-agent behaviour policy that InSPO's importance ratios use; note
that the product of the marginals is not the joint probability.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from envs.base import InfoDict, MultiAgentEnv, ObsDict
from envs.controllers import Controller

JointDistribution = Sequence[tuple[float, Sequence[int]]]  # (probability, action per agent)


class JointController(Controller):
    """A controller defined by a distribution over joint actions."""

    @abstractmethod
    def joint_distribution(self, env: MultiAgentEnv, obs: ObsDict, infos: InfoDict) -> JointDistribution:
        """(probability, joint action in ``env.possible_agents`` order) pairs summing to 1."""

    def _marginals(self, env: MultiAgentEnv, joint: JointDistribution) -> dict[str, np.ndarray]:
        out = {a: np.zeros(env.n_actions) for a in env.possible_agents}
        for p, actions in joint:
            for agent, action in zip(env.possible_agents, actions, strict=True):
                out[agent][action] += p
        return out

    def distribution(self, env, obs, infos):
        """Per-agent marginals (what exploration wrappers mix with)."""
        return self._marginals(env, self.joint_distribution(env, obs, infos))

    def act(self, env, obs, infos, rng):
        joint = list(self.joint_distribution(env, obs, infos))
        marginals = self._marginals(env, joint)
        self.last_distribution = marginals
        weights = np.array([p for p, _ in joint], dtype=np.float64)
        k = int(rng.choice(len(joint), p=weights / weights.sum())) if len(joint) > 1 else 0
        chosen = joint[k][1]
        actions = {a: int(x) for a, x in zip(env.possible_agents, chosen, strict=True)}
        return actions, {a: float(marginals[a][actions[a]]) for a in env.possible_agents}


class JointTable(JointController):
    """A fixed (state-independent) distribution over joint actions: the matrix games' datasets."""

    def __init__(self, name: str, table: JointDistribution):
        total = sum(p for p, _ in table)
        if not np.isclose(total, 1.0):
            raise ValueError(f"joint probabilities of {name!r} sum to {total}, expected 1")
        self.name, self.table = name, list(table)

    def joint_distribution(self, env, obs, infos):
        return self.table
