"""One place that turns an env id into an environment, its controllers and its datasets.

Env ids (design.md §3.1): ``xor``, ``mne``, ``bridge``, ``elevator:<preset>:<profile>``,
``sumo:<net>``. The first ``:``-separated token names a *family*; each family is a module
that exposes three functions, imported lazily so that asking for ``xor`` never imports SUMO:

* ``make_env(env_id: str, **overrides) -> MultiAgentEnv``
* ``make_controller(env_id: str, name: str, **kwargs) -> Controller`` (rule / behaviour controllers by name)
* ``controller_names(env_id: str) -> list[str]``
* optionally ``datasets(env_id) -> dict[str, list[tuple[str, int]]]``: named datasets as
  (controller spec, episodes) pairs, e.g. Bridge ``mixed`` = 500 optimal + 500 random.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from envs.base import MultiAgentEnv
    from envs.controllers import Controller

# family -> module implementing it
FAMILIES: dict[str, str] = {
    "xor": "envs.games.registry",
    "mne": "envs.games.registry",
    "bridge": "envs.games.registry",
    "elevator": "envs.elevator.registry",
    "sumo": "envs.traffic.registry",
}


class UnknownEnvError(ValueError):
    """An env id no family knows."""


def family_of(env_id: str) -> str:
    family = env_id.split(":", 1)[0]
    if family not in FAMILIES:
        raise UnknownEnvError(
            f"unknown env id {env_id!r}: expected one of {sorted(FAMILIES)} (e.g. 'xor', 'elevator:cb10x4:downpeak', 'sumo:grid4x4')"
        )
    return family


def _family_module(env_id: str) -> ModuleType:
    return importlib.import_module(FAMILIES[family_of(env_id)])


def make_env(env_id: str, **overrides) -> MultiAgentEnv:
    """Build the environment an env id names; ``overrides`` set family-specific options."""
    return _family_module(env_id).make_env(env_id, **overrides)


def make_rule_controller(env_id: str, name: str, **kwargs) -> Controller:
    """A named rule/behaviour controller of the env's family (no exploration wrapper)."""
    return _family_module(env_id).make_controller(env_id, name, **kwargs)


def controller_names(env_id: str) -> list[str]:
    return list(_family_module(env_id).controller_names(env_id))


def obs_groups(env_id: str, obs_dim: int) -> tuple[dict[str, list[int]], list[int]] | None:
    """Named feature ranges of the env's observation and its clock features (for the runtime's drift
    gauge), when the family describes its layout and it matches ``obs_dim``; else None."""
    try:
        module = _family_module(env_id)
    except UnknownEnvError:
        return None
    return module.obs_groups(env_id, obs_dim) if hasattr(module, "obs_groups") else None


def dataset_plan(env_id: str, dataset: str) -> list[tuple[str, int]]:
    """A named dataset as a list of (controller spec, episodes)."""
    module = _family_module(env_id)
    plans = module.datasets(env_id) if hasattr(module, "datasets") else {}
    if dataset not in plans:
        raise KeyError(f"env {env_id!r} has no dataset {dataset!r}; known: {sorted(plans)}")
    return list(plans[dataset])
