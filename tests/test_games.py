"""The paper games: payoffs, Bridge dynamics and the behaviour policies' exact probabilities."""

from collections import Counter

import numpy as np
import pytest

from envs.controllers import build_controller
from envs.games.bridge import GOALS, BridgeEnv, move, optimal_return, plan
from envs.games.matrix import mne, xor
from envs.registry import controller_names, dataset_plan, make_env
from trainer.rollout import run_episode

STAY, UP, DOWN, RIGHT, LEFT = range(5)


@pytest.mark.parametrize(("joint", "payoff"), [((0, 0), 0.0), ((0, 1), 1.0), ((1, 0), 1.0), ((1, 1), -2.0)])
def test_xor_payoff_is_a_team_reward_of_one_step(joint, payoff):
    env = xor()
    obs, infos = env.reset(seed=3)
    assert obs["agent_0"].tolist() == [1.0] and infos["agent_1"]["action_mask"].tolist() == [True, True]
    _, rewards, terms, truncs, _ = env.step({"agent_0": joint[0], "agent_1": joint[1]})
    assert rewards == {"agent_0": payoff, "agent_1": payoff}
    assert all(terms.values()) and not any(truncs.values()) and env.agents == []


def test_mne_has_three_diagonal_equilibria_of_value_2_1_1():
    env = mne()
    values = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            env.reset(seed=0)
            values[a, b] = env.step({"agent_0": a, "agent_1": b})[1]["agent_0"]
    assert values.tolist() == np.diag([2.0, 1.0, 1.0]).tolist()


def test_bridge_walls_and_boundaries_block_moves():
    assert move(((1, 2), (1, 4)), (UP, DOWN)) == ((1, 2), (2, 4))  # (0,2) is a wall, (2,4) open
    assert move(((0, 0), (2, 5)), (UP, RIGHT)) == ((0, 0), (2, 5))  # off the grid
    assert move(((1, 2), (1, 4)), (DOWN, UP)) == ((1, 2), (0, 4))  # (2,2) is a wall


def test_bridge_agents_cannot_meet_or_swap_or_push():
    assert move(((1, 2), (1, 4)), (RIGHT, LEFT)) == ((1, 2), (1, 4))  # both into (1,3)
    assert move(((1, 2), (1, 3)), (RIGHT, LEFT)) == ((1, 2), (1, 3))  # swap
    assert move(((1, 2), (1, 3)), (RIGHT, STAY)) == ((1, 2), (1, 3))  # into a kept cell
    assert move(((1, 2), (1, 3)), (RIGHT, RIGHT)) == ((1, 3), (1, 4))  # following is fine


def test_bridge_rewards_done_agents_and_time_limit():
    env = BridgeEnv()
    env.reset(seed=0)
    _, rewards, terms, truncs, infos = env.step({"agent_0": STAY, "agent_1": RIGHT})
    assert rewards["agent_0"] == pytest.approx(-0.1 * np.hypot(1, 3))  # (1,2) -> goal (2,5)
    assert rewards["agent_1"] == pytest.approx(-0.1 * np.hypot(1, 4))  # (1,4) -> goal (0,0)
    assert env.team_reward(rewards) == pytest.approx(np.mean(list(rewards.values())))
    assert not any(terms.values()) and not any(truncs.values())
    for _ in range(18):
        env.step({"agent_0": STAY, "agent_1": STAY})
    _, rewards, terms, truncs, _ = env.step({"agent_0": STAY, "agent_1": STAY})
    assert rewards == {"agent_0": 0.0, "agent_1": 0.0}  # zero on the step where all are done
    assert all(truncs.values()) and not any(terms.values()) and env.agents == []


def test_bridge_done_agent_may_only_stay_and_earns_nothing():
    env = BridgeEnv()
    env.reset(seed=0)
    env.positions = ((2, 4), (1, 1))
    _, rewards, terms, _, infos = env.step({"agent_0": RIGHT, "agent_1": LEFT})
    assert env.positions == (GOALS[0], (1, 0))
    assert terms == {"agent_0": True, "agent_1": False}
    assert infos["agent_0"]["action_mask"].tolist() == [True, False, False, False, False]
    assert rewards["agent_0"] == 0.0 and rewards["agent_1"] == pytest.approx(-0.1)
    env.step({"agent_0": LEFT, "agent_1": STAY})  # a done agent's action is ignored
    assert env.positions[0] == GOALS[0]


def test_optimal_return_matches_a_hand_computed_trajectory():
    # agent_0-first: agent1 steps aside to (0,4), agent0 crosses, then agent1 walks home.
    a0 = [(1, 3), (1, 4), (2, 4), (2, 5)]
    a1 = [(1, 4), (0, 4), (1, 4), (1, 3), (1, 2), (1, 1), (0, 1)]
    per_step = []
    for k in range(7):
        d0 = 0.0 if k >= 3 else np.hypot(a0[k][0] - 2, a0[k][1] - 5)
        d1 = np.hypot(*a1[k])
        per_step.append(-0.1 * (d0 + d1) / 2)
    assert optimal_return() == pytest.approx(sum(per_step), abs=1e-9)
    assert optimal_return() == pytest.approx(-1.2354526, abs=1e-6)


@pytest.mark.parametrize("ordering", ["agent_0-first", "agent_1-first"])
def test_each_optimal_ordering_reaches_the_optimal_return_in_the_env(ordering):
    env = make_env("bridge")
    result = run_episode(env, build_controller("bridge", f"optimal-{ordering}"), seed=0)
    assert result.episode_return == pytest.approx(optimal_return(), abs=1e-6)
    assert result.length == len(plan().sequences[ordering]) == 8
    assert result.metrics["both_at_goal"] == 1.0


def test_optimal_controller_picks_each_ordering_half_the_time_with_exact_probabilities():
    env, controller = make_env("bridge"), build_controller("bridge", "optimal")
    firsts = Counter()
    for seed in range(200):
        obs, infos = env.reset(seed=seed)
        controller.reset(env, seed)
        rng = np.random.default_rng(seed)
        actions, probs = controller.act(env, obs, infos, rng)
        assert probs == {"agent_0": 0.5, "agent_1": 0.5}
        firsts[(actions["agent_0"], actions["agent_1"])] += 1
        obs, _, _, _, infos = env.step(actions)
        actions, probs = controller.act(env, obs, infos, rng)
        assert probs == {"agent_0": 1.0, "agent_1": 1.0}
    assert set(firsts) == {(RIGHT, RIGHT), (LEFT, LEFT)}  # never a mixed, non-optimal first move
    assert 80 <= firsts[(RIGHT, RIGHT)] <= 120


@pytest.mark.parametrize(
    ("env_id", "name", "marginal"),
    [
        ("xor", "balanced", [0.5, 0.5]),
        ("mne", "balanced", [1 / 3, 1 / 3, 1 / 3]),
        ("mne", "imbalanced", [0.1, 0.45, 0.45]),
    ],
)
def test_matrix_behaviour_policies_log_exact_marginals_and_stay_correlated(env_id, name, marginal):
    env, controller = make_env(env_id), build_controller(env_id, name)
    joints = Counter()
    for seed in range(400):
        obs, infos = env.reset(seed=seed)
        actions, probs = controller.act(env, obs, infos, np.random.default_rng(seed))
        joint = (actions["agent_0"], actions["agent_1"])
        joints[joint] += 1
        assert probs["agent_0"] == pytest.approx(marginal[joint[0]])
    if env_id == "xor":
        assert set(joints) == {(0, 1), (1, 0)}
    else:
        assert all(a == b for a, b in joints)
        assert joints[(0, 0)] / 400 == pytest.approx(marginal[0], abs=0.06)


def test_same_seed_same_episode():
    env = make_env("bridge")
    a = run_episode(env, build_controller("bridge", "random"), seed=7)
    b = run_episode(env, build_controller("bridge", "random"), seed=7)
    c = run_episode(env, build_controller("bridge", "random"), seed=8)
    assert a.episode_return == b.episode_return != c.episode_return


def test_registry_lists_controllers_and_datasets():
    assert "balanced" in controller_names("xor") and "optimal" in controller_names("bridge")
    assert dataset_plan("bridge", "mixed") == [("optimal", 500), ("random", 500)]
    assert dataset_plan("mne", "imbalanced") == [("imbalanced", 1000)]
    assert make_env("bridge").neighbors() == {"agent_0": ["agent_1"], "agent_1": ["agent_0"]}
    with pytest.raises(KeyError, match="no controller"):
        build_controller("xor", "imbalanced")
