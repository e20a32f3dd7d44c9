"""The residual advantage estimator: its pure pieces on tiny inputs, and recovery of a known advantage."""

import numpy as np
import pytest
import torch
from inspo_helpers import XOR, XOR_UNIFORM, frozen_residual, matrix_dataset

from trainer.algos import advantage, losses, make_algorithm
from trainer.algos.data import build_transitions, discounted_returns_to_go

torch.set_num_threads(1)


def test_centred_advantages_have_zero_mean_under_mu_and_zero_on_illegal_actions():
    adv = torch.tensor([[[1.0, 2.0, 5.0]], [[0.0, -1.0, 3.0]]])  # [B=2, M=1, A=3]
    mu = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = losses.centre_advantages(adv, mu, mask)
    assert torch.allclose((out[:, 0] * mu).sum(-1), torch.zeros(2), atol=1e-6)
    assert out[0, 0, 2] == 0.0
    assert torch.allclose(out[0, 0, :2], torch.tensor([-0.5, 0.5]))


def test_residual_loss_ignores_rows_whose_action_was_certain():
    adv = torch.zeros(2, 1, 2, requires_grad=True)
    certain = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = losses.residual_advantage_loss(
        adv, torch.tensor([0, 0]), certain, torch.tensor([3.0, -2.0]), torch.ones(2, 1)
    )
    loss.backward()
    assert torch.all(adv.grad == 0)
    # with a random action the prediction is A(a) - E_e[A]: the residual regression's fitted value
    adv2 = torch.tensor([[[0.0, 1.0]]])
    half = torch.tensor([[0.5, 0.5]])
    value = losses.residual_advantage_loss(
        adv2, torch.tensor([1]), half, torch.tensor([0.5]), torch.ones(1, 1)
    )
    assert float(value) == pytest.approx(0.0)


def test_pessimistic_advantage_subtracts_kappa_member_spread():
    adv = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])  # two members disagree on action 0 only
    out = losses.pessimistic_advantage(adv, kappa=1.0)
    assert torch.allclose(out, torch.tensor([[2.0 - float(torch.tensor([1.0, 3.0]).std()), 0.0]]))
    assert torch.equal(losses.pessimistic_advantage(adv, kappa=0.0), adv.mean(1))


def test_episode_folds_keep_episodes_whole_and_use_every_fold():
    episode = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4])
    fold = advantage.episode_folds(episode, 2, torch.Generator().manual_seed(0))
    for e in range(5):
        assert len(set(fold[episode == e].tolist())) == 1
    assert set(fold.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="one episode per fold"):
        advantage.episode_folds(torch.tensor([0, 0]), 2, torch.Generator())


def test_lambda_returns_interpolate_between_monte_carlo_and_one_step_td():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 7.0])  # episodes [0..2] and [3..4]
    done = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0])
    nxt = torch.tensor([1, 2, 2, 4, 4])
    disc = torch.full((5,), 0.5)
    values = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])
    mc = advantage.lambda_returns(rewards, disc, done, nxt, values, lam=1.0)
    assert torch.allclose(mc, torch.tensor([1 + 0.5 * (2 + 0.5 * 3), 2 + 0.5 * 3, 3.0, 5 + 0.5 * 7, 7.0]))
    td = advantage.lambda_returns(rewards, disc, done, nxt, values, lam=0.0)
    assert torch.allclose(td, torch.tensor([1 + 0.5 * 20, 2 + 0.5 * 30, 3.0, 5 + 0.5 * 50, 7.0]))


def test_propensities_use_the_logged_probability_and_split_the_rest_like_mu():
    log_mu = torch.log(torch.tensor([[[0.5, 0.3, 0.2]], [[0.5, 0.3, 0.2]]]))  # [K=2, N=1, A=3]
    actions = torch.tensor([[0], [1]])
    logged = torch.tensor([[0.8], [float("nan")]])
    e = advantage.propensities(log_mu, actions, logged)
    assert torch.allclose(e[0, 0], torch.tensor([0.8, 0.2 * 0.6, 0.2 * 0.4]))
    assert torch.allclose(e[1, 0], torch.tensor([0.5, 0.3, 0.2]))  # unknown: the fitted mu


def test_time_discount_uses_the_seconds_between_decisions():
    data = matrix_dataset(XOR, XOR_UNIFORM, 4, seed=0)
    # two steps per episode, 10 s then the end; rewards 1, 1
    data.obs = np.repeat(data.obs, 2, axis=1)
    data.actions = np.repeat(data.actions, 2, axis=1)
    data.masks = np.repeat(data.masks, 2, axis=1)
    data.rewards = np.ones((4, 2, 2), np.float32)
    data.team_rewards = np.ones((4, 2), np.float32)
    data.states = np.repeat(data.states, 2, axis=1)
    data.terminated = np.array([[False, True]] * 4)
    data.truncated = np.zeros((4, 2), bool)
    data.behavior_prob = np.repeat(data.behavior_prob, 2, axis=1)
    data.filled = np.ones((4, 2), bool)
    data.ts = np.array([[0.0, 10.0]] * 4)
    d = build_transitions(data, gamma=0.99, reward_scale=1.0, discount="time", horizon_s=20.0)
    assert d.returns[0] == pytest.approx(1.0 + np.exp(-0.5))
    assert d.discounts[0] == pytest.approx(np.exp(-0.5))
    step = build_transitions(data, gamma=0.9, reward_scale=1.0)
    assert step.returns[0] == pytest.approx(1.9)
    data.ts = None
    with pytest.raises(ValueError, match="ts column"):
        build_transitions(data, gamma=0.99, discount="time", horizon_s=20.0)


def test_discounted_returns_accept_per_step_discounts():
    rewards = np.array([[1.0, 1.0, 1.0]])
    filled = np.ones((1, 3), bool)
    per_step = discounted_returns_to_go(rewards, filled, np.array([[0.5, 0.1, 0.9]]))
    assert per_step[0].tolist() == pytest.approx([1 + 0.5 * (1 + 0.1), 1.1, 1.0])


def test_residual_estimator_recovers_the_known_advantage_on_uniform_xor():
    """Uniform XOR data: agent 0's action 0 is worth E[r|a0=0] - E[r|a0=1] = 0.5 - (-0.5) = 1 more; the
    heads (actor frozen at mu, so the estimand is A^mu) must find it in reward units."""
    data = matrix_dataset(XOR, XOR_UNIFORM, 4000, seed=1)
    algo = frozen_residual()
    algo.setup(data)
    algo.fit()
    mask = torch.ones(2, 2, dtype=torch.bool)
    log_mu = torch.log(torch.full((2, 2), 0.5))
    with torch.no_grad():
        adv = algo._centred_advantages(
            torch.ones(2, 1), torch.ones(2, 1), torch.tensor([0, 1]), mask, log_mu
        ).mean(1)
    # both agents: action 0 beats action 1 by 1 (XOR is symmetric)
    assert float(adv[0, 0] - adv[0, 1]) == pytest.approx(1.0, abs=0.15)
    assert float(adv[1, 0] - adv[1, 1]) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("credit, expected", [("team", 1.0), ("local", -1.0), ("local+neighbours", 2.0)])
def test_reward_credit_makes_each_agents_return_its_own_reward_plus_its_neighbours(credit, expected):
    """Team reward XOR (agent 0's action 0 worth +1), but the log's per-agent rewards say otherwise:
    r_0 = -1[a_0 = 0] and r_1 = 3 * 1[a_0 = 0]. Agent 0's advantage of action 0 over 1 is then +1 on the
    team reward, -1 on its own and -1 + 3 = 2 on its own plus its neighbour's: the heads must follow it."""
    import dataclasses

    data = matrix_dataset(XOR, XOR_UNIFORM, 4000, seed=1)
    a0_zero = (data.actions[..., 0] == 0).astype(np.float32)  # [E, 1]
    rewards = np.stack([-a0_zero, 3.0 * a0_zero], axis=-1)
    data = dataclasses.replace(data, rewards=rewards)
    algo = frozen_residual(reward_credit=credit)
    algo.setup(data, {"agent_0": ["agent_1"], "agent_1": ["agent_0"]})
    algo.fit()
    mask = torch.ones(1, 2, dtype=torch.bool)
    with torch.no_grad():
        adv = algo._centred_advantages(
            torch.ones(1, 1), torch.ones(1, 1), torch.tensor([0]), mask, torch.log(torch.full((1, 2), 0.5))
        ).mean(1)
    assert float(adv[0, 0] - adv[0, 1]) == pytest.approx(expected, abs=0.2)


def test_reward_credit_is_checked_against_the_estimator_and_the_neighbour_graph():
    with pytest.raises(ValueError, match="reward_credit='local' needs estimator='residual'"):
        make_algorithm("inspo", overrides={"reward_credit": "local"})
    with pytest.raises(ValueError, match="config reward_credit must be one of"):
        make_algorithm("inspo", overrides={"estimator": "residual", "reward_credit": "neighbours"})
    algo = frozen_residual(reward_credit="local+neighbours")
    with pytest.raises(ValueError, match="needs the env's neighbour graph"):
        algo.setup(matrix_dataset(XOR, XOR_UNIFORM, 40, seed=1))


@pytest.mark.parametrize(
    "override, field",
    [
        ({"estimator": "critic"}, "estimator"),
        ({"lam": 1.5}, "lam"),
        ({"kappa": -1.0}, "kappa"),
        ({"value_folds": 1}, "value_folds"),
        ({"discount": "time"}, "horizon_s"),  # a time horizon needs its seconds
    ],
)
def test_residual_settings_are_checked_in_the_config_like_every_other_field(override, field):
    from trainer.algos.config import InSPOConfig, make_config
    from trainer.algos.inspo import InSPO

    with pytest.raises(ValueError, match=f"config {field} must be"):
        make_config("inspo", overrides=override)
    with pytest.raises(ValueError, match=f"config {field} must be"):
        InSPO(InSPOConfig(**override))  # a config built in code is checked by the same rules


def test_truth_bench_reliability_bounds_the_correlation_an_estimator_can_reach():
    """bench/advantage_truth.py's summary: a truth made of pure simulation noise has reliability ~0 (so a
    ceiling near 0), and a truth with real spread across pairs has reliability near 1."""
    from bench.advantage_truth import summarize

    rng = np.random.default_rng(0)

    def rows(signal: np.ndarray, noise: float) -> list[dict]:
        even, odd = (
            signal + noise * rng.normal(size=len(signal)),
            signal + noise * rng.normal(size=len(signal)),
        )
        return [
            {"truth": (e + o) / 2, "se": noise / 2, "truth_even": e, "truth_odd": o, "est": s, "action": 1}
            for e, o, s in zip(even, odd, signal, strict=True)
        ]

    noise_only = summarize(rows(np.zeros(400), 1.0), ["est"])
    assert abs(noise_only["truth"]["reliability"]) < 0.25
    signal = rng.normal(size=400)
    clean = summarize(rows(signal, 0.1), ["est"])
    assert clean["truth"]["reliability"] > 0.95
    assert clean["est"]["corr"] > 0.95 and clean["est"]["corr_disattenuated"] == pytest.approx(
        clean["est"]["corr"] / clean["truth"]["ceiling"]
    )
    assert clean["truth"]["mean"] == pytest.approx(np.mean([r["truth"] for r in rows(signal, 0.0)]), abs=0.05)
