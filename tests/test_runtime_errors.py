"""Bad input never yields UNKNOWN: strict names, one exception-to-status table, undecodable bytes,
in-stream errors, bounded metric labels and status labels that say what was returned."""

import asyncio
import logging
import uuid

import grpc
import numpy as np
import pytest
from deployment_helpers import ADMIN, POLICY, sample, scrape
from serving_helpers import AGENTS, OBS_DIM, ServerThread, config, export, make_run

from protos.inspo.runtime.v1 import policy_pb2
from runtime.client import AdminClient, AsyncPolicyClient, PolicyClient, build_request

ACT = "/inspo.runtime.v1.PolicyService/Act"
GOOD = build_request("grid", np.zeros((1, OBS_DIM), np.float32), ["tl_0"])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    export(make_run(root / "run"), root / "models")
    export(make_run(root / "run"), root / "models")  # version 2: RollBack has somewhere to go
    cfg = config(root / "models", poll_interval_s=0)
    cfg.auth.admin_tokens, cfg.auth.policy_tokens = [ADMIN], [POLICY]
    with ServerThread(cfg, metrics=True) as s:
        yield s


def _requests(text: str, method: str, code: str) -> float:
    return sample(text, "inspo_runtime_requests_total", method=method, code=code)


def test_metric_size_stays_flat_under_three_thousand_unknown_model_names(server):
    with PolicyClient(server.target, token=POLICY) as c:
        for name in ("unknown", "bad name/", "other", "bad name/2"):  # the label sets both kinds create
            with pytest.raises(grpc.RpcError):
                c.act_raw(policy_pb2.ActRequest(model=name, agents=GOOD.agents))
        before = scrape(server.server.metrics_port)
        codes = set()
        for i in range(3000):
            name = uuid.uuid4().hex if i % 2 else f"bad name/{i}"  # unknown, and not even a name
            try:
                c.act_raw(policy_pb2.ActRequest(model=name, agents=GOOD.agents))
            except grpc.RpcError as err:
                codes.add(err.code())
    after = scrape(server.server.metrics_port)
    assert codes == {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}
    assert len(after) - len(before) < 200  # only counter values changed, no new series
    assert _requests(after, "Act", "NOT_FOUND") >= 1500 and "bad name" not in after


ADMIN_CASES = [
    ("load", {"model": "g" * 300}, grpc.StatusCode.INVALID_ARGUMENT, "model: "),
    ("load", {"model": "grid", "version": "1" * 300}, grpc.StatusCode.INVALID_ARGUMENT, "version: "),
    ("load", {"model": "grid", "version": "1\x00"}, grpc.StatusCode.INVALID_ARGUMENT, "version: "),
    ("load", {"model": "../grid", "version": "1"}, grpc.StatusCode.INVALID_ARGUMENT, "model: "),
    ("rollback", {"model": "grid", "to_version": "../elevator/1"}, grpc.StatusCode.INVALID_ARGUMENT, "to_version: "),
    ("rollback", {"model": "grid", "to_version": "77"}, grpc.StatusCode.NOT_FOUND, "no version '77'"),
    ("rollback", {"model": "nope"}, grpc.StatusCode.NOT_FOUND, "model 'nope'"),
    ("set_deployment", {"model": "grid", "candidate": "../x:1"}, grpc.StatusCode.INVALID_ARGUMENT, "candidate: "),
    ("set_deployment", {"model": "grid", "shadow": "grid:1/.."}, grpc.StatusCode.INVALID_ARGUMENT, "shadow: "),
    ("deployment", {"model": ""}, grpc.StatusCode.INVALID_ARGUMENT, "model: required"),
    ("set_deployment", {"model": "grid", "candidate": "grid:1", "canary_share": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "canary_share: must be in [0, 1]"),
    ("set_deployment", {"model": "grid", "candidate": "grid:1", "canary_share": float("nan")}, grpc.StatusCode.INVALID_ARGUMENT, "canary_share: "),
]  # fmt: skip


@pytest.mark.parametrize("method, kwargs, code, message", ADMIN_CASES)
def test_admin_calls_check_their_strings_and_count_the_code_returned(server, method, kwargs, code, message):
    rpc = {"load": "LoadModel", "rollback": "RollBack", "set_deployment": "SetDeployment"}.get(
        method, "GetDeployment"
    )
    before = _requests(scrape(server.server.metrics_port), rpc, code.name)
    with AdminClient(server.target, token=ADMIN) as admin, pytest.raises(grpc.RpcError) as err:
        getattr(admin, method)(**kwargs)
    assert (err.value.code(), message in err.value.details()) == (code, True), err.value.details()
    assert server.server.config.model_repository not in err.value.details()
    after = scrape(server.server.metrics_port)
    assert _requests(after, rpc, code.name) == before + 1
    assert server.server.repo.rejected == {}  # nothing above is a rejected version
    assert server.server.repo.get("grid").version == "2"


def _raw_act(target: str, payload: bytes):
    with grpc.insecure_channel(target) as ch:
        call = ch.unary_unary(ACT)  # no serializer: the bytes go out as they are
        return call(payload, metadata=[("authorization", f"Bearer {POLICY}")], timeout=10)


def test_undecodable_bytes_get_invalid_argument_one_warning_and_a_count(server, caplog):
    before = scrape(server.server.metrics_port)
    with caplog.at_level(logging.INFO, logger="inspo.runtime"):
        for payload in (b"\xff\xff\xff\xff", b"\x0a\xff", b"\x12\x05ab"):
            with pytest.raises(grpc.RpcError) as err:
                _raw_act(server.target, payload)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details().startswith("request: ") and "ActRequest" in err.value.details()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 3 and not any(r.exc_info for r in warnings)
    after = scrape(server.server.metrics_port)
    assert _requests(after, "Act", "INVALID_ARGUMENT") == _requests(before, "Act", "INVALID_ARGUMENT") + 3
    invalid = "inspo_runtime_invalid_requests_total"
    assert sample(after, invalid, field="request") == sample(before, invalid, field="request") + 3
    assert len(_raw_act(server.target, GOOD.SerializeToString())) > 0  # the same path still serves


def test_a_bad_stream_message_is_answered_in_stream_and_the_stream_stays_open(server):
    bad_agent = build_request("grid", np.zeros((1, OBS_DIM), np.float32), ["ghost"])
    unknown = build_request("nope", np.zeros((1, OBS_DIM), np.float32), ["tl_0"])

    async def go():
        async with grpc.aio.insecure_channel(server.target) as ch:
            call = ch.stream_stream("/inspo.runtime.v1.PolicyService/ActStream")
            stream = call(metadata=[("authorization", f"Bearer {POLICY}")], timeout=20)
            out = []
            for payload in (GOOD.SerializeToString(), bad_agent.SerializeToString(), b"\xff\xff", unknown.SerializeToString(), GOOD.SerializeToString()):  # fmt: skip
                await stream.write(payload)
                out.append(policy_pb2.ActResponse.FromString(await stream.read()))
            await stream.done_writing()
            assert await stream.code() == grpc.StatusCode.OK
            return out

    first, agent, garbage, missing, last = asyncio.run(go())
    assert not first.HasField("error") and len(first.actions) == 1
    assert (agent.error.code_name, agent.error.code) == ("INVALID_ARGUMENT", 3)
    assert "agents[0].agent_id: unknown agent 'ghost'" in agent.error.message and not agent.actions
    assert garbage.error.code_name == "INVALID_ARGUMENT" and garbage.error.message.startswith("request: ")
    assert (missing.error.code_name, missing.error.code) == ("NOT_FOUND", 5)
    assert not last.HasField("error") and len(last.actions) == 1


def test_client_stream_raises_the_in_stream_error(server):
    async def go():
        async with AsyncPolicyClient(server.target, token=POLICY) as c:
            stream = c.stream(timeout=20)
            with pytest.raises(grpc.RpcError) as err:
                await stream.act("grid", np.zeros((1, OBS_DIM)), ["ghost"])
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            ok = await stream.act("grid", np.zeros((2, OBS_DIM)), AGENTS[:2])
            await stream.close()
            return ok

    assert len(asyncio.run(go()).actions) == 2


def test_an_oversized_request_gets_resource_exhausted_and_is_counted(tmp_path):
    """Above max_message_bytes (up to gRPC's own ceiling) the request is refused by our deserializer, so
    it appears in requests_total and the log like any other bad request, and the server goes on serving."""
    export(make_run(tmp_path / "run"), tmp_path / "models")
    cfg = config(tmp_path / "models", poll_interval_s=0)
    cfg.auth.policy_tokens = [POLICY]
    cfg.max_message_bytes = 4096
    with ServerThread(cfg, metrics=True) as s:
        before = scrape(s.server.metrics_port)
        big = build_request("grid", np.zeros((200, OBS_DIM), np.float32), [AGENTS[0]] * 200)
        payload = big.SerializeToString()
        assert 4096 < len(payload) < 4 * 4096
        with pytest.raises(grpc.RpcError) as err:
            _raw_act(s.target, payload)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "exceed max_message_bytes=4096" in err.value.details()
        after = scrape(s.server.metrics_port)
        assert (
            _requests(after, "Act", "RESOURCE_EXHAUSTED")
            == _requests(before, "Act", "RESOURCE_EXHAUSTED") + 1
        )
        assert len(_raw_act(s.target, GOOD.SerializeToString())) > 0
