"""The environment-family protocol: what ``envs/<family>/registry.py`` provides (docs/architecture.md).

Evaluation, the dataset card, the demo and ``bench/results.py`` ask a :class:`Family` instead of checking
family names, so adding a family is one folder plus one line in ``envs/registry.py``'s ``FAMILIES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from envs.base import MultiAgentEnv
    from envs.controllers import Controller


@dataclass(frozen=True)
class Metric:
    """One of a family's headline episode metrics (a key of ``env.episode_metrics()``)."""

    key: str
    title: str  # column title in tables, with its unit
    lower_is_better: bool = True
    decimals: int = 1  # digits shown in reports


@dataclass
class DemoPlan:
    """What ``inspo demo --domain <domain>`` runs for a family. ``fast`` shrinks it for tests."""

    domain: str  # the ``--domain`` name
    env_id: str
    dataset: str  # a named dataset of the family (``datasets``)
    heuristics: list[str]  # rule controllers compared on the evaluation seeds
    model_name: str
    eval_seeds: int = 8
    grpc_seeds: int = 2  # evaluation seeds also driven through the runtime
    algorithms: tuple[str, ...] = ("inspo", "bc")
    train_overrides: dict[str, dict] = field(default_factory=dict)
    env_kwargs: dict = field(default_factory=dict)  # passed to every env the demo makes
    workers: int = 2


class FamilyModule(Protocol):
    """Required of a family module. Optional, with the defaults :class:`Family` supplies:

    * ``datasets(env_id) -> {name: [(controller spec, episodes), ...]}`` (default: none)
    * ``make_experiment(base, p, **options) -> Controller``: the logged experiment ``<rule>@exp=<p>`` (its
      keyword options are the family's own, e.g. the elevator's ``assign``)
    * ``obs_groups(env_id, obs_dim) -> (groups, clock) | None``: observation layout for the drift gauge
    * ``ordinal_blocks(env_id, obs_dim) -> [(start, stop)] | None``: one-hot ranges whose index is ordered
      (the linear advantage heads' ``adv_ordinal``)
    * ``decision_context(env_id, obs_dim) -> [(start, stop)] | None``: observation ranges that describe the
      decision itself (the linear advantage heads' ``adv_features = "context"``)
    * ``teammate_features(env_id, obs_dim) -> (obs [n, obs_dim] -> [n, k]) | None``: where an agent's
      teammates are relative to its decision, from its own observation (the heads' ``adv_teammates``)
    * ``plot_eval(results_by_controller, out_dir) -> [paths]``: the family's evaluation figures
    * ``METRICS: tuple[Metric, ...]``: headline metrics, the primary one first (default: none)
    * ``DEMO: DemoPlan``: the family's ``inspo demo`` (default: no demo)
    * ``CHEAP_TO_BUILD: bool``: building an env takes well under a second (default True; the dataset
      card builds one for action names only then)
    * ``OPTIONS``, ``IGNORED_OPTIONS``, ``STRUCTURAL_FILES``: see envs/site.py
    """

    STRUCTURAL_OPTIONS: tuple[str, ...]

    def make_env(self, env_id: str, **overrides: Any) -> MultiAgentEnv: ...

    def make_controller(self, env_id: str, name: str, **kwargs: Any) -> Controller: ...

    def controller_names(self, env_id: str) -> list[str]: ...

    def site_spec(self, env: MultiAgentEnv) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Family:
    """A family module behind one interface, with defaults for what the module leaves out."""

    name: str  # the env-id prefix (``sumo`` in ``sumo:grid4x4``)
    module_name: str

    @property
    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)  # lazily: asking for xor never imports SUMO

    @property
    def source(self) -> str:
        """The module's file, relative to the repository (for reports that cite it)."""
        return self.module_name.replace(".", "/") + ".py"

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return tuple(getattr(self.module, "METRICS", ()))

    @property
    def primary_metric(self) -> Metric | None:
        return self.metrics[0] if self.metrics else None

    @property
    def demo(self) -> DemoPlan | None:
        return getattr(self.module, "DEMO", None)

    @property
    def cheap_to_build(self) -> bool:
        return bool(getattr(self.module, "CHEAP_TO_BUILD", True))

    def datasets(self, env_id: str) -> dict[str, list[tuple[str, int]]]:
        hook = getattr(self.module, "datasets", None)
        return dict(hook(env_id)) if hook is not None else {}

    def hook(self, name: str) -> Callable | None:
        """An optional function of the module (``plot_eval``, ``obs_groups``, ``make_experiment``), or None."""
        return getattr(self.module, name, None)

    def plot_eval(self, results_by_controller: dict, out_dir: Path) -> list[Path]:
        hook = self.hook("plot_eval")
        return [] if hook is None else [Path(p) for p in hook(results_by_controller, out_dir)]
