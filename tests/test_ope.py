"""Off-policy evaluation: PDWIS against a hand computation, FQE on a bandit, intervals that cover the
simulated truth on XOR and Bridge with a stochastic logger, and the warnings a useless log must raise."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from envs.controllers import build_controller
from envs.registry import make_env
from envs.seeds import evaluation_seeds
from trainer.collect import collect
from trainer.logs import OfflineData, open_log
from trainer.ope import FQEConfig, evaluate_offline, fqe, pdwis
from trainer.rollout import run_episode


def _data(actions, rewards, mu, masks=None, n_actions=2, states=None):
    actions = np.asarray(actions, np.int64)
    E, T, N = actions.shape
    masks = np.ones((E, T, N, n_actions), bool) if masks is None else masks
    return OfflineData(
        env_id="test",
        agent_ids=[f"a{i}" for i in range(N)],
        obs=np.zeros((E, T, N, 1), np.float32),
        actions=actions,
        masks=masks,
        rewards=np.zeros((E, T, N), np.float32),
        team_rewards=np.asarray(rewards, np.float32),
        states=np.zeros((E, T, 1), np.float32) if states is None else states,
        terminated=np.zeros((E, T), bool),
        truncated=np.zeros((E, T), bool),
        behavior_prob=np.asarray(mu, np.float32),
        filled=np.ones((E, T), bool),
    )


def test_pdwis_equals_the_hand_computation():
    # 2 episodes, 2 steps, 2 agents. Target probabilities of the logged actions, and the logger's.
    pi = np.array([[[0.9, 0.5], [0.2, 1.0]], [[0.1, 0.5], [0.8, 0.6]]])
    mu = np.array([[[0.5, 0.5], [0.4, 0.5]], [[0.5, 0.25], [0.5, 0.3]]])
    r = np.array([[1.0, 2.0], [3.0, -1.0]])
    gamma = 0.9
    # step weights: products over agents, cumulated over time
    w0 = [0.9 / 0.5 * 0.5 / 0.5, 0.1 / 0.5 * 0.5 / 0.25]  # 1.8, 0.4
    w1 = [w0[0] * (0.2 / 0.4) * (1.0 / 0.5), w0[1] * (0.8 / 0.5) * (0.6 / 0.3)]  # 1.8, 1.28
    hand = (w0[0] * 1 + w0[1] * 3) / sum(w0) + gamma * (w1[0] * 2 + w1[1] * -1) / sum(w1)
    res = pdwis(pi, mu, r, np.ones((2, 2), bool), gamma=gamma, bootstrap=0)
    assert res.value == pytest.approx(hand, rel=1e-9)
    assert res.ess == pytest.approx(sum(w1) ** 2 / sum(w**2 for w in w1), rel=1e-9)
    assert res.matched_episodes == 2
    # clipping the per-step joint ratio at 1.5 changes exactly the weights above it
    clipped = pdwis(pi, mu, r, np.ones((2, 2), bool), gamma=gamma, clip_step=1.5, bootstrap=0)
    c0 = [1.5, 0.4]
    c1 = [1.5 * 1.0, 0.4 * 1.5]
    hand_c = (c0[0] * 1 + c0[1] * 3) / sum(c0) + gamma * (c1[0] * 2 + c1[1] * -1) / sum(c1)
    assert clipped.value == pytest.approx(hand_c, rel=1e-9)


def test_pdwis_survives_many_agents_in_log_space():
    # 64 agents x 200 steps: the raw product underflows to 0, log space keeps the normalised weights exact.
    rng = np.random.default_rng(0)
    E, T, N = 8, 200, 64
    mu = np.full((E, T, N), 0.5)
    pi = np.where(rng.random((E, T, N)) < 0.5, 0.4, 0.6)
    r = rng.random((E, T))
    res = pdwis(pi, mu, r, np.ones((E, T), bool), bootstrap=0)
    assert np.isfinite(res.value) and 1.0 <= res.ess <= E


def test_fqe_on_a_bandit():
    # One step, two agents, rewards by joint action; the target plays (1, 0) deterministically.
    rng = np.random.default_rng(1)
    E = 400
    actions = rng.integers(0, 2, (E, 1, 2))
    payoff = np.array([[0.0, 1.0], [5.0, 2.0]])
    rewards = payoff[actions[:, 0, 0], actions[:, 0, 1]][:, None] + rng.normal(0, 0.1, (E, 1))
    dist = np.zeros((E, 1, 2, 2))
    dist[:, :, 0, 1] = 1.0
    dist[:, :, 1, 0] = 1.0
    states = rng.normal(0, 1, (E, 1, 3)).astype(np.float32)  # irrelevant noise features
    res = fqe(
        states,
        actions,
        rewards,
        np.ones((E, 1), bool),
        dist,
        np.ones((E, 1, 2, 2), bool),
        1.0,
        FQEConfig(hidden=64, iterations=2, steps_per_iteration=150, batch_size=256),
        bootstrap=100,
    )
    assert res.value == pytest.approx(5.0, abs=0.3)
    # a stochastic target: the expectation over its joint actions
    dist2 = np.full((E, 1, 2, 2), 0.5)
    res2 = fqe(
        states,
        actions,
        rewards,
        np.ones((E, 1), bool),
        dist2,
        np.ones((E, 1, 2, 2), bool),
        1.0,
        FQEConfig(hidden=64, iterations=2, steps_per_iteration=150, batch_size=256, samples=16),
        bootstrap=0,
    )
    assert res2.value == pytest.approx(payoff.mean(), abs=0.3)


def _truth(env_id: str, spec_or_controller, n: int = 32) -> float:
    env = make_env(env_id)
    controller = (
        build_controller(env_id, spec_or_controller)
        if isinstance(spec_or_controller, str)
        else spec_or_controller
    )
    return float(np.mean([run_episode(env, controller, s).episode_return for s in evaluation_seeds(n)]))


@pytest.fixture(scope="module")
def bridge_log(tmp_path_factory):
    out = tmp_path_factory.mktemp("bridge") / "log"
    collect("bridge", out, controller="optimal@eps=0.3", episodes=300, progress=False)
    return open_log(out), out


def test_wis_interval_covers_the_simulated_truth_on_bridge(bridge_log):
    loaded, path = bridge_log
    for spec in ("optimal@eps=0.1", "optimal@eps=0.5"):
        report = evaluate_offline(spec, str(path), bootstrap=200, run_fqe=False, data=loaded)
        truth = _truth("bridge", spec)
        lo, hi = report.wis_ci
        assert lo <= truth <= hi, (spec, truth, report.wis_ci)
        assert report.ess > 10 and report.trustworthy
    # the ranking: less exploration is better on Bridge, and OPE says so
    better = evaluate_offline("optimal@eps=0.1", str(path), bootstrap=0, run_fqe=False, data=loaded).wis
    worse = evaluate_offline("optimal@eps=0.5", str(path), bootstrap=0, run_fqe=False, data=loaded).wis
    assert better > worse


def test_xor_learned_policy_wis_and_fqe_cover_the_truth(tmp_path):
    import torch

    from trainer.export import export_policy
    from trainer.nets import PolicyNet
    from trainer.served_policies import onnx_controller

    collect("xor", tmp_path / "log", controller="uniform", episodes=400, progress=False)
    torch.manual_seed(4)
    policy = PolicyNet(1, 2, 2, hidden=(8,))
    model = export_policy(
        policy,
        {"env_id": "xor", "agent_ids": ["agent_0", "agent_1"]},
        tmp_path / "m",
        "xor",
        1,
        parity_samples=16,
    )
    truth = _truth("xor", onnx_controller(model, make_env("xor")))
    report = evaluate_offline(
        str(model),
        str(tmp_path / "log"),
        bootstrap=200,
        fqe_config=FQEConfig(iterations=3, steps_per_iteration=200),
    )
    assert report.wis_ci[0] - 1e-6 <= truth <= report.wis_ci[1] + 1e-6, (truth, report.wis_ci)
    assert report.fqe == pytest.approx(truth, abs=0.15 * max(1.0, abs(truth)))
    assert report.trustworthy and report.ess > 50


def test_deterministic_logs_are_flagged(tmp_path):
    collect("bridge", tmp_path / "det", controller="optimal-agent_0-first", episodes=20, progress=False)
    report = evaluate_offline(
        "optimal-agent_0-first@eps=0.1", str(tmp_path / "det"), bootstrap=0, run_fqe=False
    )
    assert not report.trustworthy
    assert any("deterministic" in w for w in report.warnings)


def test_missing_behavior_prob_and_no_coverage_are_flagged(bridge_log):
    loaded, path = bridge_log
    d = loaded.data
    mu = d.behavior_prob.copy()
    mu[0, 0, 0] = np.nan
    broken = SimpleNamespace(data=OfflineData(**{**d.__dict__, "behavior_prob": mu}), columns=loaded.columns)
    report = evaluate_offline("optimal@eps=0.1", str(path), bootstrap=0, run_fqe=False, data=broken)
    assert not report.trustworthy and report.wis is None
    assert any("behavior_prob is missing" in w for w in report.warnings)
    # The greedy optimal rule: every episode with one exploratory step gets weight 0; few are left.
    report = evaluate_offline("optimal", str(path), bootstrap=0, run_fqe=False, data=loaded)
    assert report.matched_episodes < 0.1 * report.episodes
    assert not report.trustworthy and any(
        "effective sample size" in w or "undefined" in w for w in report.warnings
    )


def test_cli_prints_the_estimate(bridge_log, tmp_path, capsys):
    from trainer.cli import main

    _, path = bridge_log
    out = tmp_path / "ope.json"
    assert (
        main(
            [
                "ope",
                "--policy",
                "optimal@eps=0.2",
                "--data",
                str(path),
                "--bootstrap",
                "50",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "PDWIS" in text and "effective sample size" in text and out.exists()
    assert main(["ope", "--policy", "nope@eps=0.1", "--data", str(path), "--no-fqe"]) == 2


def _negative_reward_log(E: int = 40, T: int = 30, seed: int = 0) -> SimpleNamespace:
    """Two agents, 30 steps, every reward in [-2, -1] and a uniform stochastic logger."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, 2, (E, T, 2))
    rewards = -1.0 - rng.random((E, T))
    data = _data(
        actions, rewards, np.full((E, T, 2), 0.5), states=rng.normal(size=(E, T, 2)).astype(np.float32)
    )
    return SimpleNamespace(data=data, columns=SimpleNamespace())


def _model(tmp_path, n_agents: int = 2):
    import torch

    from trainer.export import export_policy
    from trainer.nets import PolicyNet

    torch.manual_seed(0)
    return export_policy(
        PolicyNet(1, n_agents, 2, hidden=(8,)),
        {"env_id": "test", "agent_ids": [f"a{i}" for i in range(n_agents)]},
        tmp_path / "m",
        "test",
        1,
        parity_samples=16,
    )


def test_an_fqe_estimate_outside_the_reward_range_is_flagged(tmp_path):
    # Rewards in [-2, -1] over 30 steps allow values in [-60, -30]; 2 backups carry ~2 steps of reward.
    log = _negative_reward_log()
    report = evaluate_offline(
        str(_model(tmp_path)),
        "synthetic",
        bootstrap=20,
        data=log,
        fqe_config=FQEConfig(hidden=16, iterations=2, steps_per_iteration=50),
    )
    assert report.fqe_range == pytest.approx((-60.0, -30.0), abs=0.5)
    assert report.fqe > -30.5, "the setting must give an impossible value for this test to mean anything"
    assert report.fqe_trustworthy is False and report.estimate != "fqe"
    assert any("allow" in w and "impossible value" in w for w in report.warnings)
    # the held-out check of the same fit misses the logging policy's held-out returns, too
    assert report.fqe_heldout["passed"] is False and report.fqe_heldout["relative_error"] > 0.5


def test_fqe_with_enough_backups_is_in_range_and_passes_the_heldout_check(tmp_path):
    log = _negative_reward_log(T=8)
    report = evaluate_offline(
        str(_model(tmp_path)),
        "synthetic",
        bootstrap=20,
        data=log,
        fqe_config=FQEConfig(hidden=32, iterations=10, steps_per_iteration=100),
    )
    lo, hi = report.fqe_range
    assert lo <= report.fqe <= hi and report.fqe == pytest.approx(-12.0, abs=1.0)  # 8 steps of mean -1.5
    assert report.fqe_heldout["passed"], report.fqe_heldout
    assert report.fqe_trustworthy is True


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_report_is_strict_json_on_a_long_episode_log(tmp_path):
    from trainer.cli import main

    log = tmp_path / "log"
    collect(
        "elevator:cb10x4:downpeak",
        log,
        controller="etd@eps=0.1",
        episodes=3,
        env_kwargs={"hours": 0.05},
        progress=False,
    )
    assert open_log(log).data.filled.sum(axis=1).min() > 100  # long: hundreds of steps of 4 cars
    out = tmp_path / "ope.json"
    assert main(["ope", "--policy", "etd", "--data", str(log), "--bootstrap", "20", "--json", str(out)]) == 0
    report = _strict_json(out.read_text())
    assert report["wis"] is None and "no logged episode follows" in report["not_available"]["wis"]
    assert report["trustworthy"] is False and report["estimate"] is None
