"""The ``elevator`` family for ``envs.registry``: env ids, controllers, datasets, eval plots.

Env id: ``elevator:<preset>:<profile>[:<intensity>]``, e.g. ``elevator:cb10x4:downpeak`` or
``elevator:office16x6:uppeak:1.2``. Presets: ``envs.elevator.config.PRESETS``; profiles:
``downpeak`` (Crites & Barto), ``uppeak``, ``lunch``, ``interfloor``, ``day`` (07-19 h).
Overrides (``OPTIONS``, type-checked): ``intensity``, ``hours``, ``warmup``, ``drain``, ``reward``
('wait2' | 'wait'), ``backend`` ('scalar' | 'numpy'), any :class:`Building` field (``n_floors=12``, ...)
or speed/acceleration/door times, and a site's own demand (``demand``: time bins of rates and shares).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from envs.elevator.config import PRESETS, PROFILES, Building, Slot, Traffic
from envs.elevator.controllers import CONTROLLERS, ETDPark
from envs.elevator.env import ElevatorEnv
from envs.family import DemoPlan, Metric
from envs.options import Option, check_options

DEFAULT_PRESET, DEFAULT_PROFILE = "cb10x4", "downpeak"
# Headline metrics (keys of ElevatorEnv.episode_metrics), the primary one first: waiting time.
METRICS = (
    Metric("avg_wait", "avg wait (s)"),
    Metric("avg_sq_wait", "avg squared wait (s²)", decimals=0),
    Metric("avg_system_time", "system time (s)"),
    Metric("pct_wait_over_60", "% wait > 60 s", decimals=2),
)
SLOT_KEYS = ("seconds", "pct5", "up", "down", "inter")
KINEMATIC = ("speed", "acceleration", "door_open", "door_close")

# The site check (envs/site.py): options that change what a car's observation or action means. The
# demand (profile, rates, population, boarding times, clock), the episode's length and the reward may
# differ between a policy's site and the env; the label and the simulator backend are ignored.
STRUCTURAL_OPTIONS = (
    "n_floors",
    "n_cars",
    "capacity",
    "floor_time",
    "stop_time",
    "turn_time",
    "reopen_time",
    "park_time",
    "lobby_floors",
    "dt",
    "hold_time",
    "assignment_obs",
)
IGNORED_OPTIONS = ("name", "backend")


def parse_env_id(env_id: str) -> tuple[str, str, float | None]:
    """``elevator[:<preset>:<profile>[:<intensity>]]``; plain ``elevator`` is cb10x4 with down-peak traffic
    (what a site file starting from scratch builds on)."""
    if env_id == "elevator":
        return DEFAULT_PRESET, DEFAULT_PROFILE, None
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
    try:
        intensity = float(rest[0]) if rest else None
    except ValueError:
        raise ValueError(f"bad intensity {rest[0]!r} in {env_id!r}: expected a number, e.g. 1.2") from None
    return preset, profile, intensity


def _demand(value: Any) -> tuple[Slot, ...]:
    """A list of time bins ``{seconds, pct5, up, down, inter}`` (or :class:`Slot` objects)."""
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("a non-empty list")
    slots = []
    for i, row in enumerate(value):
        if isinstance(row, Slot):
            row = {
                "seconds": row.duration,
                "pct5": row.pct5,
                "up": row.up,
                "down": row.down,
                "inter": row.inter,
            }
        if not isinstance(row, dict) or set(row) != set(SLOT_KEYS):
            raise ValueError(f"bin {i} must have exactly the keys {', '.join(SLOT_KEYS)}")
        bad = [k for k in SLOT_KEYS if isinstance(row[k], bool) or not isinstance(row[k], int | float)]
        if bad or any(row[k] < 0 for k in SLOT_KEYS) or row["seconds"] <= 0:
            raise ValueError(f"bin {i}: seconds > 0 and rates/shares >= 0 are numbers")
        shares = row["up"] + row["down"] + row["inter"]
        if abs(shares - 1.0) > 1e-6:
            raise ValueError(f"bin {i}: the shares up + down + inter sum to {shares:g}, not 1")
        slots.append(Slot(float(row["seconds"]), *(float(row[k]) for k in SLOT_KEYS[1:])))
    return tuple(slots)


def _floor_shares(value: Any) -> tuple[float, ...]:
    """Per-upper-floor shares of trip ends; their count is checked against the building in make_env."""
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise ValueError("a list of numbers >= 0")
    if value and abs(sum(value) - 1.0) > 1e-6:
        raise ValueError(f"they sum to {sum(value):g}, not 1")
    return tuple(float(v) for v in value)


def _building_options() -> dict[str, Option]:
    kinds = {"int": "int", "float": "float", "str": "str", "tuple[int, ...]": "ints"}
    minimum = {"n_floors": 2, "n_cars": 1, "capacity": 1, "load_time_shape": 1, "dt": 0.01}
    return {
        f.name: Option(f.name, kinds[str(f.type)], "a Building field", minimum=minimum.get(f.name, 0))
        for f in dataclasses.fields(Building)
    }


OPTIONS: dict[str, Option] = {
    **_building_options(),
    "speed": Option(
        "speed", "float", "rated speed m/s (with acceleration, door_open, door_close)", minimum=0.01
    ),
    "acceleration": Option("acceleration", "float", "m/s^2", minimum=0.01),
    "door_open": Option("door_open", "float", "s", minimum=0),
    "door_close": Option("door_close", "float", "s", minimum=0),
    "boarding_time": Option(
        "boarding_time", "float", "mean s per passenger boarding or alighting", minimum=0
    ),
    "profile": Option("profile", "str", "a traffic profile name (or the name of a site's demand)"),
    "demand": Option(
        "demand", "table", "a list of time bins {seconds, pct5, up, down, inter}", check=_demand
    ),
    "start_hour": Option("start_hour", "float?", "clock hour at the measured window's start", minimum=0),
    "floor_shares": Option(
        "floor_shares",
        "table",
        "one share per upper floor, summing to 1 (or [] for equal)",
        check=_floor_shares,
    ),
    "intensity": Option("intensity", "float", "multiplies every rate", minimum=0),
    "hours": Option("hours", "float?", "stretch the profile to this many hours", minimum=0.001),
    "warmup": Option("warmup", "float", "s", minimum=0),
    "drain": Option("drain", "float", "s", minimum=0),
    "reward": Option("reward", "choice", choices=("wait2", "wait")),
    "backend": Option("backend", "choice", choices=("scalar", "numpy")),
    "assignment_obs": Option("assignment_obs", "bool"),
}


def _kinematic(values: dict[str, Any], base: Building) -> dict[str, float]:
    """Lumped Building times from physical speeds and door times (``Building.kinematic``'s arithmetic)."""
    given = [k for k in KINEMATIC if k in values]
    if not given:
        return {}
    missing = [k for k in KINEMATIC if k not in values]
    if missing:
        raise ValueError(f"elevator options {', '.join(given)} need {', '.join(missing)} too")
    lumped = [k for k in ("floor_time", "stop_time", "reopen_time", "park_time") if k in values]
    if lumped:
        raise ValueError(f"give either speed/acceleration/door times or {', '.join(lumped)}, not both")
    speed, accel = values.pop("speed"), values.pop("acceleration")
    door_open, door_close = values.pop("door_open"), values.pop("door_close")
    height = values.get("floor_height", base.floor_height)
    return {  # the same float operations in the same order as Building.kinematic: identical presets
        "floor_time": height / speed,
        "stop_time": speed / accel + door_open + door_close,
        "reopen_time": door_open + door_close,
        "park_time": speed / accel,
    }


def make_env(env_id: str, **overrides) -> ElevatorEnv:
    """``elevator[:<preset>:<profile>[:<intensity>]]`` with checked overrides (``OPTIONS``): Building fields
    (``n_floors``, ``n_cars`` ...) or speed/acceleration/door times, the demand (``profile``, ``demand``,
    ``intensity``, ``hours``, ``start_hour``), ``warmup``, ``drain``, ``reward``, ``backend``, ``assignment_obs``."""
    preset, profile, intensity = parse_env_id(env_id)
    values = check_options("elevator", OPTIONS, overrides)
    base = PRESETS[preset]
    bkw = _kinematic(values, base)
    if "boarding_time" in values:
        if "load_time_mean" in values:
            raise ValueError("give either boarding_time or load_time_mean, not both")
        bkw["load_time_mean"] = values.pop("boarding_time")
    bkw.update({k: values.pop(k) for k in list(values) if k in _BUILDING_FIELDS})
    building = base.replace(**bkw) if bkw else base
    slots = values.pop("demand", ())
    profile = values.pop("profile", "custom" if slots else profile)
    if not slots and profile not in PROFILES:
        raise ValueError(
            f"elevator option profile expects one of {', '.join(sorted(PROFILES))}, got {profile!r}"
        )
    tkw = {k: values.pop(k) for k in list(values) if k in ("intensity", "hours", "warmup", "drain")}
    if intensity is not None:
        tkw.setdefault("intensity", intensity)
    shares = values.pop("floor_shares", ())
    if shares and len(shares) != len(building.upper_floors):
        raise ValueError(
            f"elevator option floor_shares expects {len(building.upper_floors)} values (one per upper floor), "
            f"got {len(shares)}"
        )
    traffic = Traffic(
        profile=profile, slots=slots, begin_hour=values.pop("start_hour", None), floor_shares=shares, **tkw
    )
    return ElevatorEnv(
        building,
        traffic,
        reward=values.pop("reward", "wait2"),
        env_id=env_id,
        backend=values.pop("backend", "scalar"),
        assignment_obs=values.pop("assignment_obs", True),
    )


_BUILDING_FIELDS = {f.name for f in dataclasses.fields(Building)}


def site_spec(env: ElevatorEnv) -> dict[str, Any]:
    """Every option of ``env`` resolved: the building field by field, the demand bin by bin."""
    t = env.traffic
    slots = t.slots or PROFILES[t.profile]
    return {
        "options": {
            **dataclasses.asdict(env.building),
            "profile": t.profile,
            "demand": [dict(zip(SLOT_KEYS, dataclasses.astuple(s), strict=True)) for s in slots],
            "start_hour": t.start_hour,
            "floor_shares": list(t.floor_shares),
            "intensity": t.intensity,
            "hours": t.hours,
            "warmup": t.warmup,
            "drain": t.drain,
            "reward": env.core.reward_kind,
            "backend": env.backend,
            "assignment_obs": env.assignment_obs,
        },
        "files": {},
    }


def obs_groups(env_id: str, obs_dim: int) -> tuple[dict[str, list[int]], list[int]] | None:
    """The observation layout of an env id (with or without the assignment bits) that has ``obs_dim``."""
    env = _env_with_obs_dim(env_id, obs_dim)
    return None if env is None else env.obs_groups()


def _env_with_obs_dim(env_id: str, obs_dim: int) -> ElevatorEnv | None:
    """The env of an env id whose observation has ``obs_dim`` (with or without the assignment bits)."""
    for assignment in (True, False):
        env = make_env(env_id, assignment_obs=assignment)
        if env.obs_dim == obs_dim:
            return env
    return None


def ordinal_blocks(env_id: str, obs_dim: int) -> list[tuple[int, int]] | None:
    """The env's ordered one-hot blocks (the decision floor), if an env id's layout has ``obs_dim``."""
    env = _env_with_obs_dim(env_id, obs_dim)
    return None if env is None else env.ordinal_blocks()


def decision_context(env_id: str, obs_dim: int) -> list[tuple[int, int]] | None:
    """The observation ranges that describe a car's decision (``adv_features = "context"``)."""
    env = _env_with_obs_dim(env_id, obs_dim)
    return None if env is None else env.decision_context()


def teammate_features(env_id: str, obs_dim: int):
    """``obs [n, obs_dim] -> [n, k]``: the other cars relative to the deciding floor (``adv_teammates``)."""
    env = _env_with_obs_dim(env_id, obs_dim)
    return None if env is None else env.teammate_features


def controller_names(env_id: str) -> list[str]:
    return [*CONTROLLERS, "random"]


def make_controller(env_id: str, name: str, **kwargs):
    """A rule by name; ``etd-park:6.8.4.-`` is ETD with car c parked at the c-th floor (``-``: car c does
    not park). Dots, not slashes: a source with a slash is read as a run directory (trainer/policies.py)."""
    name, sep, layout = name.partition(":")
    if sep:
        if name != "etd-park":
            raise ValueError(
                f"only etd-park takes a parking layout (etd-park:6.8.4.-), got {name!r}:{layout!r}"
            )
        return ETDPark(floors=parse_layout(layout), **kwargs)
    if name not in CONTROLLERS:
        raise ValueError(f"unknown elevator controller {name!r}; known: {controller_names(env_id)}")
    return CONTROLLERS[name](**kwargs)


def parse_layout(layout: str) -> list[int | None]:
    """``"6.8.4.-"`` -> ``[6, 8, 4, None]``: a parking floor per car, ``-`` for a car that does not park."""
    try:
        return [None if f.strip() == "-" else int(f) for f in layout.split(".")]
    except ValueError:
        raise ValueError(
            f"bad parking layout {layout!r}: expected a floor number or '-' per car, separated by '.'"
        ) from None


def make_experiment(base, p: float, assign: float = 0.0):
    """``<rule>@exp=<p>``: a randomised parking floor at the start of an idle spell (envs/elevator/experiment.py);
    ``@assign=<q>`` adds ETD's assignment without its delay term at other decisions, with probability q.
    Around a layout that leaves some cars without a floor (``etd-park:6.8.4.-@exp=1``), the experiment is on
    those cars only: a round that settles one car at a time (bench/sequential_rounds.py)."""
    from envs.elevator.experiment import ParkingExperiment

    open_cars = None
    if isinstance(base, ETDPark) and base.floors is not None and None in base.floors:
        open_cars = [c for c, f in enumerate(base.floors) if f is None]
    return ParkingExperiment(base, p, cars=open_cars, assign=assign)


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
        # ETD with the logged parking experiment (envs/elevator/experiment.py): at the start of an idle
        # spell, with probability 0.2, the car goes to a uniformly drawn floor. It puts multi-floor parking
        # moves, the improvement over ETD at down-peak, into the log with exact probabilities. 300
        # episodes: what the residual estimator was tuned with (docs/algorithm.md; 100 were too few).
        "etd-experiment": [("etd@exp=0.2", 300)],
        # The same experiment at every idle spell (p = 1): 2.6 times the randomised decisions of p = 0.2, enough
        # for effects that differ from state to state to beat "no advantage" on held-out episodes
        # (bench/linear_heads.py), and on tuning seeds it costs nothing: 0.90x / 0.93x / 0.98x ETD's wait at
        # down-peak / up-peak / lunch (bench/experiment_cost.py; docs/algorithm.md)
        "etd-experiment-p1": [("etd@exp=1", 300)],
        # The fourth round of InSPO's sequential order across logging rounds (bench/sequential_rounds.py):
        # cars 0-2 park at the floors rounds 1-3 settled (6, 8, 4; round 1 fitted on `etd-experiment-p1`'s
        # log, rounds 2 and 3 on 300 episodes each of the round before's controller, collection seeds
        # 40300-40899), the experiment at p = 1 on car 3 only. Each round fits the parking choice's value
        # given the settled cars and settles one more (docs/algorithm.md, "One car per logging round").
        "etd-sequential": [("etd-park:6.8.4.-@exp=1", 300)],
        # The p = 1 parking experiment plus the assignment alternative at q = 0.5: outside idle spells each car
        # acts, with probability 0.5, as ETD without its delay term would (envs/elevator/experiment.py). That
        # assignment is the headroom beyond parking at down-peak (docs/elevator.md, "Headroom beyond parking");
        # a log of ETD never varies who stops for a call. What it costs: bench/experiment_cost.py --assign.
        "etd-experiment-assign": [("etd@exp=1@assign=0.5", 300)],
    }


def plot_eval(results_by_controller: dict, out_dir: Path) -> list[Path]:
    from envs.elevator.plots import plot_eval as _plot

    return _plot(results_by_controller, Path(out_dir))


DEMO = DemoPlan(
    domain="elevator",
    env_id="elevator:cb10x4:downpeak",
    dataset="demo",
    heuristics=["etd", "collective", "sector", "nearest-car"],
    model_name="elevator",
    # the elevator setting of bench/configs/elevator-downpeak.toml (chosen on tuning seeds with its
    # 150-episode log; the demo trains on the 32-episode `demo` log)
    train_overrides={
        "inspo": {
            "iterations": 1500,
            "actor_init": "mu",
            "alpha": 3.0,
            "critic_steps": 4,
            "soft_critic": False,
        },
        "bc": {"iterations": 300},
    },
)
