"""The paper games' family module for ``envs.registry``: envs, behaviour controllers, datasets.

Datasets (named collections of (controller spec, episodes), collected from consecutive seeds):

=========  ============  ============================================================
env        dataset       content
=========  ============  ============================================================
xor        balanced      1000 episodes, only (A,B) and (B,A), 1/2 each
xor        uniform       1000 episodes, uniform random joint actions
mne        balanced      1000 episodes, the three diagonal equilibria, 1/3 each
mne        imbalanced    1000 episodes, diagonal with 0.1 / 0.45 / 0.45 (best one rare)
bridge     optimal       500 episodes of the two optimal orderings, 1/2 each
bridge     mixed         the 500 optimal episodes + 500 uniform random episodes
=========  ============  ============================================================
"""

from __future__ import annotations

from envs.base import MultiAgentEnv
from envs.controllers import Controller, RandomLegal
from envs.games.bridge import BridgeEnv, BridgeOptimal
from envs.games.joint import JointTable
from envs.games.matrix import mne, xor

MATRIX_EPISODES = 1000
BRIDGE_EPISODES = 500

_CONTROLLERS = {
    "xor": ["balanced", "uniform"],
    "mne": ["balanced", "imbalanced", "uniform"],
    "bridge": ["optimal", "optimal-agent_0-first", "optimal-agent_1-first"],
}


def _check(env_id: str) -> None:
    if env_id not in _CONTROLLERS:
        raise KeyError(f"unknown paper game {env_id!r}; expected one of {sorted(_CONTROLLERS)}")


def make_env(env_id: str, **overrides) -> MultiAgentEnv:
    _check(env_id)
    if env_id == "xor":
        return xor(**overrides)
    if env_id == "mne":
        return mne(**overrides)
    return BridgeEnv(**overrides)


def make_controller(env_id: str, name: str, **kwargs) -> Controller:
    """A behaviour controller of a paper game by name (``random`` works for every env too)."""
    _check(env_id)
    if name in ("uniform", "random"):
        return RandomLegal()
    if env_id == "xor" and name == "balanced":
        return JointTable("balanced", [(0.5, (0, 1)), (0.5, (1, 0))])
    if env_id == "mne" and name == "balanced":
        return JointTable("balanced", [(1 / 3, (0, 0)), (1 / 3, (1, 1)), (1 / 3, (2, 2))])
    if env_id == "mne" and name == "imbalanced":
        return JointTable("imbalanced", [(0.1, (0, 0)), (0.45, (1, 1)), (0.45, (2, 2))])
    if env_id == "bridge" and name == "optimal":
        return BridgeOptimal()
    if env_id == "bridge" and name.startswith("optimal-"):
        ordering = name.removeprefix("optimal-")
        if ordering in ("agent_0-first", "agent_1-first"):
            return BridgeOptimal((ordering,))
    raise KeyError(f"env {env_id!r} has no controller {name!r}; known: {controller_names(env_id)}")


def controller_names(env_id: str) -> list[str]:
    _check(env_id)
    return list(_CONTROLLERS[env_id])


def datasets(env_id: str) -> dict[str, list[tuple[str, int]]]:
    _check(env_id)
    if env_id == "xor":
        return {"balanced": [("balanced", MATRIX_EPISODES)], "uniform": [("uniform", MATRIX_EPISODES)]}
    if env_id == "mne":
        return {
            "balanced": [("balanced", MATRIX_EPISODES)],
            "imbalanced": [("imbalanced", MATRIX_EPISODES)],
        }
    return {
        "optimal": [("optimal", BRIDGE_EPISODES)],
        "mixed": [("optimal", BRIDGE_EPISODES), ("random", BRIDGE_EPISODES)],
    }
