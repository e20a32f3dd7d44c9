"""Shadow mode on a real server: the incumbent answers, the shadow is computed off the response path and
its agreement is counted per agent and per (served, shadow) action pair, and logged beside the decision.
Driven by the closed-loop evaluator (run_episode + grpc_controller) on the bridge game."""

import glob

import numpy as np
import pandas as pd
import pytest
from deployment_helpers import (
    ADMIN,
    BRIDGE_AGENTS,
    POLICY,
    ReportingEnv,
    export_bridge,
    local_argmax,
    sample,
    scrape,
)
from serving_helpers import ServerThread, config

from runtime.client import AdminClient, PolicyClient
from runtime.config import DecisionLogConfig, DeploymentConfig, FallbackConfig, ModelConfig
from trainer.rollout import run_episode
from trainer.served_policies import grpc_controller


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    export_bridge(root, "bridge", seed=11, version=1)
    export_bridge(root, "bridge-b", seed=5, version=1)
    return root


def _auth(cfg):
    cfg.auth.policy_tokens, cfg.auth.admin_tokens = [POLICY], [ADMIN]
    return cfg


def _play(s, model: str, episodes=(10_000, 10_001)):
    client = PolicyClient(s.target, token=POLICY)
    env = ReportingEnv(client, model)
    controller = grpc_controller(f"grpc://{s.target}/{model}", env, token=POLICY)
    env.controller = controller
    results = [run_episode(env, controller, seed) for seed in episodes]
    controller.close()
    client.close()
    s.server.shadow.drain()
    return env, results


def test_shadow_of_a_rule_incumbent_is_counted_and_logged(repo, tmp_path):
    rule = FallbackConfig(rule="per_agent", actions={"agent_0": 3, "agent_1": 4})
    cfg = _auth(
        config(
            repo,
            models={
                "bridge": ModelConfig(
                    deployment=DeploymentConfig(incumbent="rule", rule=rule, shadow="bridge")
                )
            },
            decision_log=DecisionLogConfig(dir=str(tmp_path / "log"), flush_interval_s=0.2),
        )
    )
    with ServerThread(cfg, metrics=True) as s:
        env, results = _play(s, "bridge")
        text = scrape(s.server.metrics_port)
        assert all(r.controller == "grpc:bridge" for r in results)
    obs = np.stack([o for o, _ in env.seen])
    masks = np.stack([m for _, m in env.seen])
    steps = len(obs)
    assert steps == sum(r.length for r in results) > 0
    # The incumbent rule answered every request: agent_0 right (3), agent_1 left (4), unless the mask forbade it.
    for k, (agent, a) in enumerate((("agent_0", 3), ("agent_1", 4))):
        legal = masks[:, k, a]
        assert (
            sample(text, "inspo_runtime_actions_total", model="bridge", agent=agent, action=a) == legal.sum()
        )
    shadow = np.stack([local_argmax(repo / "bridge" / "1", o, m) for o, m in zip(obs, masks, strict=True)])
    served = np.where(masks[:, :, [3, 4]].diagonal(axis1=1, axis2=2), [3, 4], 0)
    for k, agent in enumerate(BRIDGE_AGENTS):
        agree = int((shadow[:, k] == served[:, k]).sum())
        got_agree = sample(
            text, "inspo_runtime_shadow_decisions_total", model="bridge", agent=agent, result="agree"
        )
        got_dis = sample(
            text, "inspo_runtime_shadow_decisions_total", model="bridge", agent=agent, result="disagree"
        )
        assert (got_agree, got_dis) == (agree, steps - agree)
    pairs = {}
    for a, b in zip(served.ravel(), shadow.ravel(), strict=True):
        pairs[(a, b)] = pairs.get((a, b), 0) + 1
    for (a, b), count in pairs.items():
        got = sample(
            text, "inspo_runtime_shadow_action_pairs_total", model="bridge", served_action=a, shadow_action=b
        )
        assert got == count
    assert sample(text, "inspo_runtime_shadow_errors_total") == 0
    # The shadow log: one row per agent decision, the shadow's action beside the served one.
    files = glob.glob(str(tmp_path / "log" / "bridge" / "shadow" / "date=*" / "*.parquet"))
    rows = pd.concat([pd.read_parquet(f) for f in files]).sort_values(["episode_id", "t", "agent_id"])
    assert len(rows) == steps * 2
    assert (rows["served_version"] == "rule:per_agent").all() and (rows["shadow_version"] == "1").all()
    assert int(rows["agree"].sum()) == int((shadow == served).sum())
    assert ((rows["shadow_prob_of_served"] >= 0) & (rows["shadow_prob_of_served"] <= 1)).all()


def test_shadow_of_another_model_set_by_admin(repo):
    cfg = _auth(config(repo))
    with ServerThread(cfg, metrics=True) as s:
        admin = AdminClient(s.target, token=ADMIN)
        d = admin.set_deployment("bridge", shadow="bridge-b")
        assert (d.shadow, d.shadow_version, d.incumbent_version) == ("bridge-b", "1", "1")
        env, _ = _play(s, "bridge")
        text = scrape(s.server.metrics_port)
        admin.set_deployment("bridge")  # shadow off
        _play(s, "bridge", episodes=(10_002,))
        after = scrape(s.server.metrics_port)
        admin.close()
    obs = np.stack([o for o, _ in env.seen])
    masks = np.stack([m for _, m in env.seen])
    served = np.stack([local_argmax(repo / "bridge" / "1", o, m) for o, m in zip(obs, masks, strict=True)])
    shadow = np.stack([local_argmax(repo / "bridge-b" / "1", o, m) for o, m in zip(obs, masks, strict=True)])
    assert (served != shadow).any(), "the two test policies should disagree somewhere"
    for k, agent in enumerate(BRIDGE_AGENTS):
        agree = int((served[:, k] == shadow[:, k]).sum())
        assert (
            sample(
                text,
                "inspo_runtime_shadow_decisions_total",
                model="bridge",
                shadow="bridge-b",
                agent=agent,
                result="agree",
            )
            == agree
        )
        assert (
            sample(
                text, "inspo_runtime_shadow_decisions_total", model="bridge", agent=agent, result="disagree"
            )
            == len(obs) - agree
        )
    # With the shadow switched off, nothing more is counted.
    assert sample(after, "inspo_runtime_shadow_decisions_total") == sample(
        text, "inspo_runtime_shadow_decisions_total"
    )
    assert sample(after, "inspo_runtime_deployment_changes_total", model="bridge", action="set") == 2


def test_incompatible_or_unknown_shadow_is_refused(repo, tmp_path):
    import grpc
    from serving_helpers import export, make_run

    export(make_run(tmp_path / "run"), repo, name="grid")  # other agents and shapes
    try:
        with ServerThread(_auth(config(repo))) as s, AdminClient(s.target, token=ADMIN) as admin:
            with pytest.raises(grpc.RpcError) as err:
                admin.set_deployment("bridge", shadow="grid")
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.RpcError) as err:
                admin.set_deployment("bridge", shadow="nope")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert admin.deployment("bridge").shadow == ""
    finally:
        import shutil

        shutil.rmtree(repo / "grid")
