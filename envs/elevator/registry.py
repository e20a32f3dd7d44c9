"""The ``elevator`` family for ``envs.registry``: env ids, controllers, datasets, eval plots.

Env id: ``elevator:<preset>:<profile>[:<intensity>]``, e.g. ``elevator:cb10x4:downpeak`` or
``elevator:office16x6:uppeak:1.2``. Presets: ``envs.elevator.config.PRESETS``; profiles:
``downpeak`` (Crites & Barto), ``uppeak``, ``lunch``, ``interfloor``, ``day`` (07-19 h).
Overrides: ``intensity``, ``hours``, ``warmup``, ``drain``, ``reward`` ('wait2' | 'wait'),
``backend`` ('scalar' | 'numpy') and any :class:`Building` field (``n_floors=12``, ...).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from envs.elevator.config import PRESETS, PROFILES, Building, Traffic
from envs.elevator.controllers import CONTROLLERS
from envs.elevator.env import ElevatorEnv

_BUILDING_FIELDS = {f.name for f in dataclasses.fields(Building)}
_TRAFFIC_FIELDS = {"intensity", "hours", "warmup", "drain"}


def parse_env_id(env_id: str) -> tuple[str, str, float | None]:
    parts = env_id.split(":")
    if len(parts) not in (3, 4) or parts[0] != "elevator":
        raise ValueError(
            f"bad elevator env id {env_id!r}: expected elevator:<preset>:<profile>[:<intensity>], "
            f"e.g. elevator:cb10x4:downpeak"
        )
    _, preset, profile, *rest = parts
    if preset not in PRESETS:
        raise ValueError(f"unknown elevator preset {preset!r} in {env_id!r}; known: {sorted(PRESETS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown traffic profile {profile!r} in {env_id!r}; known: {sorted(PROFILES)}")
    intensity = float(rest[0]) if rest else None
    return preset, profile, intensity


def _flag(value, name: str) -> bool:
    """A boolean option from Python or from ``--env-arg`` text (``true``/``false``/``1``/``0``)."""
    if isinstance(value, bool | int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError(f"elevator option {name} expects true or false, got {value!r}")


def make_env(env_id: str, **overrides) -> ElevatorEnv:
    """``elevator:<preset>:<profile>[:<intensity>]`` with overrides: Building fields (``n_floors``,
    ``n_cars`` ...), Traffic fields (``intensity``, ``hours``, ``warmup``, ``drain``), ``reward``
    (``wait2`` | ``wait``), ``backend`` (``scalar`` | ``numpy``), ``assignment_obs`` (default true)."""
    preset, profile, intensity = parse_env_id(env_id)
    bkw = {k: overrides.pop(k) for k in list(overrides) if k in _BUILDING_FIELDS}
    tkw = {k: overrides.pop(k) for k in list(overrides) if k in _TRAFFIC_FIELDS}
    if intensity is not None:
        tkw.setdefault("intensity", intensity)
    building = PRESETS[preset].replace(**bkw) if bkw else PRESETS[preset]
    traffic = Traffic(profile=profile, **tkw)
    reward = overrides.pop("reward", "wait2")
    backend = overrides.pop("backend", "scalar")
    assignment_obs = _flag(overrides.pop("assignment_obs", True), "assignment_obs")
    if overrides:
        raise ValueError(f"unknown elevator options {sorted(overrides)} for {env_id!r}")
    return ElevatorEnv(
        building, traffic, reward=reward, env_id=env_id, backend=backend, assignment_obs=assignment_obs
    )


def obs_groups(env_id: str, obs_dim: int) -> tuple[dict[str, list[int]], list[int]] | None:
    """The observation layout of an env id (with or without the assignment bits) that has ``obs_dim``."""
    for assignment in (True, False):
        env = make_env(env_id, assignment_obs=assignment)
        if env.obs_dim == obs_dim:
            return env.obs_groups()
    return None


def controller_names(env_id: str) -> list[str]:
    return [*CONTROLLERS, "random"]


def make_controller(env_id: str, name: str, **kwargs):
    if name not in CONTROLLERS:
        raise ValueError(f"unknown elevator controller {name!r}; known: {controller_names(env_id)}")
    return CONTROLLERS[name](**kwargs)


def datasets(env_id: str) -> dict[str, list[tuple[str, int]]]:
    """Named datasets. ``mixed``: every heuristic, epsilon- and softmax-explored, plus a little random."""
    return {
        "mixed": [
            ("etd@eps=0.1", 40),
            ("etd@temp=0.5", 30),
            ("nearest-car@eps=0.15", 25),
            ("sector@eps=0.15", 25),
            ("collective@eps=0.2", 15),
            ("etd@eps=0.3", 15),
            ("random", 10),
        ],
        "etd": [("etd@eps=0.1", 100)],
        # what `inspo demo` collects: the same mix, small enough for a minutes-long demo
        "demo": [
            ("etd@eps=0.1", 12),
            ("etd@temp=0.5", 8),
            ("nearest-car@eps=0.15", 4),
            ("sector@eps=0.15", 4),
            ("collective@eps=0.2", 4),
        ],
        # the demo's controllers in 150 episodes (a third ETD at eps 0.1), for bench/results.py: InSPO
        # gains much more from a larger log than BC does (docs/algorithm.md, "On the real domains")
        "large": [
            ("etd@eps=0.1", 50),
            ("etd@temp=0.5", 36),
            ("nearest-car@eps=0.15", 22),
            ("sector@eps=0.15", 26),
            ("collective@eps=0.2", 16),
        ],
        "small": [("etd@eps=0.2", 4), ("sector@eps=0.2", 2), ("random", 2)],
        # ETD with softmax exploration only (bench/configs/elevator-downpeak.toml): on down-peak tuning
        # seeds InSPO learned more from it than from `large` (12.41 / 12.62 s vs 13.0-13.3; ETD 12.50),
        # as on traffic, where softmax logs of the best rule beat mixes (docs/algorithm.md)
        "etd-softmax": [("etd@temp=0.5", 100)],
    }


def plot_eval(results_by_controller: dict, out_dir: Path) -> list[Path]:
    from envs.elevator.plots import plot_eval as _plot

    return _plot(results_by_controller, Path(out_dir))
