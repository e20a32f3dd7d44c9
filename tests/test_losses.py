"""InSPO's loss functions on tiny tensors against hand-computed values."""

import math

import pytest
import torch

from trainer.algos import losses

LN2 = math.log(2.0)


def test_bc_loss_matches_hand_computation():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    actions = torch.tensor([1, 0])
    expected = -(math.log(0.75) + math.log(0.5)) / 2
    assert losses.bc_loss(logits, actions).item() == pytest.approx(expected)
    weights = torch.tensor([2.0, 0.0])
    assert losses.bc_loss(logits, actions, weights).item() == pytest.approx(-math.log(0.75))


def test_floored_log_probs_mixes_uniform_mass_over_legal_actions_only():
    logits = torch.tensor([[0.0, math.log(3.0), 5.0]])
    mask = torch.tensor([[True, True, False]])
    out = losses.floored_log_probs(logits, mask, floor=0.2)
    assert out[0, :2].exp().tolist() == pytest.approx([0.8 * 0.25 + 0.1, 0.8 * 0.75 + 0.1])
    assert out[0, 2].item() == losses.NEG
    # a (numerically) zero-probability legal action gets exactly floor / n_legal
    out = losses.floored_log_probs(torch.tensor([[0.0, -1e4]]), torch.tensor([[True, True]]), floor=1e-3)
    assert out[0, 1].exp().item() == pytest.approx(5e-4)


def test_log_ratios_are_clipped_in_log_space():
    log_pi = torch.log(torch.tensor([0.5, 0.5, 0.2]))
    log_mu = torch.log(torch.tensor([0.001, 0.25, 0.5]))
    out = losses.clipped_log_ratios(log_pi, log_mu, math.log(1e-3), math.log(1e2))
    assert out.tolist() == pytest.approx([math.log(100.0), LN2, math.log(0.4)])
    out = losses.clipped_log_ratios(log_pi, log_mu, math.log(0.5), math.log(1.5))
    assert out.tolist() == pytest.approx([math.log(1.5), math.log(1.5), math.log(0.5)])


def test_teammate_log_weights_sum_teammates_or_neighbours():
    log_r = torch.tensor([[1.0, 2.0, 3.0]])
    everyone = torch.ones(3, 3) - torch.eye(3)
    assert losses.teammate_log_weights(log_r, everyone).tolist() == [[5.0, 4.0, 3.0]]
    chain = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])  # 0 - 1 - 2
    assert losses.teammate_log_weights(log_r, chain).tolist() == [[2.0, 4.0, 2.0]]


def test_remembered_log_ratios_fade_with_age_and_restart_each_episode():
    log_r = torch.tensor([[1.0, 0.0], [0.5, 2.0], [0.0, 1.0], [3.0, -1.0], [1.0, 1.0]])
    episode = torch.tensor([0, 0, 0, 1, 1])
    decay = torch.tensor([0.5, 0.25, 1.0, 0.5, 1.0])  # the last row of each episode's factor is unused
    out = losses.remembered_log_ratios(log_r, episode, decay, -10.0, 10.0)
    expected = torch.tensor([[1.0, 0.0], [1.0, 2.0], [0.25, 1.5], [3.0, -1.0], [2.5, 0.5]])
    torch.testing.assert_close(out, expected)
    # no memory: the per-step ratios; full memory: the log of the product so far; the sum is clipped
    zero = losses.remembered_log_ratios(log_r, episode, torch.zeros(5), -10.0, 10.0)
    torch.testing.assert_close(zero, log_r)
    full = losses.remembered_log_ratios(log_r, episode, torch.ones(5), -10.0, 1.2)
    torch.testing.assert_close(full[:, 0], torch.tensor([1.0, 1.2, 1.2, 1.2, 1.2]))


def test_a_certain_logged_action_keeps_weight_one_whatever_the_advantage():
    log_mu = torch.log(torch.tensor([[0.97, 0.03], [0.5, 0.5]]))
    q = torch.tensor([[0.0, 7.0], [0.0, 7.0]])  # the advantage says "the other action", strongly
    actions = torch.tensor([0, 0])
    mask = torch.ones(2, 2, dtype=torch.bool)
    anchored = losses.anchor_on_certain(log_mu, actions, torch.tensor([True, False]))
    torch.testing.assert_close(anchored[1], log_mu[1])  # an uncertain row keeps the fitted mu
    assert anchored[0, 1] == losses.NEG
    fitted = losses.target_weights(q, log_mu, mask, actions, alpha=1.0, beta=0.0, exp_clip=50.0)
    kept = losses.target_weights(q, anchored, mask, actions, alpha=1.0, beta=0.0, exp_clip=50.0)
    assert float(fitted[0]) < 0.1  # with the fitted mu the closed form moves the row off the logged action
    assert float(kept[0]) == pytest.approx(1.0)
    assert float(kept[1]) == pytest.approx(float(fitted[1]))


def test_soft_td_target_has_reverse_kl_and_entropy_terms():
    reward, next_q = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])
    done = torch.tensor([0.0, 1.0])
    log_pi = torch.log(torch.tensor([[0.5, 0.25], [0.5, 0.25]]))
    log_mu = torch.log(torch.tensor([[0.25, 0.25], [0.25, 0.25]]))
    y = losses.soft_td_target(reward, done, next_q, log_pi, log_mu, gamma=0.5, alpha=0.2, beta=0.1)
    # reg = 0.2 * (ln 2 + 0) + 0.1 * (ln 0.5 + ln 0.25) = -0.1 ln 2
    assert y.tolist() == pytest.approx([1.0 + 0.5 * (2.0 + 0.1 * LN2), 1.0])


def test_pessimistic_baseline_is_below_every_value_by_the_range_or_one_unit():
    assert losses.pessimistic_baseline(torch.tensor([1.0, 2.0, 4.0])).item() == pytest.approx(1.0 - 3.0)
    assert losses.pessimistic_baseline(torch.tensor([1.0, 1.0, 1.0])).item() == pytest.approx(0.0)
    shifted = losses.pessimistic_baseline(torch.tensor([1.0, 2.0, 4.0]) - 10.0)
    assert shifted.item() == pytest.approx(-12.0)  # moves with the rewards: shift-equivariant
    q = torch.arange(101, dtype=torch.float32)
    assert losses.pessimistic_baseline(q, quantile=0.1).item() == pytest.approx(10.0 - 100.0)


def test_unnormalized_local_q_target():
    out = losses.unnormalized_local_q_target(
        torch.tensor([3.0, 3.0]), torch.log(torch.tensor([2.0, 0.0])), -1.0
    )
    assert out.tolist() == pytest.approx([2.0 * 4.0 - 1.0, -1.0])  # weight 0: valued at the baseline


def test_soft_value_and_closed_form_policy():
    q = torch.tensor([[1.0, 2.0, 9.0]])
    mu = torch.tensor([[0.5, 0.5, 0.0]])
    mask = torch.tensor([[True, True, False]])
    log_mu = torch.where(mask, mu.clamp(min=1e-30).log(), torch.full_like(mu, losses.NEG))
    v = losses.soft_value(q, log_mu, mask, alpha=0.1, beta=0.1)
    expected_v = 0.2 * math.log(0.5**0.5 * math.exp(5.0) + 0.5**0.5 * math.exp(10.0))
    assert v.item() == pytest.approx(expected_v, rel=1e-6)
    pi = losses.closed_form_log_policy(q, log_mu, mask, 0.1, 0.1).exp()[0]
    z = torch.tensor([0.5**0.5 * math.exp(5.0), 0.5**0.5 * math.exp(10.0)])
    assert pi[:2].tolist() == pytest.approx((z / z.sum()).tolist(), rel=1e-5)
    assert pi[2].item() == 0.0  # the illegal action, although its Q is the largest


def test_target_weights_are_pi_star_over_mu_with_unit_mean_under_mu():
    q = torch.tensor([[0.0, 0.5, 1.0]]).repeat(3, 1)
    mu = torch.tensor([0.6, 0.3, 0.1])
    log_mu = mu.log().repeat(3, 1)
    mask = torch.ones(3, 3, dtype=torch.bool)
    actions = torch.tensor([0, 1, 2])
    alpha, beta = 0.3, 0.2
    w = losses.target_weights(q, log_mu, mask, actions, alpha, beta)
    pi_star = losses.closed_form_log_policy(q[:1], log_mu[:1], mask[:1], alpha, beta).exp()[0]
    assert w.tolist() == pytest.approx((pi_star / mu).tolist(), rel=1e-5)
    assert (w * mu).sum().item() == pytest.approx(1.0, rel=1e-5)
    # beta = 0 gives the AWR / OMIGA weight exp((Q - V) / alpha)
    w0 = losses.target_weights(q, log_mu, mask, actions, 0.3, 0.0)
    v0 = losses.soft_value(q, log_mu, mask, 0.3, 0.0)
    assert w0.tolist() == pytest.approx(torch.exp((q[0] - v0) / 0.3).tolist(), rel=1e-5)


def test_support_ratio_keeps_a_deterministic_behaviour_at_weight_one_whatever_the_advantages():
    """Where mu is (nearly) deterministic, a large advantage of an action the log never took drops the
    logged action's weight to ~0 without the constraint, and leaves it at 1/mu with it."""
    mu = torch.tensor([[0.998, 0.001, 0.001], [0.7, 0.25, 0.05]])
    log_mu, mask = mu.log(), torch.ones(2, 3, dtype=torch.bool)
    q = torch.tensor([[0.0, 0.0, 5.0], [0.0, 1.0, 5.0]])  # noise on the unlogged action 2
    actions = torch.tensor([0, 1])
    free = losses.target_weights(q, log_mu, mask, actions, 0.3, 0.0)
    assert free[0].item() < 1e-3
    kept = losses.target_weights(q, log_mu, mask, actions, 0.3, 0.0, support_ratio=0.1)
    assert kept[0].item() == pytest.approx(1 / 0.998, rel=1e-5)
    # second row: actions 0 and 1 are in the support (0.25 >= 0.1 * 0.7), action 2 is not (0.05 < 0.07)
    support = losses.supported_actions(log_mu, mask, 0.1)
    assert support.tolist() == [[True, False, False], [True, True, False]]
    pi_star = losses.closed_form_log_policy(q[1:], log_mu[1:], support[1:], 0.3, 0.0).exp()[0]
    assert kept[1].item() == pytest.approx((pi_star[1] / mu[1, 1]).item(), rel=1e-5)
    assert losses.target_weights(
        q, log_mu, mask, torch.tensor([2, 2]), 0.3, 0.0, support_ratio=0.1
    ).tolist() == [0, 0]


def test_target_weight_exponent_is_clipped():
    q = torch.tensor([[0.0, 100.0]])
    log_mu = torch.log(torch.tensor([[0.5, 0.5]]))
    w = losses.target_weights(
        q, log_mu, torch.ones(1, 2, dtype=torch.bool), torch.tensor([0]), 0.1, 0.0, exp_clip=3.0
    )
    assert w.item() == pytest.approx(math.exp(-3.0))


def test_effective_sample_size():
    assert losses.effective_sample_size(torch.ones(4)).item() == pytest.approx(1.0)
    assert losses.effective_sample_size(torch.tensor([1.0, 0.0, 0.0, 0.0])).item() == pytest.approx(0.25)
    assert losses.effective_sample_size(torch.tensor([1.0, 3.0])).item() == pytest.approx(16 / 20)
    log_w = torch.log(torch.tensor([1.0, 3.0])) + 500.0  # stable for huge log-weights
    assert losses.ess_from_log_weights(log_w).item() == pytest.approx(16 / 20, rel=1e-4)
