"""The shared contracts: controllers' exact probabilities and the spec grammar."""

import numpy as np
import pytest

from envs.controllers import EpsilonMix, RandomLegal, masked_softmax, parse_component, uniform_legal


def test_uniform_legal_is_zero_on_illegal_actions():
    p = uniform_legal(np.array([True, False, True, True]))
    assert p.tolist() == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3])


def test_masked_softmax_matches_hand_computation():
    p = masked_softmax(np.array([1.0, 5.0, 2.0]), np.array([True, False, True]), temperature=0.5)
    e = np.exp(np.array([2.0, 4.0]) - 4.0)
    assert p.tolist() == pytest.approx([e[0] / e.sum(), 0.0, e[1] / e.sum()])


def test_parse_component_rejects_unknown_options():
    assert parse_component("etd@eps=0.1@temp=2") == ("etd", {"eps": 0.1, "temp": 2.0})
    with pytest.raises(ValueError, match="bad controller option"):
        parse_component("etd@gamma=3")


def test_epsilon_rejects_out_of_range():
    with pytest.raises(ValueError):
        EpsilonMix(RandomLegal(), 1.5)


def test_last_distribution_is_never_shared_between_controllers():
    from envs.registry import make_env

    env = make_env("xor")
    obs, infos = env.reset(seed=0)
    first, second = RandomLegal(), RandomLegal()
    with pytest.raises(
        TypeError
    ):  # the class default is read-only: writing into it would reach every controller
        first.last_distribution["agent_0"] = np.ones(2)
    first.act(env, obs, infos, np.random.default_rng(0))
    assert set(first.last_distribution) == set(env.possible_agents)
    assert len(second.last_distribution) == 0
