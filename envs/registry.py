"""One place that turns an env id into an environment, its controllers and its datasets.

Env ids: ``xor``, ``mne``, ``bridge``, ``matrix``, ``elevator:<preset>:<profile>``,
``sumo:<net>``, and ``site:PATH`` for a site file (``envs/site.py``). The first ``:``-separated
token names a *family*; each family is a module
that exposes three functions, imported lazily so that asking for ``xor`` never imports SUMO:

* ``make_env(env_id: str, **overrides) -> MultiAgentEnv``
* ``make_controller(env_id: str, name: str, **kwargs) -> Controller`` (rule / behaviour controllers by name)
* ``controller_names(env_id: str) -> list[str]``
* optionally ``datasets(env_id) -> dict[str, list[tuple[str, int]]]``: named datasets as
  (controller spec, episodes) pairs, e.g. Bridge ``mixed`` = 500 optimal + 500 random.
* ``site_spec(env) -> {"options": ..., "files": ...}``: the env's resolved options (``envs/site.py``),
  and ``STRUCTURAL_OPTIONS`` (plus optional ``IGNORED_OPTIONS``, ``STRUCTURAL_FILES``) for the site check.

Every env ``make_env`` returns carries ``env.site_spec``, the resolved spec that logs, runs and models record.
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
    "matrix": "envs.games.registry",
    "bridge": "envs.games.registry",
    "elevator": "envs.elevator.registry",
    "sumo": "envs.traffic.registry",
}


class UnknownEnvError(ValueError):
    """An env id no family knows."""


def family_of(env_id: str) -> str:
    from envs.site import is_site_id, load_site_file

    if is_site_id(env_id):
        return family_of(load_site_file(env_id).env)
    family = env_id.split(":", 1)[0]
    if family not in FAMILIES:
        raise UnknownEnvError(
            f"unknown env id {env_id!r}: expected one of {sorted(FAMILIES)} (e.g. 'xor', 'elevator:cb10x4:downpeak', 'sumo:grid4x4', 'site:mysite.toml')"
        )
    return family


def _family_module(env_id: str) -> ModuleType:
    return importlib.import_module(FAMILIES[family_of(env_id)])


def base_env_id(env_id: str) -> str:
    """The family env id behind ``env_id``: a site file's ``env``, else the id itself."""
    from envs.site import is_site_id, load_site_file

    return load_site_file(env_id).env if is_site_id(env_id) else env_id


def make_env(env_id: str, **overrides) -> MultiAgentEnv:
    """Build the environment an env id names; ``overrides`` set family-specific options (checked against
    the family's declared options). ``site:PATH`` reads a site file; ``overrides`` win over its options."""
    from envs.site import is_site_id, load_site_file, normalized

    if is_site_id(env_id):
        site = load_site_file(env_id)
        options = {**site.options, **overrides}
        if "name" in getattr(_family_module(site.env), "OPTIONS", {}):
            options.setdefault("name", site.name)  # the elevator's building label
        env = make_env(site.env, **options)
        env.env_id = f"site:{site.name}"
        env.site_spec = {**env.site_spec, "env_id": env.env_id}
        return env
    family = family_of(env_id)
    module = _family_module(env_id)
    env = module.make_env(env_id, **overrides)
    env.site_spec = normalized(
        {"env_id": env.env_id, "family": family, "base": env_id, **module.site_spec(env)}
    )
    return env


def make_rule_controller(env_id: str, name: str, **kwargs) -> Controller:
    """A named rule/behaviour controller of the env's family (no exploration wrapper)."""
    return _family_module(env_id).make_controller(base_env_id(env_id), name, **kwargs)


def make_experiment(env_id: str, base: Controller, p: float) -> Controller:
    """The env family's logged experiment around rule ``base`` (``<rule>@exp=<p>``)."""
    module = _family_module(env_id)
    if not hasattr(module, "make_experiment"):
        raise ValueError(f"env {env_id!r} has no logged experiment (@exp=); its family defines none")
    return module.make_experiment(base, p)


def controller_names(env_id: str) -> list[str]:
    return list(_family_module(env_id).controller_names(base_env_id(env_id)))


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
    plans = module.datasets(base_env_id(env_id)) if hasattr(module, "datasets") else {}
    if dataset not in plans:
        raise KeyError(f"env {env_id!r} has no dataset {dataset!r}; known: {sorted(plans)}")
    return list(plans[dataset])
