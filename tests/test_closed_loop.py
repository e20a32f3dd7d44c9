"""The closed loop (issue 8): a policy served over gRPC controls the simulator exactly as in-process,
and the runtime's decision log, with outcomes reported by the client, is a log the trainer reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.registry import make_env
from trainer.demo import start_runtime
from trainer.export import export_run
from trainer.logs import load_log
from trainer.nets import PolicyNet
from trainer.policies import TorchPolicyController
from trainer.rollout import run_episode
from trainer.run_dir import save_policy
from trainer.served_policies import grpc_controller, onnx_controller

ENV_ID = "elevator:cb10x4:downpeak"
SHORT = {"hours": 0.1, "warmup": 60.0}  # a six-minute window keeps the test to seconds


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A seeded policy exported to a model repository and served by a real runtime process."""
    tmp = tmp_path_factory.mktemp("closed_loop")
    env = make_env(ENV_ID, **SHORT)
    torch.manual_seed(3)
    policy = PolicyNet(env.obs_dim, len(env.possible_agents), env.n_actions, hidden=(64, 64))
    meta = {
        "env_id": ENV_ID,
        "agent_ids": list(env.possible_agents),
        "action_names": env.action_names,
        "obs_low": [-10.0] * env.obs_dim,
        "obs_high": [10.0] * env.obs_dim,
        "algorithm": "untrained",
        "config": {},
        "dataset_fingerprint": "",
        "metrics": {},
    }
    save_policy(tmp / "run", policy, meta)
    models = tmp / "models"
    export_run(tmp / "run", models, "elevator")
    runtime = start_runtime(models, tmp / "decision-log", tmp)
    yield env, policy, models, runtime, tmp
    runtime.stop()


def test_grpc_equals_in_process(served):
    env, policy, models, runtime, _ = served
    over_grpc = grpc_controller(f"{runtime.url}/elevator", env)
    in_process = [
        onnx_controller(models / "elevator", env),
        TorchPolicyController(policy, env.possible_agents),
    ]
    for seed in (10_000, 10_001):
        reference = run_episode(env, over_grpc, seed)
        assert reference.length > 20, "the episode must contain real decisions"
        for controller in in_process:
            result = run_episode(env, controller, seed)
            assert result.length == reference.length
            assert result.episode_return == reference.episode_return
            assert result.metrics == reference.metrics
    over_grpc.close()


def test_served_exploration_writes_a_trainable_decision_log(served):
    """Stochastic serving: the runtime samples and logs; the client reports rewards; the log loads."""
    env, _, _, runtime, tmp = served
    controller = grpc_controller(f"{runtime.url}/elevator", env, deterministic=False, report_outcomes=True)
    results = [run_episode(env, controller, seed) for seed in (0, 1)]
    controller.close()
    runtime.stop()  # graceful: flushes the decision log
    data = load_log(tmp / "decision-log" / "elevator")
    assert data.n_episodes == 2
    assert sorted(data.filled.sum(axis=1).tolist()) == sorted(r.length for r in results)
    # every logged probability is the exact probability of the executed action: in (0, 1]
    probs = data.behavior_prob[data.filled]
    assert np.isfinite(probs).all() and (probs > 0).all() and (probs <= 1).all()
    assert (probs < 1).any(), "a stochastic policy must log non-trivial probabilities"
    # the rewards reported by the client are in the log: team return matches the simulator's
    logged = sorted(data.episode_returns().tolist())
    simulated = sorted(r.episode_return for r in results)
    assert logged == pytest.approx(simulated, rel=1e-4)  # float32 rewards in the log
