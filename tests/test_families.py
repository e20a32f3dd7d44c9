"""The env-family protocol (envs/family.py): every registered family provides it, and a new family is one
module plus one line in ``FAMILIES`` that evaluation, the dataset card, the demo and reports then find."""

import sys
import textwrap

import pytest

from envs import registry
from envs.family import DemoPlan, Metric
from trainer.cli import build_parser
from trainer.logs.card import _action_names

REQUIRED = ("make_env", "make_controller", "controller_names", "site_spec")


@pytest.mark.parametrize("name", sorted(registry.FAMILIES))
def test_every_family_provides_the_protocol(name):
    family = registry.family_named(name)
    assert all(callable(getattr(family.module, f, None)) for f in REQUIRED)
    assert isinstance(family.module.STRUCTURAL_OPTIONS, tuple)
    assert all(isinstance(m, Metric) for m in family.metrics)
    assert len({m.key for m in family.metrics}) == len(family.metrics)


def test_demo_plans_name_datasets_and_controllers_their_family_has():
    plans = registry.demo_plans()
    assert sorted(plans) == ["elevator", "traffic"]
    for plan in plans.values():
        assert plan.dataset in registry.family(plan.env_id).datasets(plan.env_id)
        assert "small" in registry.family(plan.env_id).datasets(plan.env_id)  # what --fast collects
        assert set(plan.heuristics) <= set(registry.controller_names(plan.env_id))


def test_primary_metrics_and_cheap_builds():
    assert registry.family("elevator:cb10x4:downpeak").primary_metric.key == "avg_wait"
    traffic = registry.family("sumo:grid4x4")
    assert traffic.primary_metric.key == "delay" and not traffic.cheap_to_build
    assert registry.action_names("sumo:grid4x4") is None  # never loads a SUMO net for a card
    assert registry.family("xor").metrics == ()


TOY = """
from envs.family import DemoPlan, Metric
from envs.games import registry as games

STRUCTURAL_OPTIONS = ()
METRICS = (Metric("regret", "regret"),)
DEMO = DemoPlan(domain="toy", env_id="toy", dataset="small", heuristics=["random"], model_name="toy")


def make_env(env_id, **overrides):
    env = games.make_env("xor", **overrides)
    env.env_id = env_id
    return env


def make_controller(env_id, name, **kwargs):
    return games.make_controller("xor", name, **kwargs)


def controller_names(env_id):
    return ["random"]


def site_spec(env):
    return games.site_spec(env)


def datasets(env_id):
    return {"small": [("random", 4)]}
"""


def test_a_new_family_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "toy_family.py").write_text(textwrap.dedent(TOY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.FAMILIES, "toy", "toy_family")
    try:
        env = registry.make_env("toy")
        assert env.env_id == "toy" and env.site_spec["family"] == "toy"
        assert registry.dataset_plan("toy", "small") == [("random", 4)]
        assert isinstance(registry.demo_plans()["toy"], DemoPlan)
        assert [m.key for m in registry.family("toy").metrics] == ["regret"]
        assert _action_names("toy", env.n_actions) == list(env.action_names)  # the dataset card
        args = build_parser().parse_args(["demo", "--domain", "toy"])  # the demo CLI lists it
        assert args.domain == "toy"
    finally:
        sys.modules.pop("toy_family", None)
