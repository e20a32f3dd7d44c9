"""Clients of the runtime: :class:`PolicyClient` (sync), :class:`AsyncPolicyClient` (asyncio, with
ActStream) and :class:`AdminClient`. Used by the tests, the benchmark and ``grpc://`` controllers.

    client = PolicyClient("127.0.0.1:50051", token=os.environ["INSPO_RUNTIME_TOKEN"])
    result = client.act("elevator", {"car_0": obs0, "car_1": obs1}, masks={"car_0": m0, "car_1": m1})
    result.actions, result.probability, result.fallback, result.model_version
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import grpc
import numpy as np

from protos.inspo.runtime.v1 import admin_pb2, admin_pb2_grpc, policy_pb2, policy_pb2_grpc

TOKEN_ENV = "INSPO_RUNTIME_TOKEN"


def parse_url(url: str) -> tuple[str, str, bool]:
    """``grpc://host:port/model`` (or ``grpcs://`` for TLS) -> ``(host:port, model, tls)``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("grpc", "grpcs") or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"expected grpc://host:port/<model> (or grpcs://), got {url!r}")
    return parsed.netloc, parsed.path.strip("/"), parsed.scheme == "grpcs"


@dataclass
class ActResult:
    agent_ids: list[str]
    actions: np.ndarray  # int64 [n]
    probability: np.ndarray  # float32 [n]
    probs: np.ndarray | None  # float32 [n, A] when return_probs
    fallback: np.ndarray  # bool [n]
    fallback_reason: list[str]
    model_version: str
    request_id: str
    arms: list[str] | None = None  # per agent "incumbent" / "candidate" under a canary
    guardrail: list[str] | None = None  # per agent the guardrail rule that replaced the action ("" = none)

    def as_dict(self) -> dict[str, int]:
        return dict(zip(self.agent_ids, self.actions.tolist(), strict=True))


def build_request(
    model: str,
    obs: Mapping[str, Sequence[float]] | np.ndarray,
    agent_ids: Sequence[str] | None = None,
    masks: Mapping[str, Sequence[bool]] | np.ndarray | None = None,
    *,
    deterministic: bool = True,
    version: str = "",
    return_probs: bool = False,
    request_id: str = "",
    episode_id: str = "",
    t: int = 0,
    seed: int | None = None,
    packed: bool = False,
    raw: bool = True,
    current_actions: Mapping[str, int] | None = None,
    current_elapsed: Mapping[str, float] | None = None,
) -> policy_pb2.ActRequest:
    """An ActRequest from ``{agent_id: obs}`` or an ``[n, O]`` array with ``agent_ids``.

    ``packed`` sends one float32 blob for all agents (the fastest path); otherwise one sub-message
    per agent with ``obs_raw`` bytes (``raw=True``) or ``repeated float``.
    """
    if isinstance(obs, Mapping):
        agent_ids = list(obs)
        rows = [obs[a] for a in agent_ids]
        obs_arr = (
            np.asarray(rows, dtype=np.float32).reshape(len(agent_ids), -1)
            if rows
            else np.zeros((0, 0), np.float32)
        )
    else:
        if agent_ids is None:
            raise ValueError("agent_ids are required with an observation array")
        agent_ids = list(agent_ids)
        obs_arr = np.asarray(obs, dtype=np.float32).reshape(len(agent_ids), -1)
    if isinstance(masks, Mapping):
        mask_arr = np.asarray([masks[a] for a in agent_ids], dtype=bool) if masks else None
    else:
        mask_arr = None if masks is None else np.asarray(masks, dtype=bool).reshape(len(agent_ids), -1)
    request = policy_pb2.ActRequest(
        model=model,
        version=version,
        deterministic=deterministic,
        return_probs=return_probs,
        request_id=request_id,
        episode_id=episode_id,
        t=t,
    )
    if seed is not None:
        request.seed = seed
    if packed:
        request.packed.agent_ids.extend(agent_ids)
        request.packed.obs_raw = np.ascontiguousarray(obs_arr, dtype="<f4").tobytes()
        if mask_arr is not None:
            request.packed.action_mask_raw = mask_arr.astype(np.uint8).tobytes()
        if current_actions:
            request.packed.current_action.extend(int(current_actions[a]) for a in agent_ids)
        if current_elapsed:
            request.packed.current_action_elapsed.extend(float(current_elapsed[a]) for a in agent_ids)
        return request
    add = request.agents.add
    for i, agent_id in enumerate(agent_ids):
        item = add(agent_id=agent_id)
        if raw:
            item.obs_raw = obs_arr[i].astype("<f4").tobytes()
        else:
            item.obs.extend(obs_arr[i].tolist())
        if mask_arr is not None:
            item.action_mask.extend(mask_arr[i].tolist())
        if current_actions and agent_id in current_actions:
            item.current_action = int(current_actions[agent_id])
        if current_elapsed and agent_id in current_elapsed:
            item.current_action_elapsed = float(current_elapsed[agent_id])
    return request


def parse_response(request: policy_pb2.ActRequest, response: policy_pb2.ActResponse) -> ActResult:
    if request.HasField("packed"):
        p = response.packed
        n = len(p.action)
        ids = list(request.packed.agent_ids)
        probs = np.frombuffer(p.probs_raw, dtype="<f4").reshape(n, -1) if p.probs_raw else None
        fallback = np.zeros(n, dtype=bool)
        reasons = [""] * n
        for i, reason in zip(p.fallback_index, p.fallback_reason, strict=True):
            fallback[i], reasons[i] = True, reason
        arms = None
        if response.candidate_model:
            arms = ["incumbent"] * n
            for i in p.candidate_index:
                arms[i] = "candidate"
        guard = [""] * n
        for i, rule in zip(p.guardrail_index, p.guardrail_rule, strict=True):
            guard[i] = rule
        return ActResult(
            ids,
            np.asarray(p.action, np.int64),
            np.asarray(p.probability, np.float32),
            probs,
            fallback,
            reasons,
            response.model_version,
            response.request_id,
            arms,
            guard,
        )
    acts = response.actions
    probs = np.asarray([list(a.probs) for a in acts], dtype=np.float32) if request.return_probs else None
    return ActResult(
        [a.agent_id for a in acts],
        np.asarray([a.action for a in acts], np.int64),
        np.asarray([a.probability for a in acts], np.float32),
        probs,
        np.asarray([a.fallback for a in acts], bool),
        [a.fallback_reason for a in acts],
        response.model_version,
        response.request_id,
        [a.arm for a in acts] if response.candidate_model else None,
        [a.guardrail for a in acts],
    )


def _credentials(root_cert: str | None, client_cert: str | None, client_key: str | None):
    def read(path):
        return open(path, "rb").read() if path else None  # noqa: SIM115

    return grpc.ssl_channel_credentials(read(root_cert), read(client_key), read(client_cert))


def _options(max_message_bytes: int):
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


class _Base:
    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls: bool = False,
        root_cert: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        timeout: float | None = 5.0,
        max_message_bytes: int = 64 * 1024 * 1024,
        channel_options: list | None = None,
    ):
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout
        self.target = target
        self._secure = tls or bool(root_cert or client_cert)
        self._creds = _credentials(root_cert, client_cert, client_key) if self._secure else None
        self._options = _options(max_message_bytes) + list(channel_options or [])


class PolicyClient(_Base):
    """Blocking client (one channel; thread-safe)."""

    def __init__(self, target: str, **kw):
        super().__init__(target, **kw)
        self.channel = (
            grpc.secure_channel(target, self._creds, self._options)
            if self._secure
            else grpc.insecure_channel(target, self._options)
        )
        self.stub = policy_pb2_grpc.PolicyServiceStub(self.channel)

    def act(
        self, model: str, obs, agent_ids=None, masks=None, timeout: float | None = None, **kw
    ) -> ActResult:
        request = build_request(model, obs, agent_ids, masks, **kw)
        return parse_response(request, self.act_raw(request, timeout))

    def act_raw(self, request: policy_pb2.ActRequest, timeout: float | None = None) -> policy_pb2.ActResponse:
        return self.stub.Act(request, timeout=timeout or self.timeout, metadata=self.metadata)

    def report_outcome(
        self,
        model: str,
        episode_id: str,
        t: int,
        rewards: Mapping[str, float],
        terminated: Mapping[str, bool] | None = None,
        truncated: Mapping[str, bool] | None = None,
        kpis: Mapping[str, float] | None = None,
        timeout: float | None = None,
        agent_kpis: Mapping[str, Mapping[str, float]] | None = None,
    ) -> int:
        request = outcome_request(model, episode_id, t, rewards, terminated, truncated, kpis, agent_kpis)
        return self.stub.ReportOutcome(
            request, timeout=timeout or self.timeout, metadata=self.metadata
        ).matched

    def model_info(self, model: str = "") -> list[policy_pb2.ModelInfo]:
        request = policy_pb2.ModelInfoRequest(model=model)
        return list(self.stub.GetModelInfo(request, timeout=self.timeout, metadata=self.metadata).models)

    def health(self, service: str = "") -> str:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout).status
        return health_pb2.HealthCheckResponse.ServingStatus.Name(status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def outcome_request(
    model, episode_id, t, rewards, terminated=None, truncated=None, kpis=None, agent_kpis=None
):
    request = policy_pb2.OutcomeRequest(model=model, episode_id=episode_id, t=t)
    for agent_id, reward in rewards.items():
        item = request.agents.add(
            agent_id=agent_id,
            reward=float(reward),
            terminated=bool((terminated or {}).get(agent_id, False)),
            truncated=bool((truncated or {}).get(agent_id, False)),
        )
        for key, value in ((agent_kpis or {}).get(agent_id) or {}).items():
            item.kpis[key] = float(value)
    for key, value in (kpis or {}).items():
        request.kpis[key] = float(value)
    return request


class AsyncPolicyClient(_Base):
    """asyncio client; ``stream()`` opens an ActStream for request/response ping-pong."""

    def __init__(self, target: str, **kw):
        super().__init__(target, **kw)
        self.channel = (
            grpc.aio.secure_channel(target, self._creds, self._options)
            if self._secure
            else grpc.aio.insecure_channel(target, self._options)
        )
        self.stub = policy_pb2_grpc.PolicyServiceStub(self.channel)

    async def act(
        self, model: str, obs, agent_ids=None, masks=None, timeout: float | None = None, **kw
    ) -> ActResult:
        request = build_request(model, obs, agent_ids, masks, **kw)
        return parse_response(request, await self.act_raw(request, timeout))

    async def act_raw(
        self, request: policy_pb2.ActRequest, timeout: float | None = None
    ) -> policy_pb2.ActResponse:
        return await self.stub.Act(request, timeout=timeout or self.timeout, metadata=self.metadata)

    async def report_outcome(
        self, model, episode_id, t, rewards, terminated=None, truncated=None, kpis=None
    ) -> int:
        request = outcome_request(model, episode_id, t, rewards, terminated, truncated, kpis)
        return (await self.stub.ReportOutcome(request, timeout=self.timeout, metadata=self.metadata)).matched

    async def model_info(self, model: str = "") -> list[policy_pb2.ModelInfo]:
        response = await self.stub.GetModelInfo(
            policy_pb2.ModelInfoRequest(model=model), timeout=self.timeout, metadata=self.metadata
        )
        return list(response.models)

    def stream(self, timeout: float | None = None) -> ActStream:
        """A bidirectional stream: ``await s.act_raw(request)`` sends one request and awaits its response."""
        return ActStream(self.stub.ActStream(timeout=timeout, metadata=self.metadata))

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ActStream:
    def __init__(self, call):
        self.call = call

    async def act_raw(self, request: policy_pb2.ActRequest) -> policy_pb2.ActResponse:
        # If the server already ended the call (e.g. refused it), the write fails with a generic error
        # ("Internal error from Core" when it races the server's abort); the call's own status says why.
        with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
            await self.call.write(request)
        response = await self.call.read()
        if response is grpc.aio.EOF:
            code, details = await self.call.code(), await self.call.details()
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)
        return response

    async def act(self, model: str, obs, agent_ids=None, masks=None, **kw) -> ActResult:
        """One request; a request the server refused in-stream raises ``grpc.RpcError`` (the stream stays open)."""
        request = build_request(model, obs, agent_ids, masks, **kw)
        response = await self.act_raw(request)
        if response.HasField("error"):
            code = _CODES.get(response.error.code, grpc.StatusCode.UNKNOWN)
            raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), response.error.message)
        return parse_response(request, response)

    async def close(self) -> None:
        await self.call.done_writing()


class AdminClient(_Base):
    """ModelAdmin: load, list, roll back (needs an admin token)."""

    def __init__(self, target: str, **kw):
        super().__init__(target, **kw)
        self.channel = (
            grpc.secure_channel(target, self._creds, self._options)
            if self._secure
            else grpc.insecure_channel(target, self._options)
        )
        self.stub = admin_pb2_grpc.ModelAdminStub(self.channel)

    def load(self, model: str, version: str = "") -> admin_pb2.LoadModelResponse:
        return self.stub.LoadModel(
            admin_pb2.LoadModelRequest(model=model, version=str(version)),
            timeout=self.timeout,
            metadata=self.metadata,
        )

    def list(self) -> admin_pb2.ListModelsResponse:
        return self.stub.ListModels(
            admin_pb2.ListModelsRequest(), timeout=self.timeout, metadata=self.metadata
        )

    def rollback(self, model: str, to_version: str = "") -> admin_pb2.RollBackResponse:
        return self.stub.RollBack(
            admin_pb2.RollBackRequest(model=model, to_version=str(to_version)),
            timeout=self.timeout,
            metadata=self.metadata,
        )

    # -- shadow / canary (docs/deployment.md) ---------------------------------------------------
    def deployment(self, model: str) -> admin_pb2.Deployment:
        return self.stub.GetDeployment(
            admin_pb2.GetDeploymentRequest(model=model), timeout=self.timeout, metadata=self.metadata
        )

    def set_deployment(
        self,
        model: str,
        incumbent: str = "",
        shadow: str = "",
        candidate: str = "",
        canary_share: float = 0.0,
        canary_salt: str = "",
        canary_agents: list[str] | None = None,
    ) -> admin_pb2.Deployment:
        """Replace ``model``'s deployment (every field; empty = none)."""
        request = admin_pb2.Deployment(
            model=model,
            incumbent=incumbent,
            shadow=shadow,
            candidate=candidate,
            canary_share=canary_share,
            canary_salt=canary_salt,
            canary_agents=canary_agents or [],
        )
        return self.stub.SetDeployment(request, timeout=self.timeout, metadata=self.metadata)

    def promote(self, model: str) -> admin_pb2.Deployment:
        return self.stub.PromoteCandidate(
            admin_pb2.DeploymentActionRequest(model=model), timeout=self.timeout, metadata=self.metadata
        )

    def rollback_candidate(self, model: str) -> admin_pb2.Deployment:
        return self.stub.RollBackCandidate(
            admin_pb2.DeploymentActionRequest(model=model), timeout=self.timeout, metadata=self.metadata
        )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
