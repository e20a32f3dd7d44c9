"""Linear advantage heads solved in closed form (trainer/algos/linear_heads.py) and inside InSPO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inspo_helpers import XOR, XOR_UNIFORM, frozen_residual, matrix_dataset

from trainer.algos import linear_heads
from trainer.algos.config import make_config
from trainer.algos.inspo import InSPO
from trainer.logs.dataset import OfflineData

torch.set_num_threads(1)


def _synthetic(n: int, signal: float, seed: int = 0, noise: np.ndarray | float = 1.0):
    """Rows with random propensities and actions drawn from them; the residual is the R-learner's model
    ``sum_a (1[a] - e(a)) theta_a . x`` (times ``signal``) plus noise of std ``noise`` (per row, or one)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.ones((n, 1)), rng.normal(size=(n, 2))], 1)
    e = rng.dirichlet(np.ones(3), size=n)
    act = np.array([rng.choice(3, p=p) for p in e])
    theta = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [-1.0, 0.0, 1.5]])
    d = np.eye(3)[act] - e
    y = signal * np.einsum("na,ad,nd->n", d, theta, x) + rng.normal(size=n) * noise
    block = rng.integers(0, linear_heads.BLOCKS, size=n)
    return x, act, e, y, block, theta


def test_the_closed_form_recovers_each_actions_coefficients_up_to_a_common_shift():
    x, act, e, y, block, theta = _synthetic(20000, 1.0)
    g = linear_heads.block_grams(x, act, e, y, np.ones(len(y)), block)
    fit = linear_heads.solve(g.zz.sum(0), g.zy.sum(0), 1.0).reshape(3, -1)
    # 1[a] - e(a) sums to 0 over actions, so only differences between actions are identified
    np.testing.assert_allclose(fit[1:] - fit[0], theta[1:] - theta[0], atol=0.1)


def test_the_ridge_is_chosen_on_held_out_episodes_and_noise_gains_nothing():
    x, act, e, y, block, _ = _synthetic(8000, 0.0, seed=1)
    ridge, gains = linear_heads.choose_ridge(linear_heads.block_grams(x, act, e, y, np.ones(len(y)), block))
    assert ridge == max(linear_heads.RIDGES)  # pure noise: shrink as far as the grid goes
    assert gains[min(linear_heads.RIDGES)] > 0  # a loose fit loses to "no advantage" on held-out rows
    x, act, e, y, block, _ = _synthetic(8000, 1.0, seed=1)
    ridge, gains = linear_heads.choose_ridge(linear_heads.block_grams(x, act, e, y, np.ones(len(y)), block))
    assert gains[ridge] < -0.1  # a real effect: the fit beats zero on held-out rows


def test_row_weights_enter_the_normal_equations():
    x, act, e, y, block, _ = _synthetic(500, 1.0, seed=2)
    w = np.random.default_rng(3).exponential(size=len(y))
    g = linear_heads.block_grams(x, act, e, y, w, block, chunk=64)
    z = ((np.eye(3)[act] - e)[:, :, None] * x[:, None, :]).reshape(len(y), -1)
    np.testing.assert_allclose(g.zz.sum(0), (z * w[:, None]).T @ z, rtol=1e-10)
    np.testing.assert_allclose(g.zy.sum(0), (z * w[:, None]).T @ y, rtol=1e-10)
    assert g.rows.sum() == len(y)


def test_precision_weights_follow_the_residuals_variance_given_the_value():
    """Two kinds of state, told apart by the baseline's value: calm (residual std 0.1) and busy (std 3).
    Each row's weight is 1 / its kind's residual variance, the same for every row of a kind, mean 1."""
    rng = np.random.default_rng(4)
    busy = rng.random(20000) < 0.3
    value = np.where(busy, rng.uniform(-10, -5, busy.size), rng.uniform(-1, 0, busy.size))
    residual = rng.normal(size=busy.size) * np.where(busy, 3.0, 0.1)
    w = linear_heads.precision_weights(value, residual)
    assert w.mean() == pytest.approx(1.0)
    assert np.median(w[~busy]) / np.median(w[busy]) == pytest.approx(900, rel=0.25)  # (3 / 0.1)^2
    assert linear_heads.precision_weights(np.zeros(0), np.zeros(0)).shape == (0,)


def test_precision_weights_cut_the_error_of_an_effect_hidden_in_busy_rows_noise():
    """The same effect in every row, noise 30x larger in a third of them (the elevator's busy states):
    weighted by precision, the fit's error over repeated logs is several times smaller than with equal
    weights; an estimate that ignored the weights would not move."""
    errors = {"equal": [], "precision": []}
    for seed in range(12):
        busy = np.random.default_rng(100 + seed).random(6000) < 0.3
        x, act, e, y, block, theta = _synthetic(6000, 0.2, seed=seed, noise=np.where(busy, 3.0, 0.1))
        value = np.where(busy, -5.0, -0.5) + 0.01 * np.random.default_rng(seed).normal(size=len(y))
        for kind, w in (("equal", np.ones(len(y))), ("precision", linear_heads.precision_weights(value, y))):
            g = linear_heads.block_grams(x, act, e, y, w, block)
            fit = linear_heads.solve(g.zz.sum(0), g.zy.sum(0), 1.0).reshape(3, -1)
            errors[kind].append(np.sqrt(np.mean((fit[1:] - fit[0] - 0.2 * (theta[1:] - theta[0])) ** 2)))
    assert np.mean(errors["precision"]) < 0.3 * np.mean(errors["equal"])


def test_teammate_memory_needs_linear_heads_time_discount_and_resampling():
    linear = {"estimator": "residual", "adv_heads": "linear", "discount": "time", "horizon_s": 60.0}
    make_config("inspo", overrides={**linear, "teammate_memory_s": 30.0})
    with pytest.raises(ValueError, match="teammate_memory_s=30.0 needs adv_heads='linear'"):
        make_config("inspo", overrides={**linear, "adv_heads": "mlp", "teammate_memory_s": 30.0})
    with pytest.raises(ValueError, match="needs discount='time'"):
        make_config("inspo", overrides={**linear, "discount": "step", "teammate_memory_s": 30.0})
    with pytest.raises(ValueError, match="resample=true"):
        make_config("inspo", overrides={**linear, "resample": False, "teammate_memory_s": 30.0})


def test_certain_anchor_needs_the_logs_probabilities():
    with pytest.raises(ValueError, match="certain_anchor=true needs exact_propensity=true"):
        make_config("inspo", overrides={"certain_anchor": True})


def test_adv_weights_needs_linear_heads():
    with pytest.raises(ValueError, match="adv_weights='precision' needs adv_heads='linear'"):
        make_config("inspo", overrides={"estimator": "residual", "adv_weights": "precision"})
    with pytest.raises(ValueError, match="adv_weights"):
        make_config("inspo", overrides={"estimator": "residual", "adv_heads": "linear", "adv_weights": "x"})


def test_inspo_with_precision_weights_recovers_the_known_advantage_on_uniform_xor():
    """On XOR every row has the same state, so the weights are all 1 and the estimand is unchanged."""
    algo = _frozen_linear(resample=False, adv_weights="precision")
    algo.setup(matrix_dataset(XOR, XOR_UNIFORM, 4000, seed=1))
    algo.fit()
    assert _gaps(algo) == pytest.approx(torch.ones(2), abs=0.15)


def _frozen_linear(**overrides) -> InSPO:
    """InSPO with the actor frozen at mu and linear heads, on uniform-XOR data (estimand A^mu); the
    sequential refit runs too (every 10 of 30 iterations)."""
    return frozen_residual(**{"adv_heads": "linear", "adv_refit_every": 10, "iterations": 30, **overrides})


def _gaps(algo: InSPO) -> torch.Tensor:
    """Each agent's advantage of action 0 over action 1 (member mean) on XOR's one state."""
    mask = torch.ones(2, 2, dtype=torch.bool)
    log_mu = torch.log(torch.full((2, 2), 0.5))
    with torch.no_grad():
        adv = algo._centred_advantages(torch.ones(2, 1), torch.ones(2, 1), torch.tensor([0, 1]), mask, log_mu)
    return adv.mean(1)[:, 0] - adv.mean(1)[:, 1]


def test_inspo_with_linear_heads_recovers_the_known_advantage_on_uniform_xor():
    """XOR r = [[0, 1], [1, -2]] under the uniform behaviour: action 0 is worth 0.5 (0 - 1) + 0.5 (1 + 2) = 1
    more than action 1, for either agent (tests/test_advantage.py checks the network heads the same way).
    Teammates as logged (resample off), so the estimand is A^mu."""
    algo = _frozen_linear(resample=False)
    algo.setup(matrix_dataset(XOR, XOR_UNIFORM, 4000, seed=1))
    algo.fit()
    assert algo.adv_opt is None and "adv_heads" not in algo.optimizers()
    assert _gaps(algo) == pytest.approx(torch.ones(2), abs=0.15)
    assert float(algo.adv_heads.theta.std(1).max()) > 0  # bootstrap members differ: kappa acts on that


def test_the_sequential_refit_weights_rows_by_the_updated_teammates_ratios():
    """Once agent 0 plays action 1 with probability 0.9, agent 1's action 0 is worth
    0.1 (0 - 1) + 0.9 (1 + 2) = 2.6 more: its refit must see that, not the log's 1."""
    algo = _frozen_linear(ratio_max=10.0)
    algo.setup(matrix_dataset(XOR, XOR_UNIFORM, 8000, seed=1))
    algo.fit()
    last = [m for m in algo.actor.net.bodies[0].modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, float(np.log(9.0))]))
    algo.refit_linear_agent(1)
    assert float(_gaps(algo)[1]) == pytest.approx(2.6, abs=0.3)


def _teammate_chooses_first(episodes: int, seed: int, settled: bool = False) -> OfflineData:
    """Two-step episodes, 1 s apart: agent 0 picks a0 at step 0 (agent 1 has one legal action), agent 1
    picks a1 at step 1 (agent 0 has one), both uniformly; the team is paid XOR[a0, a1] at step 1. Agent 1
    never sees a0, so its advantage depends on how agent 0 plays at a step before its own decision.
    ``settled``: agent 0 always plays 0, logged with probability 1."""
    rng = np.random.default_rng(seed)
    a0, a1 = rng.integers(0, 2, episodes), rng.integers(0, 2, episodes)
    if settled:
        a0[:] = 0
    e = episodes
    actions = np.zeros((e, 2, 2), np.int64)
    actions[:, 0, 0], actions[:, 1, 1] = a0, a1
    masks = np.zeros((e, 2, 2, 2), bool)
    masks[:, 0, 0], masks[:, 1, 1] = True, True  # the chooser has both actions
    masks[:, 0, 1, 0], masks[:, 1, 0, 0] = True, True  # the other has only action 0
    reward = np.zeros((e, 2), np.float32)
    reward[:, 1] = XOR[a0, a1]
    prob = np.where(masks.sum(-1) > 1, 0.5, 1.0).astype(np.float32)
    if settled:
        prob[:, 0, 0] = 1.0
    return OfflineData(
        env_id="",
        agent_ids=["agent_0", "agent_1"],
        obs=np.ones((e, 2, 2, 1), np.float32),
        actions=actions,
        masks=masks,
        rewards=np.repeat(reward[..., None], 2, axis=2),
        team_rewards=reward,
        states=np.ones((e, 2, 1), np.float32),
        terminated=np.tile([False, True], (e, 1)),
        truncated=np.zeros((e, 2), bool),
        behavior_prob=prob,
        filled=np.ones((e, 2), bool),
        episode_ids=[f"ep{k}" for k in range(e)],
        fingerprint=f"two-step-{seed}",
        ts=np.tile([0.0, 1.0], (e, 1)),
    )


@pytest.mark.parametrize("memory_s, expected_gap", [(0.0, 1.0), (1e4, 2.6)])
def test_teammate_memory_lets_the_refit_see_a_teammate_choice_made_steps_earlier(memory_s, expected_gap):
    """Agent 0 now plays action 1 with probability 0.9 at step 0. Weighting agent 1's step-1 rows by agent
    0's ratio at step 1 (where it had no choice) leaves the log's gap of 1; remembering its step-0 ratio gives
    0.1 (0 - 1) + 0.9 (1 + 2) = 2.6, as agent 1 will face it."""
    time = {"discount": "time", "horizon_s": 100.0}
    algo = _frozen_linear(ratio_max=10.0, teammate_memory_s=memory_s, **time)
    algo.setup(_teammate_chooses_first(8000, seed=1))
    algo.fit()
    last = [m for m in algo.actor.net.bodies[0].modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, float(np.log(9.0))]))
    ess = algo.refit_linear_agent(1)
    assert float(_gaps(algo)[1]) == pytest.approx(expected_gap, abs=0.3)
    # weights 1.8 and 0.2 on the two halves of the rows: an effective share of 1 / mean(w^2) = 0.61
    assert ess == pytest.approx(1.0 if memory_s == 0 else 1 / ((1.8**2 + 0.2**2) / 2), abs=0.05)


def test_an_agent_whose_logged_actions_were_all_certain_keeps_them_and_its_teammate_still_learns():
    """A round of bench/sequential_rounds.py: agent 0's choice is settled (it always played 0, with
    probability 1), only agent 1 randomised. The sequential refit has no random rows of agent 0 to weigh; it
    must not fail on them. Agent 1's action 1 is worth XOR[0, 1] - XOR[0, 0] = 1 more than its action 0."""
    data = _teammate_chooses_first(4000, seed=2, settled=True)
    algo = _frozen_linear(discount="time", horizon_s=100.0)
    algo.setup(data)
    algo.fit()  # refits every agent, agent 0 on no rows
    assert algo.refit_linear_agent(0) == 1.0
    assert float(_gaps(algo)[1]) == pytest.approx(-1.0, abs=0.3)


def test_a_resumed_linear_run_ends_where_an_uninterrupted_one_does(tmp_path):
    data = matrix_dataset(XOR, XOR_UNIFORM, 2000, seed=2)
    whole = _frozen_linear(actor_lr=1e-3, iterations=25, seed=3)
    whole.setup(data)
    whole.fit()
    first = _frozen_linear(actor_lr=1e-3, iterations=25, seed=3)
    first.setup(data)
    first.fit(iterations=12)
    first.save(tmp_path / "ckpt.pt")
    second = _frozen_linear(actor_lr=1e-3, iterations=25, seed=3)
    second.setup(data)
    second.load(tmp_path / "ckpt.pt")
    second.fit()
    assert torch.equal(second.adv_heads.theta, whole.adv_heads.theta)
    for p, q in zip(second.actor.parameters(), whole.actor.parameters(), strict=True):
        assert torch.equal(p, q)


def test_linear_heads_belong_to_the_residual_estimator():
    with pytest.raises(ValueError, match="adv_heads='linear' needs estimator='residual'"):
        make_config("inspo", overrides={"adv_heads": "linear"})
    with pytest.raises(ValueError, match="adv_heads"):
        make_config("inspo", overrides={"estimator": "residual", "adv_heads": "tree"})


def test_an_ordinal_block_enters_as_a_quadratic_in_its_level():
    obs = torch.tensor([[0.5, 0.0, 0.0, 1.0, 2.0], [0.5, 0.0, 0.0, 0.0, 4.0], [0.5, 1.0, 0.0, 0.0, 0.0]])
    mean, std = torch.tensor([0.5, 0.0, 0.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0])
    x = linear_heads.linear_features(obs, mean, std, [(1, 4)])
    # constant, the z-scored columns outside the block (0 and 4), then [any level, level / 2, its square]
    expected = [[1, 0, 0, 1, 1, 1], [1, 0, 1, 0, 0, 0], [1, 0, -1, 1, 0, 0]]
    torch.testing.assert_close(x, torch.tensor(expected, dtype=torch.float32))
    heads = linear_heads.LinearAdvantageHeads(5, 2, 3, 4, mean, std, ordinal=[(1, 4)])
    assert heads.theta.shape == (2, 4, 3, 6) and torch.equal(heads.features(obs), x)


def test_the_ordinal_fit_pools_levels_where_one_hot_levels_each_carry_their_own_noise():
    """A per-level effect that is smooth in the level (linear here), 20 levels with few rows each: the
    quadratic's fit is closer to the truth than one coefficient per level, ridge chosen on held-out blocks."""
    rng = np.random.default_rng(4)
    n, levels = 4000, 20
    level = rng.integers(0, levels, size=n)
    onehot = torch.as_tensor(np.eye(levels)[level], dtype=torch.float32)
    truth = 0.4 * (level / (levels - 1) - 0.5)  # effect of action 1 over action 0
    e = np.full((n, 2), 0.5)
    act = rng.integers(0, 2, size=n)
    y = (np.eye(2)[act] - e)[:, 1] * truth + rng.normal(size=n) * 0.5  # A(1) - A(0) = truth
    block = rng.integers(0, linear_heads.BLOCKS, size=n)
    mean, std = onehot.mean(0), onehot.std(0)
    errors = {}
    for name, ordinal in (("one-hot", []), ("ordinal", [(0, levels)])):
        x = linear_heads.linear_features(onehot, mean, std, ordinal).double().numpy()
        g = linear_heads.block_grams(x, act, e, y, np.ones(n), block)
        ridge, _ = linear_heads.choose_ridge(g)
        theta = linear_heads.solve(g.zz.sum(0), g.zy.sum(0), ridge).reshape(2, -1)
        per_level = np.eye(levels)
        xl = linear_heads.linear_features(torch.as_tensor(per_level, dtype=torch.float32), mean, std, ordinal)
        fitted = xl.double().numpy() @ (theta[1] - theta[0])
        errors[name] = float(np.sqrt(np.mean((fitted - 0.4 * (np.arange(levels) / (levels - 1) - 0.5)) ** 2)))
    assert errors["ordinal"] < 0.5 * errors["one-hot"], errors  # measured 0.007 against 0.05


def test_adv_ordinal_needs_linear_heads_and_an_env_that_declares_an_ordered_block():
    with pytest.raises(ValueError, match="adv_ordinal=true needs adv_heads='linear'"):
        make_config("inspo", overrides={"estimator": "residual", "adv_ordinal": True})
    algo = _frozen_linear(adv_ordinal=True)
    with pytest.raises(ValueError, match="declares no ordered one-hot block"):
        algo.setup(matrix_dataset(XOR, XOR_UNIFORM, 200, seed=1))


def test_the_elevator_declares_its_decision_floor_as_ordered():
    from envs.registry import make_env, ordinal_blocks

    env = make_env("elevator:cb10x4:downpeak", hours=0.1)
    obs, infos = env.reset(seed=0)
    [(start, stop)] = ordinal_blocks("elevator:cb10x4:downpeak", env.obs_dim)
    assert stop - start == env.building.n_floors
    for _ in range(200):
        for agent, o in obs.items():
            block = o[start:stop]
            assert set(np.unique(block)) <= {0.0, 1.0} and block.sum() <= 1  # at most one floor set
            assert block.sum() == 1 or not infos[agent]["decision"]  # and one wherever the car has a choice
        masks = {a: i["action_mask"] for a, i in infos.items()}
        obs, _, terms, truncs, infos = env.step({a: int(np.flatnonzero(m)[-1]) for a, m in masks.items()})
        if all(terms.values()) or all(truncs.values()):
            break


def test_the_elevator_teammate_features_count_the_other_cars_the_simulator_has_around_the_deciding_floor():
    from envs.elevator.core import IDLE
    from envs.registry import make_env, teammate_features

    env = make_env("elevator:cb10x4:downpeak", hours=0.2)
    features = teammate_features("elevator:cb10x4:downpeak", env.obs_dim)
    obs, infos = env.reset(seed=1)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(400):
        core = env.core
        for c, agent in enumerate(env.possible_agents):
            f = features(obs[agent][None])[0]
            if not infos[agent]["decision"]:
                continue
            floor = int(np.argmax(obs[agent][8 + 10 : 8 + 20]))
            others = [k for k in range(4) if k != c]
            pos = core.pos[0, others]
            idle = core.mode[0, others] == IDLE
            assert f[3] == (pos > floor + 0.5).sum() and f[4] == (pos < floor - 0.5).sum()
            assert f[6] == ((pos > floor + 0.5) & idle).sum()
            assert f[8] == pytest.approx(np.abs(pos - floor).min() / 10, abs=1e-5)
            checked += 1
        masks = {a: i["action_mask"] for a, i in infos.items()}
        obs, _, terms, truncs, infos = env.step(
            {a: int(rng.choice(np.flatnonzero(m))) for a, m in masks.items()}
        )
        if all(terms.values()) or all(truncs.values()):
            break
    assert checked > 100


def test_adv_teammates_adds_the_envs_features_to_the_heads_and_refuses_envs_without_them():
    heads = linear_heads.LinearAdvantageHeads(
        5, 2, 3, 4, torch.zeros(5), torch.ones(5), teammates=lambda o: o[:, :2] * 2
    )
    obs = torch.arange(10, dtype=torch.float32).reshape(2, 5)
    assert heads.theta.shape[-1] == 1 + 5 + 2
    torch.testing.assert_close(heads.features(obs)[:, -2:], obs[:, :2] * 2)
    with pytest.raises(ValueError, match="adv_teammates=true needs adv_heads='linear'"):
        make_config("inspo", overrides={"estimator": "residual", "adv_teammates": True})
    algo = _frozen_linear(adv_teammates=True)
    with pytest.raises(ValueError, match="declares no teammate features"):
        algo.setup(matrix_dataset(XOR, XOR_UNIFORM, 200, seed=1))


def test_context_heads_read_only_the_declared_columns_with_the_ordinal_block_inside_them():
    heads = linear_heads.LinearAdvantageHeads(
        6, 2, 3, 4, torch.zeros(6), torch.ones(6), ordinal=[(2, 5)], columns=[0, 2, 3, 4]
    )
    assert heads.ordinal == [(1, 4)] and heads.theta.shape[-1] == 1 + 1 + 3
    obs = torch.tensor([[0.5, 9.0, 0.0, 1.0, 0.0, 7.0]])
    other = obs.clone()
    other[0, [1, 5]] = torch.tensor([-3.0, 2.0])  # columns the heads do not read
    torch.testing.assert_close(heads.features(obs), heads.features(other))
    torch.testing.assert_close(heads.features(obs), torch.tensor([[1.0, 0.5, 1.0, 0.5, 0.25]]))
    with pytest.raises(ValueError, match="must hold the ordinal block"):
        linear_heads.LinearAdvantageHeads(
            6, 2, 3, 4, torch.zeros(6), torch.ones(6), [(2, 5)], columns=[0, 2, 4]
        )


def test_adv_features_context_needs_linear_heads_and_an_env_that_declares_its_decision():
    with pytest.raises(ValueError, match="adv_features='context' needs adv_heads='linear'"):
        make_config("inspo", overrides={"estimator": "residual", "adv_features": "context"})
    algo = _frozen_linear(adv_features="context")
    with pytest.raises(ValueError, match="declares no decision context"):
        algo.setup(matrix_dataset(XOR, XOR_UNIFORM, 200, seed=1))


def test_the_elevator_decision_context_is_one_direction_one_mode_and_the_deciding_floor():
    from envs.registry import decision_context, make_env, ordinal_blocks

    env = make_env("elevator:cb10x4:downpeak", hours=0.1)
    context = decision_context("elevator:cb10x4:downpeak", env.obs_dim)
    columns = [k for start, stop in context for k in range(start, stop)]
    [(start, stop)] = ordinal_blocks("elevator:cb10x4:downpeak", env.obs_dim)
    assert columns[-(stop - start) :] == list(range(start, stop))  # the decision floor, read whole
    obs, infos = env.reset(seed=2)
    checked = 0
    for _ in range(200):
        for agent, o in obs.items():
            if infos[agent]["decision"]:
                assert o[1:4].sum() == 1 and o[4:7].sum() == 1 and o[start:stop].sum() == 1
                checked += 1
        masks = {a: i["action_mask"] for a, i in infos.items()}
        obs, _, terms, truncs, infos = env.step({a: int(np.flatnonzero(m)[-1]) for a, m in masks.items()})
        if all(terms.values()) or all(truncs.values()):
            break
    assert checked > 20
