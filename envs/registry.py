"""One place that turns an env id into an environment, its controllers, datasets, metrics and demo.

Env ids: ``xor``, ``mne``, ``bridge``, ``matrix``, ``elevator:<preset>:<profile>``,
``sumo:<net>``, and ``site:PATH`` for a site file (``envs/site.py``). The first ``:``-separated
token names a *family*; :data:`FAMILIES` maps it to the module implementing the family protocol
(``envs/family.py``), imported lazily so that asking for ``xor`` never imports SUMO.

Every env ``make_env`` returns carries ``env.site_spec``, the resolved spec that logs, runs and models record.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from envs.family import DemoPlan, Family

if TYPE_CHECKING:
    import numpy as np

    from envs.base import MultiAgentEnv
    from envs.controllers import Controller

# family -> module implementing it (envs/family.py says what it provides); one line per family
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


def family(env_id: str) -> Family:
    """The family of an env id (or of a site file's env)."""
    return family_named(family_of(env_id))


def family_named(name: str) -> Family:
    """A family by its env-id prefix (``sumo``), e.g. the ``family`` a site spec records."""
    if name not in FAMILIES:
        raise UnknownEnvError(f"unknown env family {name!r}: expected one of {sorted(FAMILIES)}")
    return Family(name, FAMILIES[name])


def _family_module(env_id: str) -> ModuleType:
    return family(env_id).module


def demo_plans() -> dict[str, DemoPlan]:
    """``inspo demo`` plans by domain name, from the families that define one."""
    plans: dict[str, DemoPlan] = {}
    for name in {module: name for name, module in FAMILIES.items()}.values():  # one per module
        plan = family_named(name).demo
        if plan is not None:
            plans[plan.domain] = plan
    return plans


def action_names(env_id: str, spec: dict | None = None) -> list[str] | None:
    """The env's action names where building it is cheap (not a SUMO net), else None.

    ``spec``: a log's recorded site spec, used instead of ``env_id`` (which may name a file not here).
    """
    from envs.site import env_from_spec

    found = family_named(spec["family"]) if spec else family(env_id)
    if not found.cheap_to_build:
        return None
    names = (env_from_spec(spec) if spec else make_env(env_id)).action_names
    return list(names) if names else None


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


def make_experiment(env_id: str, base: Controller, p: float, **options: float) -> Controller:
    """The env family's logged experiment around rule ``base`` (``<rule>@exp=<p>``, plus the family's own
    options, e.g. the elevator's ``@assign=<q>``)."""
    hook = family(env_id).hook("make_experiment")
    if hook is None:
        raise ValueError(f"env {env_id!r} has no logged experiment (@exp=); its family defines none")
    if options:
        import inspect

        known = set(inspect.signature(hook).parameters) - {"base", "p"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"env {env_id!r}'s logged experiment takes no option {', '.join(unknown)}=")
    return hook(base, p, **options)


def controller_names(env_id: str) -> list[str]:
    return list(_family_module(env_id).controller_names(base_env_id(env_id)))


def _layout_hook(name: str, env_id: str, obs_dim: int) -> Any:
    """The answer of the family's observation-layout hook ``name(env_id, obs_dim)``; None when the env id is
    unknown or the family has no such hook."""
    try:
        hook = family(env_id).hook(name)
    except UnknownEnvError:
        return None
    return hook(env_id, obs_dim) if hook is not None else None


def obs_groups(env_id: str, obs_dim: int) -> tuple[dict[str, list[int]], list[int]] | None:
    """Named feature ranges of the env's observation and its clock features (for the runtime's drift
    gauge), when the family describes its layout and it matches ``obs_dim``; else None."""
    return _layout_hook("obs_groups", env_id, obs_dim)


def ordinal_blocks(env_id: str, obs_dim: int) -> list[tuple[int, int]]:
    """One-hot ranges ``[start, stop)`` of the observation whose index is ordered (elevator: the floor a car
    decides at), when the family declares them and its layout matches ``obs_dim``; else none."""
    blocks = _layout_hook("ordinal_blocks", env_id, obs_dim)
    return [tuple(b) for b in blocks] if blocks else []


def decision_context(env_id: str, obs_dim: int) -> list[tuple[int, int]]:
    """Ranges ``[start, stop)`` of the observation that describe the decision an agent faces (elevator: the
    car's direction, mode and decision floor), when the family declares them and its layout matches
    ``obs_dim``; else none."""
    ranges = _layout_hook("decision_context", env_id, obs_dim)
    return [tuple(r) for r in ranges] if ranges else []


def teammate_features(env_id: str, obs_dim: int) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function of agents' own observations ``[n, obs_dim] -> [n, k]`` saying where their teammates are
    relative to the decision each faces (elevator: the other cars around the deciding floor), when the
    family declares one and its layout matches ``obs_dim``; else None."""
    return _layout_hook("teammate_features", env_id, obs_dim)


def dataset_plan(env_id: str, dataset: str) -> list[tuple[str, int]]:
    """A named dataset as a list of (controller spec, episodes)."""
    plans = family(env_id).datasets(base_env_id(env_id))
    if dataset not in plans:
        raise KeyError(f"env {env_id!r} has no dataset {dataset!r}; known: {sorted(plans)}")
    return list(plans[dataset])
