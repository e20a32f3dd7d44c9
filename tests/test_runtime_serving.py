"""A real runtime on loopback with real ONNX Runtime: served actions, validation, fallback, metrics, logs."""

import urllib.request

import grpc
import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import AGENTS, N_ACTIONS, OBS_DIM, ServerThread, config, export, make_run

from protos.inspo.runtime.v1 import policy_pb2
from runtime.client import AsyncPolicyClient, PolicyClient, build_request
from runtime.config import BatchingConfig, DecisionLogConfig, FallbackConfig, ModelConfig
from trainer.nets import ExportedPolicy
from trainer.run_dir import load_policy


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    run = make_run(root / "run", seed=5)
    export(run, root / "models")
    return root


@pytest.fixture(scope="module")
def server(repo):
    with ServerThread(config(repo / "models", poll_interval_s=0), metrics=True) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with PolicyClient(server.target) as c:
        yield c


def torch_argmax(repo, obs, agents, mask):
    policy, _ = load_policy(repo / "run")
    with torch.no_grad():
        _, action = ExportedPolicy(policy)(
            torch.from_numpy(obs), torch.as_tensor(agents, dtype=torch.int64), torch.from_numpy(mask)
        )
    return action.numpy()


def test_served_actions_equal_torch_argmax_on_every_path(repo, client):
    rng = np.random.default_rng(0)
    obs = (rng.standard_normal((3, OBS_DIM)) * 2).astype(np.float32)
    mask = rng.random((3, N_ACTIONS)) < 0.5
    mask[:, 1] = True
    expected = torch_argmax(repo, obs, [0, 1, 2], mask)
    for kw in ({"packed": True}, {"raw": True}, {"raw": False}):
        result = client.act("grid", obs, AGENTS, mask, return_probs=True, **kw)
        assert result.actions.tolist() == expected.tolist(), kw
        assert result.model_version == "1" and not result.fallback.any()
        assert np.allclose(result.probs.sum(axis=1), 1, atol=1e-5)
        assert (result.probs[~mask] == 0).all()
        assert np.allclose(result.probability, result.probs[np.arange(3), result.actions])


def test_sampled_actions_are_legal_and_reproducible_with_a_seed(client):
    obs = np.zeros((3, OBS_DIM), np.float32)
    mask = np.array([[True, False, True, False]] * 3)
    runs = [
        client.act("grid", obs, AGENTS, mask, deterministic=False, seed=s, packed=True).actions.tolist()
        for s in (1, 1, 2, 3, 4, 5, 6)
    ]
    assert runs[0] == runs[1]
    assert {a for r in runs for a in r} <= {0, 2} and len({a for r in runs for a in r}) == 2


def test_model_info_and_health(client):
    (info,) = client.model_info()
    assert (info.name, info.version, info.obs_dim, info.n_actions) == ("grid", "1", OBS_DIM, N_ACTIONS)
    assert list(info.agent_ids) == AGENTS and [i.name for i in info.inputs] == ["obs", "agent", "action_mask"]
    assert client.health() == "SERVING"
    assert client.health("inspo.runtime.v1.PolicyService") == "SERVING"


def test_health_is_not_serving_until_a_model_is_loaded(tmp_path):
    with ServerThread(config(tmp_path / "empty")) as s, PolicyClient(s.target) as c:
        assert c.health() == "NOT_SERVING"
        with pytest.raises(grpc.RpcError) as err:
            c.act("grid", {"tl_0": np.zeros(OBS_DIM)})
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _agent(agent_id="tl_0", n_obs=OBS_DIM, mask=None, value=0.0):
    item = policy_pb2.AgentObservation(agent_id=agent_id, obs=[value] * n_obs)
    if mask is not None:
        item.action_mask.extend(mask)
    return item


BAD_REQUESTS = [
    (policy_pb2.ActRequest(model="grid"), grpc.StatusCode.INVALID_ARGUMENT, "agents: empty request"),
    (policy_pb2.ActRequest(agents=[_agent()]), grpc.StatusCode.INVALID_ARGUMENT, "model: required"),
    (policy_pb2.ActRequest(model="nope", agents=[_agent()]), grpc.StatusCode.NOT_FOUND, "model 'nope'"),
    (policy_pb2.ActRequest(model="grid", version="9", agents=[_agent()]), grpc.StatusCode.NOT_FOUND, "version '9'"),
    (policy_pb2.ActRequest(model="grid", agents=[_agent(n_obs=2)]), grpc.StatusCode.INVALID_ARGUMENT, "agents[0].obs: agent 'tl_0': expected 6 floats, got 2"),
    (policy_pb2.ActRequest(model="grid", agents=[_agent(), _agent("x")]), grpc.StatusCode.INVALID_ARGUMENT, "agents[1].agent_id: unknown agent 'x'"),
    (policy_pb2.ActRequest(model="grid", agents=[_agent(value=float("nan"))]), grpc.StatusCode.INVALID_ARGUMENT, "agents[0].obs: agent 'tl_0': observation contains NaN"),
    (policy_pb2.ActRequest(model="grid", agents=[_agent(mask=[True])]), grpc.StatusCode.INVALID_ARGUMENT, "agents[0].action_mask: agent 'tl_0': expected 4 booleans, got 1"),
    (policy_pb2.ActRequest(model="grid", agents=[_agent(mask=[False] * 4)]), grpc.StatusCode.INVALID_ARGUMENT, "agents[0].action_mask: agent 'tl_0': no legal action"),
    (policy_pb2.ActRequest(model="grid", agents=[_agent(), _agent()]), grpc.StatusCode.INVALID_ARGUMENT, "agents[1].agent_id: agent 'tl_0' appears twice"),
    (policy_pb2.ActRequest(model="grid", packed=policy_pb2.PackedObservations(agent_ids=["tl_0"], obs_raw=b"abc")), grpc.StatusCode.INVALID_ARGUMENT, "packed.obs_raw: expected 1x6 float32 = 24 bytes, got 3"),
    (policy_pb2.ActRequest(model="grid", agents=[_agent(agent_id=f"tl_{i % 3}") for i in range(5000)]), grpc.StatusCode.INVALID_ARGUMENT, "agents: 5000 agents exceed max_agents_per_request=4096"),
]  # fmt: skip


@pytest.mark.parametrize("request_, code, message", BAD_REQUESTS)
def test_invalid_requests_get_a_status_naming_the_field(client, request_, code, message):
    with pytest.raises(grpc.RpcError) as err:
        client.act_raw(request_)
    assert err.value.code() == code
    assert message in err.value.details()


def test_a_request_beyond_the_message_limit_is_refused_and_the_server_stays_up(client):
    huge = build_request(
        "grid", np.zeros((1, 5_000_000), np.float32), ["tl_0"], packed=True
    )  # 20 MB > 16 MiB
    with pytest.raises(grpc.RpcError) as err:
        client.act_raw(huge)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.health() == "SERVING"


@st.composite
def random_requests(draw):
    n = draw(st.integers(0, 5))
    agents = []
    for _ in range(n):
        agent_id = draw(st.sampled_from([*AGENTS, "ghost", ""]))
        length = draw(st.sampled_from([OBS_DIM, OBS_DIM, 0, 1, OBS_DIM + 1]))
        values = draw(
            st.lists(
                st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=length, max_size=length
            )
        )
        mask = draw(st.one_of(st.just([]), st.lists(st.booleans(), min_size=1, max_size=N_ACTIONS + 1)))
        agents.append(policy_pb2.AgentObservation(agent_id=agent_id, obs=values, action_mask=mask))
    model = draw(st.sampled_from(["grid", "grid", "", "other"]))
    return policy_pb2.ActRequest(model=model, agents=agents, deterministic=draw(st.booleans()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request_=random_requests())
def test_fuzzed_requests_get_ok_or_a_clear_status(client, request_):
    try:
        response = client.act_raw(request_)
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), err
        assert err.details().split(":")[0] in ("model", "agents") or err.details().startswith(
            ("agents[", "model")
        )
    else:
        assert len(response.actions) == len(request_.agents)
        for item, out in zip(request_.agents, response.actions, strict=True):
            if len(item.action_mask):
                assert item.action_mask[out.action]
    assert client.health() == "SERVING"


def test_fallback_rules_answer_and_are_counted(repo):
    fb = FallbackConfig(
        rule="per_agent",
        action=1,
        actions={"tl_2": 3},
        nonfinite_obs="fallback",
        out_of_bounds="fallback",
        deadline_margin_ms=50,
    )
    cfg = config(repo / "models", models={"grid": ModelConfig(fallback=fb)})
    with ServerThread(cfg, metrics=True) as s, PolicyClient(s.target) as c:
        obs = np.zeros((3, OBS_DIM), np.float32)
        obs[0, 0] = np.nan  # non-finite
        obs[2, 1] = 100.0  # far outside the training bounds [-5, 5]
        r = c.act("grid", obs, AGENTS, return_probs=True, packed=True)
        assert r.fallback.tolist() == [True, False, True]
        assert r.fallback_reason == ["nonfinite_obs", "", "out_of_bounds"]
        assert r.actions[0] == 1 and r.actions[2] == 3 and r.probability[0] == 1.0
        mask = np.array([[True, False, True, True]] * 3)  # the per-agent fallback 1 is illegal for tl_0
        r = c.act("grid", obs, AGENTS, mask, raw=False)
        assert r.actions[0] == 0 and r.actions[2] == 3 and r.fallback[0]
        # A deadline shorter than the margin: the fallback answers in time instead of a timeout.
        r = c.act("grid", np.zeros((3, OBS_DIM)), AGENTS, timeout=0.04)
        assert r.fallback.all() and set(r.fallback_reason) == {"deadline"}
        text = urllib.request.urlopen(f"http://127.0.0.1:{s.server.metrics_port}/metrics").read().decode()
    assert 'inspo_runtime_fallbacks_total{model="grid",reason="deadline"} 3.0' in text
    assert 'inspo_runtime_fallbacks_total{model="grid",reason="nonfinite_obs"} 2.0' in text
    assert 'inspo_runtime_obs_out_of_bounds_total{agent="tl_2",model="grid"} 2.0' in text
    assert "inspo_runtime_inflight_requests 0.0" in text  # every call, fallbacks included, was counted out


@pytest.mark.parametrize("rule, extra, expected", [("obs_index", {"obs_index": 2}, 2), ("current", {}, 3)])
def test_obs_index_and_current_fallback_rules(repo, rule, extra, expected):
    fb = FallbackConfig(rule=rule, action=0, nonfinite_obs="fallback", **extra)
    with (
        ServerThread(config(repo / "models", models={"grid": ModelConfig(fallback=fb)})) as s,
        PolicyClient(s.target) as c,
    ):
        obs = np.full(OBS_DIM, 2.0, np.float32)
        obs[0] = np.inf
        r = c.act("grid", {"tl_1": obs}, current_actions={"tl_1": 3})
        assert r.fallback[0] and r.actions[0] == expected


def test_dynamic_batching_gives_the_same_actions(repo):
    import asyncio

    cfg = config(
        repo / "models",
        models={"grid": ModelConfig(batching=BatchingConfig(True, 64, 2000))},
        metrics_agent_label=False,
    )
    rng = np.random.default_rng(2)
    obs = rng.standard_normal((32, OBS_DIM)).astype(np.float32) * 2
    agents = [AGENTS[i % 3] for i in range(32)]
    expected = torch_argmax(repo, obs, [i % 3 for i in range(32)], np.ones((32, N_ACTIONS), bool))
    with ServerThread(cfg, metrics=True) as s:

        async def go():
            async with AsyncPolicyClient(s.target) as c:
                return await asyncio.gather(*(c.act("grid", {agents[i]: obs[i]}) for i in range(32)))

        results = asyncio.run(go())
        text = urllib.request.urlopen(f"http://127.0.0.1:{s.server.metrics_port}/metrics").read().decode()
    assert [r.actions[0] for r in results] == expected.tolist()
    executions = float(
        next(
            line for line in text.splitlines() if line.startswith("inspo_runtime_inference_executions_total")
        ).split()[-1]
    )
    assert executions < 32  # requests shared executions


def test_decision_log_joins_outcomes_and_is_readable(repo, tmp_path):
    cfg = config(repo / "models", decision_log=DecisionLogConfig(dir=str(tmp_path / "log"), site="lab"))
    with ServerThread(cfg) as s, PolicyClient(s.target) as c:
        for t in range(3):
            obs = np.full((3, OBS_DIM), t, np.float32)
            c.act("grid", obs, AGENTS, episode_id="ep1", t=t, deterministic=False, packed=True)
            if t < 2:
                assert (
                    c.report_outcome("grid", "ep1", t, {a: 1.0 + t for a in AGENTS}, kpis={"queue": 3.0}) == 3
                )
        c.act("grid", {"tl_0": np.zeros(OBS_DIM)})  # no episode: logged without an outcome
    rows = ds.dataset(tmp_path / "log" / "grid" / "agent_steps", partitioning="hive").to_table().to_pandas()
    assert len(rows) == 6
    assert (rows.site == "lab").all()
    with_outcome = rows.sort_values(["t", "agent_id"])
    assert (
        with_outcome.t.tolist() == [0, 0, 0, 1, 1, 1]
        and with_outcome.reward.tolist() == [1.0] * 3 + [2.0] * 3
    )
    assert (with_outcome.model_version == "1").all() and with_outcome.behavior_prob.between(0, 1).all()
    unrewarded = ds.dataset(tmp_path / "log" / "grid" / "no-outcome" / "agent_steps", partitioning="hive")
    assert unrewarded.count_rows() == 4
    schema = ds.dataset(tmp_path / "log" / "grid" / "agent_steps").schema
    assert schema.metadata[b"obs_dim"] == str(OBS_DIM).encode()
