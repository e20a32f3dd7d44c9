"""Controllers (behaviour policies) and exploration wrappers with exact behaviour probabilities.

A controller maps the environment to every agent's action and reports the
probability with which it chose each executed action. Here a controller returns a full
*distribution* per agent (one-hot for a deterministic rule); sampling happens in one place
(:meth:`Controller.act`) so the logged probability is always exactly the sampled action's mass.

Rule controllers may read privileged simulator state through ``env`` (max-pressure needs
queues, ETD needs the whole building). Wrappers compose:

* :class:`EpsilonMix`      (1-ε)·base + ε·uniform over legal actions
* :class:`SoftmaxScores`   softmax over a scoring controller's per-action scores
* :class:`EpisodeMixture`  one component drawn per episode (its name goes to the log)

A controller spec string builds any of these: ``"etd"``, ``"etd@eps=0.1"``,
``"nearest-car@temp=2"``, ``"etd@eps=0.1,sector@eps=0.2"`` (per-episode mixture), and
``"etd@exp=0.2"``: the env family's logged experiment on top of the rule (docs/algorithm.md,
"Logs that contain the improvement"); the elevator's also takes ``@assign=q`` (envs/elevator/experiment.py),
traffic's ``@keep=q`` and ``@end=q`` (envs/traffic/experiment.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from envs.base import InfoDict, MultiAgentEnv, ObsDict


def masks_of(env: MultiAgentEnv, infos: InfoDict) -> dict[str, np.ndarray]:
    return {a: np.asarray(infos[a]["action_mask"], dtype=bool) for a in env.possible_agents}


def uniform_legal(mask: np.ndarray) -> np.ndarray:
    p = np.asarray(mask, dtype=np.float64)
    return p / p.sum()


def one_hot(n: int, index: int) -> np.ndarray:
    p = np.zeros(n, dtype=np.float64)
    p[index] = 1.0
    return p


def masked_softmax(scores: np.ndarray, mask: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.where(mask, np.asarray(scores, dtype=np.float64) / temperature, -np.inf)
    z = z - z[mask].max()
    p = np.where(mask, np.exp(z), 0.0)
    return p / p.sum()


class Controller(ABC):
    """Chooses every agent's action each step and knows the probability of its choice."""

    name: str = "controller"
    model_version: str | None = None
    # set per instance by act(); the class default is read-only, so no two controllers can share one
    last_distribution: Mapping[str, np.ndarray] = MappingProxyType({})

    def reset(self, env: MultiAgentEnv, seed: int) -> None:
        """Called after ``env.reset(seed)``; rule controllers clear their per-episode state here."""

    @abstractmethod
    def distribution(self, env: MultiAgentEnv, obs: ObsDict, infos: InfoDict) -> dict[str, np.ndarray]:
        """Per agent, a probability vector over ``env.n_actions`` that is zero on illegal actions.

        Called exactly once per step, so stateful controllers may update their state here.
        """

    def act(
        self, env: MultiAgentEnv, obs: ObsDict, infos: InfoDict, rng: np.random.Generator
    ) -> tuple[dict[str, int], dict[str, float]]:
        """Sample each agent's action; return the actions and their behaviour probabilities."""
        dists = self.distribution(env, obs, infos)
        self.last_distribution = dists  # lets the rollout log the probability of an *executed* action
        actions, probs = {}, {}
        for agent in env.possible_agents:
            p = dists[agent]
            a = int(rng.choice(len(p), p=p)) if np.count_nonzero(p) > 1 else int(np.argmax(p))
            actions[agent], probs[agent] = a, float(p[a])
        return actions, probs

    def describe(self) -> str:
        """The name written to the log's ``controller`` column."""
        return self.name

    def observe(
        self,
        env: MultiAgentEnv,
        rewards: dict[str, float],
        terminations: dict[str, bool],
        truncations: dict[str, bool],
    ) -> None:
        """Called after each step with its outcome (a served policy reports it to the runtime)."""


def best_legal(scores: np.ndarray, mask: np.ndarray) -> int:
    """The legal action with the highest score, ties to the lowest index: what a scoring rule picks."""
    return int(np.argmax(np.where(mask, scores, -np.inf)))


class ScoringController(Controller):
    """A rule controller that ranks actions by a score and picks the best legal one.

    Exposing the scores lets :class:`SoftmaxScores` turn any such rule into a stochastic,
    fully supported behaviour policy.
    """

    @abstractmethod
    def scores(self, env: MultiAgentEnv, obs: ObsDict, infos: InfoDict) -> dict[str, np.ndarray]:
        """Per agent, a float score per action (higher is better); illegal entries are ignored."""

    def distribution(self, env, obs, infos):
        scores = self.scores(env, obs, infos)
        return {
            a: one_hot(env.n_actions, best_legal(scores[a], mask)) for a, mask in masks_of(env, infos).items()
        }


class RandomLegal(Controller):
    """Uniform over each agent's legal actions."""

    name = "random"

    def distribution(self, env, obs, infos):
        return {a: uniform_legal(m) for a, m in masks_of(env, infos).items()}


class EpsilonMix(Controller):
    """With probability ε a uniformly random legal action, otherwise the base controller's choice."""

    def __init__(self, base: Controller, epsilon: float):
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.base, self.epsilon = base, epsilon
        self.name = f"{base.describe()}@eps={epsilon:g}"

    def reset(self, env, seed):
        self.base.reset(env, seed)

    def observe(self, env, rewards, terminations, truncations):
        self.base.observe(env, rewards, terminations, truncations)

    def distribution(self, env, obs, infos):
        base = self.base.distribution(env, obs, infos)
        return {
            a: (1.0 - self.epsilon) * base[a] + self.epsilon * uniform_legal(m)
            for a, m in masks_of(env, infos).items()
        }


class SoftmaxScores(Controller):
    """Softmax (temperature T) over a :class:`ScoringController`'s scores, restricted to legal actions."""

    def __init__(self, base: ScoringController, temperature: float):
        if not isinstance(base, ScoringController):
            raise TypeError(f"controller {base.describe()!r} has no scores; softmax needs a scoring rule")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.base, self.temperature = base, temperature
        self.name = f"{base.describe()}@temp={temperature:g}"

    def reset(self, env, seed):
        self.base.reset(env, seed)

    def observe(self, env, rewards, terminations, truncations):
        self.base.observe(env, rewards, terminations, truncations)

    def distribution(self, env, obs, infos):
        scores = self.base.scores(env, obs, infos)
        return {a: masked_softmax(scores[a], m, self.temperature) for a, m in masks_of(env, infos).items()}


class EpisodeMixture(Controller):
    """Draws one component per episode (uniformly, from the episode seed) and acts as it.

    The logged probability is the chosen component's, i.e. the behaviour policy conditional on
    the episode's controller, which is what importance weights need when the component is known.
    """

    def __init__(self, components: list[Controller]):
        if not components:
            raise ValueError("a mixture needs at least one controller")
        self.components = components
        self.current = components[0]
        self.name = ",".join(c.describe() for c in components)

    def reset(self, env, seed):
        rng = np.random.default_rng([int(seed), 7919])
        self.current = self.components[int(rng.integers(len(self.components)))]
        self.current.reset(env, seed)

    def distribution(self, env, obs, infos):
        return self.current.distribution(env, obs, infos)

    def observe(self, env, rewards, terminations, truncations):
        self.current.observe(env, rewards, terminations, truncations)

    def describe(self) -> str:
        return self.current.describe()

    @property
    def model_version(self) -> str | None:  # type: ignore[override]
        return self.current.model_version


# the logged experiments' own alternatives (``@exp=p`` required): the elevator's ``assign``, traffic's ``keep``
# and ``end``
EXPERIMENT_OPTIONS = ("assign", "keep", "end")


def parse_component(spec: str) -> tuple[str, dict[str, float]]:
    """``"etd@eps=0.1@temp=2"`` -> ``("etd", {"eps": 0.1, "temp": 2.0})``."""
    name, *options = spec.strip().split("@")
    parsed: dict[str, float] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("eps", "temp", "exp", *EXPERIMENT_OPTIONS):
            raise ValueError(
                f"bad controller option {option!r} in {spec!r}: "
                "expected eps=<float>, temp=<float>, exp=<float>, assign=<float>, keep=<float> or end=<float>"
            )
        try:
            parsed[key] = float(value)
        except ValueError:
            raise ValueError(
                f"bad controller option {option!r} in {spec!r}: {key} expects a number, got {value!r}"
            ) from None
    return name, parsed


def build_controller(env_id: str, spec: str, epsilon: float | None = None, **kwargs: Any) -> Controller:
    """Build a (possibly wrapped, possibly mixed) controller from a spec string.

    ``epsilon`` applies to components that do not set their own ``eps``. Names resolve through
    the env family's rule controllers (``envs.registry``); ``random`` is always available.
    """
    from envs.registry import make_experiment, make_rule_controller

    components: list[Controller] = []
    for part in spec.split(","):
        name, options = parse_component(part)
        base = RandomLegal() if name == "random" else make_rule_controller(env_id, name, **kwargs)
        controller: Controller = base
        try:
            extra = {k: options[k] for k in EXPERIMENT_OPTIONS if k in options}
            if extra and "exp" not in options:
                raise ValueError(
                    f"{next(iter(extra))}= is part of the logged experiment: give exp= too "
                    "(etd@exp=1@assign=0.5, max-pressure@exp=0.1@keep=0.5)"
                )
            if "exp" in options:
                controller = make_experiment(env_id, base, options["exp"], **extra)
            if "temp" in options:
                if not isinstance(base, ScoringController):
                    raise ValueError(f"{name!r} has no action scores; temp= needs a scoring rule")
                controller = SoftmaxScores(base, options["temp"])
            eps = options.get("eps", epsilon)
            if eps:
                controller = EpsilonMix(controller, eps)
        except ValueError as err:  # name the spec the bad value came from
            raise ValueError(f"controller spec {part.strip()!r}: {err}") from None
        components.append(controller)
    return components[0] if len(components) == 1 else EpisodeMixture(components)
