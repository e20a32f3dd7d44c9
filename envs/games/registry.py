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
matrix     uniform       1000 episodes, uniform random joint actions
=========  ============  ============================================================

``matrix`` is any one-step game given as data: ``payoff`` (nested lists, one axis per agent) and
optional ``action_names``; ``xor`` and ``mne`` take the same options (a payoff of their shape, as
their datasets assume it). Bridge has no options.
"""

from __future__ import annotations

import numpy as np

from envs.base import MultiAgentEnv
from envs.controllers import Controller, RandomLegal
from envs.games.bridge import BridgeEnv, BridgeOptimal
from envs.games.joint import JointTable
from envs.games.matrix import MatrixGame, check_payoff, mne, xor
from envs.options import Option, check_options

MATRIX_EPISODES = 1000
BRIDGE_EPISODES = 500

_CONTROLLERS = {
    "xor": ["balanced", "uniform"],
    "mne": ["balanced", "imbalanced", "uniform"],
    "bridge": ["optimal", "optimal-agent_0-first", "optimal-agent_1-first"],
    "matrix": ["uniform"],
}

MATRIX_OPTIONS = {
    "payoff": Option(
        "payoff",
        "table",
        "a payoff table: nested lists, one axis per agent, e.g. [[1,0],[-2,1]]",
        check=check_payoff,
    ),
    "action_names": Option("action_names", "strs"),
    # recorded in a site spec (derived from payoff; given, they must agree with it)
    "n_agents": Option("n_agents", "int", minimum=2),
    "n_actions": Option("n_actions", "int", minimum=2),
}
OPTIONS = {"xor": MATRIX_OPTIONS, "mne": MATRIX_OPTIONS, "matrix": MATRIX_OPTIONS, "bridge": {}}
# The site check (envs/site.py): the payoff's shape is what the policy's actions mean; other payoff
# values and action names may differ (and are reported).
STRUCTURAL_OPTIONS = ("n_agents", "n_actions")


def _check(env_id: str) -> None:
    if env_id not in _CONTROLLERS:
        raise KeyError(f"unknown paper game {env_id!r}; expected one of {sorted(_CONTROLLERS)}")


def make_env(env_id: str, **overrides) -> MultiAgentEnv:
    _check(env_id)
    values = check_options(env_id, OPTIONS[env_id], overrides)
    if env_id == "bridge":
        return BridgeEnv()
    default = {"xor": xor, "mne": mne}.get(env_id)
    if "payoff" not in values and default is None:
        raise ValueError("matrix needs a payoff table, e.g. --env-arg 'payoff=[[1,0],[-2,1]]'")
    payoff = np.asarray(values.get("payoff", default().payoff if default else None))
    if default is not None and payoff.shape != default().payoff.shape:
        raise ValueError(
            f"{env_id} option payoff expects shape {list(default().payoff.shape)} (its datasets assume it), got "
            f"{list(payoff.shape)}; use --env matrix for another game"
        )
    for key, size in (("n_agents", payoff.ndim), ("n_actions", payoff.shape[0])):
        if values.get(key, size) != size:
            raise ValueError(f"{env_id} option {key} expects {size} (from payoff), got {values[key]}")
    names = values.get("action_names") or (default().action_names if default else None)
    names = names or [f"a{i}" for i in range(payoff.shape[0])]
    if len(names) != payoff.shape[0]:
        raise ValueError(f"{env_id} option action_names expects {payoff.shape[0]} names, got {names}")
    return MatrixGame(env_id, payoff, list(names))


def site_spec(env: MultiAgentEnv) -> dict:
    """A paper game's resolved options: the payoff table and action names (Bridge has none)."""
    if not isinstance(env, MatrixGame):
        return {"options": {}, "files": {}}
    options = {
        "payoff": env.payoff.tolist(),
        "action_names": list(env.action_names),
        "n_agents": len(env.possible_agents),
        "n_actions": env.n_actions,
    }
    return {"options": options, "files": {}}


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
    if env_id == "matrix":
        return {"uniform": [("uniform", MATRIX_EPISODES)]}
    return {
        "optimal": [("optimal", BRIDGE_EPISODES)],
        "mixed": [("optimal", BRIDGE_EPISODES), ("random", BRIDGE_EPISODES)],
    }
