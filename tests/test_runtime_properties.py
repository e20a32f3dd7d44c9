"""Property: whatever bytes a client sends to Act or ActStream, a live runtime answers OK or a documented
status (docs/serving.md, "Status codes"), never UNKNOWN or INTERNAL, and stays SERVING."""

import asyncio
import struct

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_helpers import AGENTS, N_ACTIONS, OBS_DIM, ServerThread, config, export, make_run

from protos.inspo.runtime.v1 import policy_pb2
from runtime.client import PolicyClient

DOCUMENTED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
ACT = "/inspo.runtime.v1.PolicyService/Act"
STREAM = "/inspo.runtime.v1.PolicyService/ActStream"
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)  # what protobuf strings can carry


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("properties")
    export(make_run(root / "run"), root / "models")
    with ServerThread(config(root / "models", poll_interval_s=0)) as s:
        yield s


floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


@st.composite
def act_requests(draw) -> policy_pb2.ActRequest:
    model = draw(st.one_of(st.sampled_from(["grid", "grid", "", "other", "../grid", "g" * 300]), TEXT))
    version = draw(st.one_of(st.sampled_from(["", "", "1", "2", "0", "1\x00", "../1"]), TEXT))
    ids = st.one_of(st.sampled_from([*AGENTS, "ghost", ""]), TEXT)
    request = policy_pb2.ActRequest(
        model=model, version=version, deterministic=draw(st.booleans()), return_probs=draw(st.booleans())
    )
    if draw(st.booleans()):
        n = draw(st.integers(0, 4))
        agent_ids = draw(st.lists(ids, min_size=n, max_size=n))
        obs = draw(st.lists(floats, min_size=0, max_size=n * OBS_DIM + 2))
        packed = request.packed
        packed.agent_ids.extend(agent_ids)
        packed.obs_raw = b"".join(_f32(v) for v in obs)
        packed.action_mask_raw = draw(st.binary(max_size=n * N_ACTIONS + 1))
        packed.current_action.extend(draw(st.lists(st.integers(-5, 10), max_size=n + 1)))
    else:
        for _ in range(draw(st.integers(0, 4))):
            length = draw(st.sampled_from([OBS_DIM, OBS_DIM, 0, 1, OBS_DIM + 1]))
            item = request.agents.add(agent_id=draw(ids))
            if draw(st.booleans()):
                item.obs.extend(draw(st.lists(floats, min_size=length, max_size=length)))
            else:
                item.obs_raw = b"".join(
                    _f32(v) for v in draw(st.lists(floats, min_size=length, max_size=length))
                )
            item.action_mask.extend(draw(st.lists(st.booleans(), max_size=N_ACTIONS + 1)))
            if draw(st.booleans()):
                item.current_action = draw(st.integers(-(2**31), 2**31 - 1))
    return request


def _f32(value: float) -> bytes:
    return struct.pack("<f", value)


@st.composite
def payloads(draw) -> bytes:
    """Valid requests, the same with bytes flipped or cut, and raw bytes."""
    data = draw(act_requests()).SerializeToString()
    kind = draw(st.sampled_from(["valid", "valid", "flipped", "cut", "raw"]))
    if kind == "flipped" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    elif kind == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "raw":
        data = draw(st.binary(max_size=64))
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads())
def test_act_answers_only_documented_status_codes(server, payload):
    with grpc.insecure_channel(server.target) as ch:
        try:
            ch.unary_unary(ACT)(payload, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code, details = err.code(), err.details()
            assert details and "\n" not in details
        assert code in DOCUMENTED, (code, payload)
    assert server.server.repo.any_loaded() and not server.server._draining  # noqa: SLF001


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(payloads(), min_size=1, max_size=8))
def test_act_stream_answers_every_message_in_stream(server, batch):
    async def go():
        async with grpc.aio.insecure_channel(server.target) as ch:
            stream = ch.stream_stream(STREAM)(timeout=20)
            codes = []
            for payload in batch:
                await stream.write(payload)
                response = policy_pb2.ActResponse.FromString(await stream.read())
                codes.append(response.error.code_name or "OK")
            await stream.done_writing()
            return codes, await stream.code()

    codes, final = asyncio.run(go())
    assert final == grpc.StatusCode.OK and len(codes) == len(batch)
    assert {grpc.StatusCode[c] for c in codes} <= DOCUMENTED


def test_health_stays_serving_after_the_properties(server):
    """Runs after the properties above (file order): the standard health check still says SERVING."""
    with PolicyClient(server.target) as c:
        assert c.health() == "SERVING"
