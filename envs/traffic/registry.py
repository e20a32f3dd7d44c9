"""The ``sumo`` env family (envs/registry.py): env ids ``sumo:<net>`` for the nets sumo-rl ships.

``make_env('sumo:grid4x4', num_seconds=300)`` overrides any :class:`TrafficConfig` field
(``delta_time``, ``yellow_time``, ``min_green``, ``begin_time``, ``num_seconds``,
``time_to_teleport``, ``reward``, ``net_file``/``route_file`` for your own scenario).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envs.family import DemoPlan, Metric
from envs.options import Option, check_options
from envs.traffic.nets import RESCO_NETS

CONTROLLERS = ("fixed", "max-pressure", "max-pressure-keep", "max-pressure-cap", "loop-count", "random")
CHEAP_TO_BUILD = False  # a SUMO net takes seconds to load
# Headline metrics (keys of TrafficEnv.episode_metrics), the primary one first: delay per finished trip.
METRICS = (
    Metric("delay", "trip delay (s)"),
    Metric("delay_all", "delay incl. unfinished (s)"),
    Metric("throughput", "throughput (trips)", lower_is_better=False),
    Metric("avg_queue", "avg queue (veh)"),
)

OPTIONS: dict[str, Option] = {
    "net_file": Option("net_file", "str", "a SUMO .net.xml file"),
    "route_file": Option("route_file", "str", "a SUMO .rou.xml file"),
    "begin_time": Option("begin_time", "int", minimum=-1),
    "num_seconds": Option("num_seconds", "int", minimum=1),
    "delta_time": Option("delta_time", "int", minimum=1),
    "yellow_time": Option("yellow_time", "int", minimum=0),
    "min_green": Option("min_green", "int", minimum=0),
    "time_to_teleport": Option("time_to_teleport", "int", minimum=-1),
    "max_depart_delay": Option("max_depart_delay", "int", minimum=-1),
    "waiting_time_memory": Option("waiting_time_memory", "int", minimum=1),
    "reward": Option(
        "reward", "choice", choices=("queue", "pressure", "diff-waiting-time", "average-speed", "occupancy")
    ),
    "observation": Option("observation", "choice", choices=("lanes", "detectors")),
    "events_dir": Option("events_dir", "str", "write each episode's hi-res event log (ATSPM layout) here"),
}
# The site check (envs/site.py): the network (its file's content) and the signal timing an action and
# the min-green feature refer to. The routes (demand), the hour simulated and the reward may differ.
STRUCTURAL_OPTIONS = ("delta_time", "yellow_time", "min_green", "observation")
STRUCTURAL_FILES = ("net_file",)
IGNORED_OPTIONS = ("net_file", "route_file", "events_dir")  # paths: the files' contents are compared instead
# Options added after logs were recorded: left out of a spec at their default, so older specs still match.
OMITTED_AT_DEFAULT = {"observation": "lanes", "events_dir": ""}


def _net_name(env_id: str) -> str:
    parts = env_id.split(":")
    if len(parts) != 2 or parts[0] != "sumo" or not parts[1]:
        raise ValueError(f"bad traffic env id {env_id!r}: expected 'sumo:<net>', e.g. 'sumo:grid4x4'")
    return parts[1]


def make_env(env_id: str, **overrides):
    from envs.traffic.env import TrafficConfig, TrafficEnv, config_fields

    name = _net_name(env_id)
    overrides = check_options("sumo", OPTIONS, overrides)
    assert set(OPTIONS) <= set(config_fields())
    if name not in RESCO_NETS and not (overrides.get("net_file") and overrides.get("route_file")):
        raise ValueError(
            f"unknown SUMO net {name!r} in {env_id!r}; known: {sorted(RESCO_NETS)} "
            "(or pass net_file= and route_file= for your own scenario)"
        )
    return TrafficEnv(env_id, TrafficConfig(net=name, **overrides))


def site_spec(env) -> dict[str, Any]:
    """Every TrafficConfig field resolved, the shipped net's paths as "" (they differ per install), and the
    sha256 of the net and route files."""
    from envs.site import sha256_file
    from envs.traffic.env import _is_builtin

    config = env.config
    options = {k: getattr(config, k) for k in OPTIONS}
    for key, default in OMITTED_AT_DEFAULT.items():
        if options[key] == default:
            del options[key]
    if _is_builtin(config):
        options["net_file"] = options["route_file"] = ""
    files = {"net_file": sha256_file(config.net_file), "route_file": sha256_file(config.route_file)}
    return {"options": options, "files": files}


def make_controller(env_id: str, name: str, **kwargs):
    from envs.controllers import RandomLegal
    from envs.traffic.controllers import FixedTime, LoopCount, MaxPressure, MaxPressureCap, MaxPressureKeep

    _net_name(env_id)
    builders = {
        "fixed": FixedTime,
        "max-pressure": MaxPressure,
        "max-pressure-keep": MaxPressureKeep,
        "max-pressure-cap": MaxPressureCap,
        "loop-count": LoopCount,
        "random": RandomLegal,
    }
    if name not in builders:
        raise ValueError(f"unknown traffic controller {name!r}; known: {list(CONTROLLERS)}")
    return builders[name](**kwargs)


def make_experiment(base, p: float, keep: float = 0.0, end: float = 0.0):
    """``<rule>@exp=<p>[@keep=<q>][@end=<q>]``: hold or end the current green early with probability p, keep
    a near-tie green or end a long one with probability q (envs/traffic/experiment.py)."""
    from envs.traffic.experiment import GreenExperiment

    return GreenExperiment(base, p, keep=keep, end=end)


def controller_names(env_id: str) -> list[str]:
    _net_name(env_id)
    return list(CONTROLLERS)


def datasets(env_id: str) -> dict[str, list[tuple[str, int]]]:
    """Named collections for offline training (episodes of the full benchmark hour).

    ``mixed``: mostly epsilon-explored max-pressure (the strong behaviour, with every phase
    logged now and then), plus explored fixed-time and some uniform-random episodes for coverage.
    ``rules``: the same mixture in 48 episodes (the traffic demo's log until 2026-12-05; what
    bench/ope_validation.py evaluates off-policy estimators on).
    ``small``: the same mixture in 8 episodes, for smoke runs (``inspo demo --fast``).
    ``demo``: 48 softmax-explored max-pressure episodes, for ``inspo demo --domain traffic`` (which runs
    the first 900 s of the hour; about half a second of SUMO per episode). Not a mix of rules: with 8
    explored fixed-time episodes among 48, InSPO fell from ~22 s to 28.0 s on grid4x4 tuning seeds (BC
    24.2): fixed-time acts on a cycle clock the observation does not show, and its much worse
    returns set the reward scale.
    ``max-pressure``: 48 epsilon-explored max-pressure episodes (bench/configs/traffic-cologne8.toml).
    ``explored``: 96 episodes of max-pressure with softmax exploration over its pressures (``@temp=1``),
    which logs the phases the rule nearly chose: on grid4x4 tuning seeds InSPO improved on max-pressure
    from these logs and not from epsilon-explored ones (bench/configs/traffic-grid4x4.toml has the numbers).
    ``experiment``: 96 episodes of max-pressure with the logged green-time experiment (``@exp=0.2``:
    hold or end the green early, envs/traffic/experiment.py), which logs the decisions worth learning
    with exact probabilities.
    ``experiment-keep``: 96 episodes of the same experiment at p = 0.1 plus its ``keep`` alternative
    (``@keep=0.5``: at a decision where the rule would leave a green within one vehicle of the best
    phase's pressure, keep it with probability 0.5), which varies the decision with the headroom on
    grid4x4 (docs/traffic.md, "Headroom around max-pressure").
    ``experiment-end``: the same with the ``end`` alternative instead (``@end=0.5``: where a green has run
    25 s and the rule would keep it, end it with probability 0.5), the headroom on cologne8.
    ``experiment-green``: both alternatives in one experiment (``@keep=0.5@end=0.5``): what an operator who
    does not know which change has headroom at their site would run.
    """
    _net_name(env_id)
    return {
        "mixed": [
            ("max-pressure@eps=0.1", 32),
            ("max-pressure@eps=0.3", 8),
            ("fixed@eps=0.1", 16),
            ("random", 8),
        ],
        "rules": [
            ("max-pressure@eps=0.1", 24),
            ("max-pressure@eps=0.3", 8),
            ("fixed@eps=0.1", 12),
            ("random", 4),
        ],
        "demo": [("max-pressure@temp=1", 48)],
        "small": [("max-pressure@eps=0.1", 4), ("fixed@eps=0.1", 2), ("random", 2)],
        "explored": [("max-pressure@temp=1", 96)],
        "max-pressure": [("max-pressure@eps=0.1", 48)],
        "experiment": [("max-pressure@exp=0.2", 96)],
        "experiment-keep": [("max-pressure@exp=0.1@keep=0.5", 96)],
        "experiment-end": [("max-pressure@exp=0.1@end=0.5", 96)],
        "experiment-green": [("max-pressure@exp=0.1@keep=0.5@end=0.5", 96)],
    }


def plot_eval(results_by_controller: dict, out_dir: Path) -> list[Path]:
    from envs.traffic.plots import plot_eval as _plot

    return _plot(results_by_controller, Path(out_dir))


# The first 15 minutes of grid4x4 (the benchmark hour's routes): about 0.5 s of SUMO per episode,
# so collection and evaluation take seconds and the time goes to training. Every env the demo
# makes (collection workers, evaluation, the gRPC drive) gets ``env_kwargs``.
DEMO = DemoPlan(
    domain="traffic",
    env_id="sumo:grid4x4",
    dataset="demo",
    heuristics=["max-pressure", "fixed"],
    model_name="grid4x4",
    eval_seeds=4,
    grpc_seeds=1,
    train_overrides={
        # Small per-agent nets, a short-horizon critic (gamma 0.9 = ~50 s of traffic) trained well
        # before the actor moves, teammate weights over grid neighbours with tight ratio clips: with
        # the defaults 16 agents' ratio products blow the local Q up and the policy gridlocks the net
        # within 300 iterations (measured). alpha 1 and the softmax-explored `demo` log: chosen on
        # tuning seeds (bench/configs/traffic-grid4x4.toml, docs/algorithm.md).
        "inspo": {
            "iterations": 300,
            "hidden": [64, 64],
            "critic_hidden": [128, 128],
            "batch_size": 128,
            "resample_factor": 2,
            "mu_steps": 1000,
            "critic_warmup": 1000,
            "actor_init": "mu",
            "actor_init_noise": 0.0,
            "alpha": 1.0,
            "soft_critic": False,
            "gamma": 0.9,
            "polyak": 0.02,
            "use_neighbors": True,
            "ratio_min": 0.5,
            "ratio_max": 2.0,
        },
        "bc": {"iterations": 200},
    },
    env_kwargs={"num_seconds": 900},
)
