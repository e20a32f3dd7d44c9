"""Typed configs of the algorithms (dataclass defaults, overridable from TOML/JSON files and ``--set`` flags).

Every value that is a [?] in the reference is a field here, with the default documented in
``docs/algorithm.md``. Reward-derived quantities (``alpha``, ``beta``, ``baseline_min_margin``) are in
*normalised* reward units: rewards are divided by ``reward_scale`` (auto: the 5-95% spread of the
dataset's discounted returns-to-go), so ``alpha = 0.1`` means the same on XOR, elevators and traffic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Check = tuple[Callable[[Any], bool], str]  # (test, what the value must be)


def _int(low: int) -> Check:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), f"an integer >= {low}"


def _num(low: float, high: float = math.inf, low_open: bool = True, high_open: bool = False) -> Check:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    right = ")" if high_open or not math.isfinite(high) else "]"
    return ok, f"a number in {'(' if low_open else '['}{low:g}, {high:g}{right}"


def _one_of(*choices: str) -> Check:
    return (lambda v: v in choices), f"one of {list(choices)}"


_BOOL: Check = (lambda v: isinstance(v, bool)), "true or false"
_LR: Check = _num(0, low_open=False)  # a learning rate; 0 freezes that network (a test of the estimator does)
_LAYERS: Check = (
    lambda v: isinstance(v, tuple) and len(v) > 0 and all(isinstance(x, int) and x >= 1 for x in v),
    "a non-empty list of layer widths >= 1 (e.g. 256,256)",
)


def _validate(config: Any, checks: dict[str, Check]) -> None:
    """Raise one ValueError naming the first field whose value is out of range or of the wrong type."""
    for key, (ok, expected) in checks.items():
        value = getattr(config, key)
        if not ok(value):
            raise ValueError(f"config {key} must be {expected}, got {value!r}")


@dataclass
class BCConfig:
    """Behaviour cloning of the logged actions (the ``bc`` baseline)."""

    seed: int = 0
    hidden: tuple[int, ...] = (256, 256)
    shared: bool = True  # one network for all agents with agent-id input; False: one MLP per agent
    lr: float = 1e-3
    batch_size: int = 256  # transitions (each has N agent rows)
    steps_per_iteration: int = 10
    iterations: int = 500
    grad_clip: float = 1.0

    def validate(self) -> None:
        _validate(
            self,
            {
                "seed": _int(0),
                "hidden": _LAYERS,
                "shared": _BOOL,
                "lr": _LR,
                "batch_size": _int(1),
                "steps_per_iteration": _int(1),
                "iterations": _int(1),
                "grad_clip": _num(0),
            },
        )


@dataclass
class InSPOConfig:
    """In-Sample Sequential Policy Optimization See docs/algorithm.md."""

    seed: int = 0
    # networks
    hidden: tuple[int, ...] = (256, 256)
    critic_hidden: tuple[int, ...] = (256, 256)
    # one MLP per agent (default): with a shared trunk, fitting one agent's update drags its teammates'
    # policies along and sequential updates lose their effect (XOR-balanced stalls at the symmetric point)
    shared: bool = False
    # objective (normalised reward units)
    gamma: float = 0.99
    alpha: float = 0.1  # reverse-KL weight to mu
    beta: float = 0.1  # entropy weight; 0 = plain reverse KL (the beta=0 ablation)
    reward_scale: float | None = None  # None: auto from the data (see module docstring)
    # behaviour policy mu
    mu_steps: int = 2000
    mu_lr: float = 1e-3
    mu_floor: float = 1e-3  # mass mixed uniformly over legal actions so log mu is finite
    actor_init: str = "random"  # "random" (fresh init) | "mu" (copy of the fitted mu + noise)
    actor_init_noise: float = 0.05  # std of the parameter noise added with actor_init="mu"
    # critic (Eq. 10): in-sample SARSA on dataset next actions, importance-resampled by pi/mu
    critic_lr: float = 3e-4
    critic_steps: int = 1  # per iteration
    critic_warmup: int = 500  # extra critic steps once, before the first actor phase (evaluates pi_0)
    # what the warm-up fits: "td" (the TD steps above) or "mc" (regression on the logged discounted
    # returns-to-go, i.e. Q^mu without propagating the horizon step by step; with actor_init="mu" that
    # is the value of pi_0 up to the init noise), after which TD takes over
    critic_init: str = "td"
    # True: the MEBR value (Eq. 10), future -alpha log(pi/mu) - beta log pi inside the TD target.
    # False: the critic evaluates pi's plain return; alpha/beta act only in the closed-form step.
    # Long event-driven episodes want False: the per-step bonus, summed over ~1/(1-gamma) decision
    # steps, outweighs the unit-scale return and rewards states with many decisions (measured on the
    # elevator: idle cars learn to hold).
    soft_critic: bool = True
    polyak: float = 0.005
    resample_factor: int = 4  # candidate pool = resample_factor * batch_size, then draw batch_size
    # sequential actor phase
    batch_size: int = 256
    local_q_lr: float = 1e-3
    local_q_steps: int = 1  # per agent per iteration (on the iteration's batch)
    actor_lr: float = 3e-4
    actor_steps: int = 1  # per agent per iteration (on the iteration's batch); raise to fit Eq. 13 fully
    update: str = "sequential"  # "sequential" (InSPO) | "simultaneous" (all agents vs old teammates)
    resample: bool = True  # False: teammates' actions as logged (weights 1), critic without resampling
    ratio_min: float = 1e-3  # per-agent pi/mu clipped to [ratio_min, ratio_max] (in log space)
    ratio_max: float = 1e2
    use_neighbors: bool = False  # restrict teammate products to env.neighbors()
    baseline_quantile: float = 0.0  # b = quantile of in-sample Q (0 = min) ...
    baseline_min_margin: float = 1.0  # ... minus max(in-sample Q range, this)
    exp_clip: float = 10.0  # |exponent| of the target weights
    # support constraint of the closed form (as discrete BCQ's threshold): only actions with
    # mu(a|s) >= support_ratio * max_a mu(a|s) can receive mass; 0 = off (the paper's closed form over
    # every legal action). Where the behaviour decided deterministically this leaves only its action, so
    # noise in the advantage of actions the log never took cannot drop that state from the actor's fit.
    support_ratio: float = 0.0
    normalize_weights: bool = True  # divide target weights by their batch mean
    grad_clip: float = 1.0
    iterations: int = 2000
    # returns (docs/algorithm.md, "Time-aware returns")
    discount: str = "step"  # "step": gamma per decision step; "time": exp(-dt/horizon_s) over the log's ts
    horizon_s: float = 0.0  # with discount="time": the return's horizon in seconds (1/e weight after it)
    # the per-agent advantage estimator inside the sequential loop (docs/algorithm.md)
    estimator: str = (
        "local_q"  # "local_q": the paper's local-Q regression | "residual": trainer/algos/advantage.py
    )
    # True: importance ratios and residuals use the log's behavior_prob where present (the fitted mu is
    # still the KL anchor and fills in logs without probabilities); False: the fitted mu everywhere
    exact_propensity: bool = False
    # True (with exact_propensity): where the log's probability of the logged action is 1, the closed form's
    # anchor mu is that certainty, so the actor is fitted to keep the logged action there with weight 1. The
    # fitted mu is never quite certain, and with advantages learnt where the log randomised, exp(A / alpha)
    # can outweigh its small mass on an action the log never took in that state (measured at lunch: an empty
    # car passing a passenger ETD had sent it to; docs/algorithm.md, "Keeping the rule where the log never
    # varied it")
    certain_anchor: bool = False
    value_folds: int = 2  # residual: episode folds of the cross-fitted state value V(s)
    value_steps: int = 2000  # residual: gradient steps per fold of V(s)
    value_lr: float = 1e-3
    # residual: lambda of the returns (1: Monte Carlo; < 1 bootstraps on the cross-fitted V(s')). Below 1 the
    # target loses what the baseline cannot see at the next state: on the elevator log the pooled effect of
    # an idle car's move up goes from +0.0025 (lambda 1, truth +0.0019) to -0.0006 (lambda 0.8),
    # bench/return_bias.py; docs/algorithm.md
    lam: float = 1.0
    adv_members: int = 5  # residual: ensemble members of each agent's advantage head
    # residual: the heads' form. "mlp": a shared network (state, own observation, agent one-hot) fitted by
    # gradient steps. "linear": linear in the agent's own observation, solved as ridge regression in closed
    # form with the ridge chosen on held-out episodes (trainer/algos/linear_heads.py; docs/algorithm.md)
    adv_heads: str = "mlp"
    # residual, linear heads: the one-hot blocks the env declares ordered (elevator: the floor a car decides
    # at) enter as a quadratic in their index (3 coefficients) instead of one coefficient per level. On the
    # p = 1 down-peak log the per-floor fit alternates in sign floor by floor, mostly noise; the quadratic
    # pools the floors (bench/linear_heads.py --features obs obs+ordinal --stop-effects). Measured in closed
    # loop: level with one coefficient per floor (docs/algorithm.md, "Reading the floor as a number")
    adv_ordinal: bool = False
    # residual, linear heads: also the env's teammate features, a fixed function of the agent's own observation
    # (elevator: how many other cars, idle ones apart, are at, above and below the floor it decides at), so the
    # fitted effect of stopping can depend on where teammates already wait, which a linear model of the raw
    # observation cannot express (envs/elevator/features.py). Measured: the fit sees it offline, the trained
    # policy parks as without it (docs/algorithm.md, "Reading the floor as a number")
    adv_teammates: bool = False
    # residual, linear heads: what of the observation they read. "obs": all of it; "context": only the columns
    # the env declares describe the decision (elevator: the car's direction, mode and decision floor), so one
    # decision gets one advantage wherever the rest of the building is. On the down-peak log the rest moved
    # the fitted effect of stopping from row to row by twice what the floor did, and those moves did not
    # replicate between two halves of the log (bench/linear_heads.py --parts 2; docs/algorithm.md, "One
    # advantage per decision")
    adv_features: str = "obs"
    # residual, linear heads: row weights of the fit. "equal", or "precision": 1 / the residual's variance
    # given the baseline's value (trainer/algos/linear_heads.py, precision_weights): generalised least
    # squares. On the down-peak log the residual's std is 0.003 in calm states and 0.09 in the busiest, so
    # equal weights let the busy rows' noise set the estimate's variance (docs/algorithm.md, "Calm rows and
    # busy rows")
    adv_weights: str = "equal"
    adv_refit_every: int = 100  # residual, linear heads: iterations between the sequential refits
    # residual, linear heads: how far back a teammate's updated policy counts in agent i's sequential refit.
    # 0: its ratio pi~/mu at the row's own step (the paper's weighting). s > 0: its clipped log-ratios summed
    # over its earlier steps of the episode too, each discounted by exp(-age / s), so the weight also says how
    # likely its new policy was to put it where it is. Why it exists: an idle elevator car's parking floor
    # comes from a chain of stop-or-go steps, and once it waits there its own ratio is 1, so the per-step
    # weight cannot show car i where its teammates now park. Measured on the down-peak log: 30 s leaves
    # 0.3-24 % of the rows effective and does not move the closed loop (docs/algorithm.md, "Teammates'
    # parking in the sequential refit"). Needs discount="time".
    teammate_memory_s: float = 0.0
    adv_lr: float = 1e-3
    # residual: steps fitting every agent's heads (teammates as logged) before the first actor phase
    adv_warmup: int = 6000
    adv_steps: int = 1  # residual: steps per agent per iteration, teammates weighted by pi~/mu
    kappa: float = 1.0  # residual: act on mean - kappa * std over the members (pessimism)
    # residual: whose rewards make agent i's return. "team": everyone's (the team reward); "local": its own
    # logged reward; "local+neighbours": its own plus those of env.neighbors()[i] (traffic: the queues
    # its phase choice moves), a lower-variance view of its effect on the team (docs/algorithm.md)
    reward_credit: str = "team"
    # residual: what the cross-fitted baseline sees. "state": V(s). "state+exogenous": b(s, z), where z
    # summarises the log's exogenous input events *after* the decision (elevator: passenger arrivals),
    # which no action changes, so the regression stays unbiased and loses the noise z explains
    # (trainer/algos/exogenous.py; docs/algorithm.md, "Exogenous inputs"). Needs discount="time".
    baseline_inputs: str = "state"
    # residual: divide A by its typical size (mu-weighted RMS over decisions), so alpha = 1 means "a typical
    # advantage multiplies an action's odds by e"; False: alpha in normalised reward units as for local_q
    adv_normalize: bool = True
    # deployed policy: 0 = the last iterate; d in (0, 1) = a Polyak average of the actor's parameters
    # (decay d per iteration, ~1/(1-d) iterations), so a run that stops inside a brief dip of the
    # iterates still deploys the policy around it. Training itself always uses the iterate.
    actor_ema: float = 0.0

    def validate(self) -> None:
        _validate(
            self,
            {
                "seed": _int(0),
                "hidden": _LAYERS,
                "critic_hidden": _LAYERS,
                "shared": _BOOL,
                "gamma": _num(0, 1),
                "alpha": _num(0),
                "beta": _num(0, low_open=False),
                "mu_steps": _int(0),
                "mu_lr": _LR,
                "mu_floor": _num(0, 1, high_open=True),
                "actor_init": _one_of("random", "mu"),
                "actor_init_noise": _num(0, low_open=False),
                "critic_lr": _LR,
                "critic_steps": _int(1),
                "critic_warmup": _int(0),
                "critic_init": _one_of("td", "mc"),
                "soft_critic": _BOOL,
                "polyak": _num(0, 1),
                "resample_factor": _int(1),
                "batch_size": _int(1),
                "local_q_lr": _LR,
                "local_q_steps": _int(1),
                "actor_lr": _LR,
                "actor_steps": _int(1),
                "update": _one_of("sequential", "simultaneous"),
                "resample": _BOOL,
                "ratio_min": _num(0),
                "ratio_max": _num(0),
                "use_neighbors": _BOOL,
                "baseline_quantile": _num(0, 1, low_open=False),
                "baseline_min_margin": _num(0, low_open=False),
                "exp_clip": _num(0),
                "support_ratio": _num(0, 1, low_open=False),
                "normalize_weights": _BOOL,
                "grad_clip": _num(0),
                "iterations": _int(1),
                "actor_ema": _num(0, 1, low_open=False, high_open=True),
                "discount": _one_of("step", "time"),
                "horizon_s": _num(0, low_open=False),
                "estimator": _one_of("local_q", "residual"),
                "exact_propensity": _BOOL,
                "certain_anchor": _BOOL,
                "value_folds": _int(2),
                "value_steps": _int(1),
                "value_lr": _LR,
                "lam": _num(0, 1, low_open=False),
                "adv_members": _int(1),
                "adv_heads": _one_of("mlp", "linear"),
                "adv_ordinal": _BOOL,
                "adv_teammates": _BOOL,
                "adv_features": _one_of("obs", "context"),
                "adv_weights": _one_of("equal", "precision"),
                "adv_refit_every": _int(1),
                "teammate_memory_s": _num(0, low_open=False),
                "adv_lr": _LR,
                "adv_warmup": _int(0),
                "adv_steps": _int(1),
                "kappa": _num(0, low_open=False),
                "reward_credit": _one_of("team", "local", "local+neighbours"),
                "baseline_inputs": _one_of("state", "state+exogenous"),
                "adv_normalize": _BOOL,
            },
        )
        if self.discount == "time" and self.horizon_s <= 0:
            raise ValueError(
                f"config horizon_s must be > 0 seconds with discount='time', got {self.horizon_s}"
            )
        if self.reward_credit != "team" and self.estimator != "residual":
            raise ValueError(
                f"config reward_credit={self.reward_credit!r} needs estimator='residual' (the local-Q target "
                "comes from the joint critic of the team reward)"
            )
        if self.adv_heads != "mlp" and self.estimator != "residual":
            raise ValueError(
                f"config adv_heads={self.adv_heads!r} needs estimator='residual' (the heads are the residual "
                "estimator's)"
            )
        linear_only = {  # option: (its value that asks nothing of the heads, what it does to the linear heads)
            "adv_ordinal": (False, "it shapes the linear heads' features"),
            "adv_teammates": (False, "it shapes the linear heads' features"),
            "adv_features": ("obs", "it picks the linear heads' features"),
            "adv_weights": ("equal", "it weights the linear heads' closed-form fit"),
            "teammate_memory_s": (0.0, "it weights the linear heads' sequential refit"),
        }
        for key, (off, why) in linear_only.items():
            value = getattr(self, key)
            if value != off and self.adv_heads != "linear":
                shown = "true" if value is True else repr(value)
                raise ValueError(f"config {key}={shown} needs adv_heads='linear' ({why})")
        if self.certain_anchor and not self.exact_propensity:
            raise ValueError(
                "config certain_anchor=true needs exact_propensity=true (the log's probabilities)"
            )
        if self.teammate_memory_s > 0 and (self.discount != "time" or not self.resample):
            raise ValueError(
                f"config teammate_memory_s={self.teammate_memory_s:g} needs discount='time' (ages are seconds "
                "between the log's ts) and resample=true (it shapes the teammates' weights)"
            )
        if self.baseline_inputs != "state" and (self.estimator != "residual" or self.discount != "time"):
            raise ValueError(
                f"config baseline_inputs={self.baseline_inputs!r} needs estimator='residual' and "
                "discount='time' (the exogenous features are counted over horizon_s seconds)"
            )
        if self.reward_scale is not None:
            _validate(self, {"reward_scale": _num(0)})
        if self.ratio_max < self.ratio_min:
            raise ValueError(f"config ratio_max ({self.ratio_max}) must be >= ratio_min ({self.ratio_min})")


ALGORITHMS: dict[str, tuple[type, dict[str, Any]]] = {
    "inspo": (InSPOConfig, {}),
    "inspo-simultaneous": (InSPOConfig, {"update": "simultaneous"}),
    "inspo-noresample": (InSPOConfig, {"resample": False}),
    "inspo-beta0": (InSPOConfig, {"beta": 0.0}),
    "bc": (BCConfig, {}),
}


def _coerce(cfg_type: type, key: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cfg_type)}
    if key not in fields:
        raise KeyError(f"unknown config key {key!r} for {cfg_type.__name__}; known: {sorted(fields)}")
    default = getattr(cfg_type(), key)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null"):
            return None
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config {key} expects true/false, got {value!r}")
            return text.lower() in ("true", "1")
        try:
            if isinstance(default, tuple):
                return tuple(int(x) for x in text.strip("()[] ").split(",") if x.strip())
            if isinstance(default, int):
                return int(text)
            if isinstance(default, float) or default is None:
                return float(text)
        except ValueError:
            kind = "integers (e.g. 256,256)" if isinstance(default, tuple) else type(default or 0.0).__name__
            raise ValueError(f"config {key} expects {kind}, got {value!r}") from None
        return text
    if isinstance(default, tuple) and isinstance(value, list | tuple):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"config {key} expects a list of integers, got {value!r}")
        return tuple(value)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def make_config(
    algo: str, file: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> Any:
    """The config of a named algorithm: its defaults, then the variant's, then a TOML/JSON file, then overrides."""
    if algo not in ALGORITHMS:
        raise KeyError(f"unknown algorithm {algo!r}; known: {sorted(ALGORITHMS)}")
    cfg_type, variant = ALGORITHMS[algo]
    values: dict[str, Any] = dict(variant)
    if file is not None:
        path = Path(file)
        text = path.read_text()
        try:
            loaded = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except ValueError as err:  # JSONDecodeError, TOMLDecodeError
            raise ValueError(f"config file {path}: {err}") from None
        if not isinstance(loaded, dict):
            raise ValueError(
                f"config file {path}: expected a table of key = value, got {type(loaded).__name__}"
            )
        loaded = loaded.get(algo, loaded)  # allow a [inspo] table or a flat file
        values.update(loaded)
    values.update(parse_overrides(overrides))
    config = cfg_type(**{k: _coerce(cfg_type, k, v) for k, v in values.items()})
    config.validate()
    return config


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``--set key=value`` items (or a dict, passed through) as a dict; values are coerced later."""
    if isinstance(overrides, dict):
        return dict(overrides)
    pairs: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        pairs[key.strip()] = value
    return pairs


def config_dict(cfg: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


__all__ = ["ALGORITHMS", "BCConfig", "InSPOConfig", "config_dict", "make_config", "parse_overrides"]
