"""Canary on a real server: a stable share of agents (by a hash of the agent id) is answered by the
candidate, outcomes reported through ReportOutcome are exported per arm, and one admin call promotes or
rolls back. Driven by the closed-loop evaluator (run_episode + grpc_controller) on the bridge game."""

import time

import grpc
import numpy as np
import pytest
from deployment_helpers import ADMIN, POLICY, ReportingEnv, export_bridge, local_argmax, sample, scrape
from serving_helpers import ServerThread, config

from runtime.client import AdminClient, PolicyClient
from runtime.config import DeploymentConfig, ModelConfig
from runtime.deployment import canary_agents
from trainer.rollout import run_episode
from trainer.served_policies import grpc_controller

START = np.array([1, 2, 2, 5, 1, 3, 0, 0], np.float32)  # bridge's start state (both agents see it)


def _cfg(repo, **model_kw):
    cfg = config(repo, models={"bridge": ModelConfig(auto_serve=False, **model_kw)})
    cfg.auth.policy_tokens, cfg.auth.admin_tokens = [POLICY], [ADMIN]
    return cfg


def _salt_for(pattern):
    """A salt that puts exactly the agents of ``pattern`` in a 50 % canary."""
    for k in range(1000):
        if canary_agents(["agent_0", "agent_1"], 0.5, f"s{k}").tolist() == pattern:
            return f"s{k}"
    raise AssertionError("no salt found")


def test_canary_share_is_a_stable_hash():
    ids = [f"tl_{i}" for i in range(2000)]
    flags = canary_agents(ids, 0.2, "x")
    assert abs(flags.mean() - 0.2) < 0.03  # the share holds on a large site
    assert (
        canary_agents(ids, 0.2, "x") == flags
    ).all()  # stable across calls (and processes: no PYTHONHASHSEED)
    assert (canary_agents(ids, 0.3, "x") >= flags).all()  # raising the share only adds agents
    assert not canary_agents(ids, 0.0, "x").any() and canary_agents(ids, 1.0, "x").all()


def test_canary_closed_loop_per_arm_kpis_promote_and_rollback(tmp_path):
    repo = tmp_path / "models"
    v1 = export_bridge(repo, "bridge", seed=11, version=1)
    with ServerThread(_cfg(repo), metrics=True) as s:
        v2 = export_bridge(repo, "bridge", seed=5, version=2)
        time.sleep(0.3)  # several poll cycles: auto_serve = false keeps version 1 serving
        client = PolicyClient(s.target, token=POLICY)
        admin = AdminClient(s.target, token=ADMIN)
        assert client.model_info("bridge")[0].version == "1"
        salt = _salt_for([True, False])
        d = admin.set_deployment("bridge", candidate="bridge:2", canary_share=0.5, canary_salt=salt)
        assert list(d.candidate_agents) == ["agent_0"] and d.candidate_version == "2"

        # Arms are per agent, whatever the order or the subset of agents in a request.
        both = client.act("bridge", {"agent_1": START, "agent_0": START})
        assert both.arms == ["incumbent", "candidate"] and both.model_version == "1"
        alone = client.act("bridge", {"agent_0": START}, packed=True)
        assert alone.arms == ["candidate"]

        env = ReportingEnv(client, "bridge")
        controller = grpc_controller(f"grpc://{s.target}/bridge", env, token=POLICY)
        env.controller = controller
        results = [run_episode(env, controller, seed) for seed in (10_000, 10_001)]
        text = scrape(s.server.metrics_port)

        obs = np.stack([o for o, _ in env.seen])
        masks = np.stack([m for _, m in env.seen])
        played = np.array(env.actions)
        steps = len(obs)
        assert steps == sum(r.length for r in results)
        cand = np.stack([local_argmax(v2, o, m) for o, m in zip(obs, masks, strict=True)])
        inc = np.stack([local_argmax(v1, o, m) for o, m in zip(obs, masks, strict=True)])
        assert (played[:, 0] == cand[:, 0]).all() and (played[:, 1] == inc[:, 1]).all()
        assert (cand[:, 0] != inc[:, 0]).any(), "the arms should play differently somewhere"

        # Per-arm KPIs from ReportOutcome, as Prometheus exports them (+2 for the direct acts above).
        assert sample(text, "inspo_runtime_arm_decisions_total", model="bridge", arm="candidate") == steps + 2
        assert sample(text, "inspo_runtime_arm_decisions_total", model="bridge", arm="incumbent") == steps + 1
        for k, arm in ((0, "candidate"), (1, "incumbent")):
            assert sample(text, "inspo_runtime_arm_reward_count", model="bridge", arm=arm) == steps
            got = sample(text, "inspo_runtime_arm_kpi_sum", model="bridge", arm=arm, kpi="distance_to_goal")
            assert got == pytest.approx(sum(kp[f"agent_{k}"] for kp in env.kpis), rel=1e-6)
        assert sample(text, "inspo_runtime_canary_share", model="bridge") == 0.5
        assert sample(text, "inspo_runtime_canary_agents", model="bridge") == 1

        # Promote: one call, version 2 serves every agent.
        d = admin.promote("bridge")
        assert (d.candidate, d.canary_share, d.incumbent_version) == ("", 0.0, "2")
        after = client.act("bridge", {"agent_0": START, "agent_1": START})
        assert after.model_version == "2" and after.arms is None
        assert (
            after.actions.tolist()
            == local_argmax(v2, np.stack([START, START]), np.ones((2, 5), bool)).tolist()
        )

        # A canary of the old version on every agent, then roll it back: one call.
        admin.set_deployment("bridge", candidate="bridge:1", canary_share=1.0)
        canary = client.act("bridge", {"agent_0": START, "agent_1": START})
        assert canary.arms == ["candidate", "candidate"] and canary.actions.tolist() == [2, 3]
        d = admin.rollback_candidate("bridge")
        assert d.candidate == "" and d.incumbent_version == "2"
        back = client.act("bridge", {"agent_0": START, "agent_1": START})
        assert back.actions.tolist() == after.actions.tolist() and back.model_version == "2"
        with pytest.raises(grpc.RpcError) as err:
            admin.rollback_candidate("bridge")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        final = scrape(s.server.metrics_port)
        for action, n in (("set", 2), ("promote", 1), ("rollback", 1)):
            assert sample(final, "inspo_runtime_deployment_changes_total", model="bridge", action=action) == n
        # The policy token cannot change deployments.
        with AdminClient(s.target, token=POLICY) as bad, pytest.raises(grpc.RpcError) as err:
            bad.promote("bridge")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        controller.close()
        client.close()
        admin.close()


def test_configured_candidate_version_is_not_served_by_the_initial_poll(tmp_path):
    repo = tmp_path / "models"
    export_bridge(repo, "bridge", seed=11, version=1)
    export_bridge(repo, "bridge", seed=5, version=2)
    dep = DeploymentConfig(candidate="bridge:2", canary_share=1.0)
    cfg = config(repo, models={"bridge": ModelConfig(deployment=dep)})
    with ServerThread(cfg) as s, PolicyClient(s.target) as client:
        time.sleep(0.2)
        assert client.model_info("bridge")[0].version == "1"  # v2 is the candidate, not auto-served
        result = client.act("bridge", {"agent_0": START, "agent_1": START})
        assert result.arms == ["candidate", "candidate"] and result.actions.tolist() == [3, 1]
        assert client.act("bridge", {"agent_0": START}, version="1").arms is None  # a pinned version bypasses
