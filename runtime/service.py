"""The gRPC services: ``PolicyService`` (Act, ActStream, ReportOutcome, GetModelInfo) and ``ModelAdmin``.

The Act path, in order: find the model (NOT_FOUND), decode and validate the agents
(INVALID_ARGUMENT naming the field, agent and expected shape), mark rows the fallback must answer
(non-finite or out-of-bounds observations when so configured, too little deadline left), run ONNX
Runtime (inline, or through the dynamic batcher), pick actions (argmax from the graph, or sampled),
override fallback rows, count metrics, hand the decision to the decision log, build the response.

The RPC methods are thin: :class:`runtime.rpc.Calls` runs each one, maps what it raises through the one
table of :mod:`runtime.errors` and counts it with the code returned; ActStream answers a failed request
in-stream with the same code. Undecodable bytes arrive as :class:`runtime.errors.Undecodable`.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import numpy as np

from protos.inspo.runtime.v1 import admin_pb2, admin_pb2_grpc, policy_pb2, policy_pb2_grpc
from runtime.batching import Batcher
from runtime.config import RuntimeConfig
from runtime.decision_log import DecisionLog
from runtime.deployment import (
    CANDIDATE,
    INCUMBENT,
    Deployment,
    DeploymentError,
    Deployments,
    ShadowJob,
    ShadowRunner,
    rule_actions,
)
from runtime.errors import Undecodable, invalid
from runtime.guardrails import Guardrails
from runtime.metrics import Metrics
from runtime.model import LoadedModel
from runtime.names import check_name, check_ref, check_version
from runtime.repository import ModelNotFound, ModelRepository
from runtime.rpc import Calls

log = logging.getLogger("inspo.runtime.service")
_EMPTY_BOOL = np.zeros(0, dtype=bool)


class Decoded:
    __slots__ = ("agents", "obs", "mask", "current", "ids", "elapsed")

    def __init__(self, agents, obs, mask, current, ids, elapsed=None):
        self.agents, self.obs, self.mask, self.current, self.ids = agents, obs, mask, current, ids
        self.elapsed = elapsed

    def take(self, rows: np.ndarray) -> Decoded:
        """The subset ``rows`` (one canary arm)."""
        pick = rows.tolist()
        return Decoded(
            self.agents[rows],
            self.obs[rows],
            None if self.mask is None else self.mask[rows],
            None if self.current is None else [self.current[i] for i in pick],
            [self.ids[i] for i in pick],
            None if self.elapsed is None else [self.elapsed[i] for i in pick],
        )


def _per_agent(values, n: int, field: str) -> list | None:
    """An optional packed column with one value per agent: ``None`` when empty."""
    if not len(values):
        return None
    if len(values) != n:
        raise invalid(field, f"expected {n} values (one per agent), got {len(values)}")
    return list(values)


PACKED_CACHE_SIZE = 64  # distinct packed agent lists remembered per model version


def _raise_duplicate(ids: list[str], field: str) -> None:
    seen: set[str] = set()
    for i, a in enumerate(ids):
        if a in seen:
            raise invalid(field.format(i), f"agent {a!r} appears twice in one request")
        seen.add(a)


def _packed_agents(ids: list[str], model: LoadedModel, max_agents: int) -> np.ndarray:
    """Indices of a packed request's agent list (validated: known, distinct, not too many)."""
    n = len(ids)
    if n == 0:
        raise invalid("packed.agent_ids", "empty request: no agents")
    if n > max_agents:
        raise invalid("packed.agent_ids", f"{n} agents exceed max_agents_per_request={max_agents}")
    index = model.agent_index
    try:
        agents = np.fromiter((index[a] for a in ids), dtype=np.int64, count=n)
    except KeyError as err:
        i = ids.index(err.args[0])
        raise invalid(
            f"packed.agent_ids[{i}]",
            f"unknown agent {err.args[0]!r} for model {model.name} (known: {model.agent_ids[:20]})",
        ) from None
    if n > 1 and len(set(ids)) != n:
        _raise_duplicate(ids, "packed.agent_ids[{}]")
    agents.flags.writeable = False  # shared by every request with this list
    return agents


def decode_agents(request: policy_pb2.ActRequest, model: LoadedModel, max_agents: int) -> Decoded:
    """Turn a request's agents into arrays, or raise :class:`RequestError` naming the bad field."""
    index, O, A = model.agent_index, model.obs_dim, model.n_actions  # noqa: E741
    if request.HasField("packed"):
        if len(request.agents):
            raise invalid("packed", "set either agents or packed, not both")
        packed = request.packed
        key = tuple(packed.agent_ids)
        ids = list(key)
        n = len(ids)
        agents = model.cache.packed_agents.get(key)
        if agents is None:
            agents = _packed_agents(ids, model, max_agents)
            if len(model.cache.packed_agents) < PACKED_CACHE_SIZE:
                model.cache.packed_agents[key] = agents
        if len(packed.obs_raw) != n * O * 4:
            raise invalid(
                "packed.obs_raw", f"expected {n}x{O} float32 = {n * O * 4} bytes, got {len(packed.obs_raw)}"
            )
        obs = np.frombuffer(packed.obs_raw, dtype="<f4").reshape(n, O)
        if packed.action_mask_raw:
            if len(packed.action_mask_raw) != n * A:
                raise invalid(
                    "packed.action_mask_raw",
                    f"expected {n}x{A} = {n * A} bytes, got {len(packed.action_mask_raw)}",
                )
            mask = np.frombuffer(packed.action_mask_raw, dtype=np.uint8).reshape(n, A) != 0
        else:
            mask = None
        current = _per_agent(packed.current_action, n, "packed.current_action")
        elapsed = _per_agent(packed.current_action_elapsed, n, "packed.current_action_elapsed")
        prefix = "packed.agent_ids"
    else:
        items = request.agents
        n = len(items)
        if n == 0:
            raise invalid("agents", "empty request: no agents")
        if n > max_agents:
            raise invalid("agents", f"{n} agents exceed max_agents_per_request={max_agents}")
        agents = np.empty(n, dtype=np.int64)
        obs = np.empty((n, O), dtype=np.float32)
        mask = None
        current = elapsed = None
        ids = []
        for i, item in enumerate(items):
            agent_id = item.agent_id
            k = index.get(agent_id)
            if k is None:
                raise invalid(
                    f"agents[{i}].agent_id",
                    f"unknown agent {agent_id!r} for model {model.name} (known: {model.agent_ids[:20]})",
                )
            agents[i] = k
            ids.append(agent_id)
            raw = item.obs_raw
            if raw:
                if len(item.obs):
                    raise invalid(f"agents[{i}].obs", f"agent {agent_id!r}: set obs or obs_raw, not both")
                if len(raw) != 4 * O:
                    raise invalid(
                        f"agents[{i}].obs_raw",
                        f"agent {agent_id!r}: expected {O} float32 = {4 * O} bytes, got {len(raw)}",
                    )
                obs[i] = np.frombuffer(raw, dtype="<f4")
            else:
                if len(item.obs) != O:
                    raise invalid(
                        f"agents[{i}].obs", f"agent {agent_id!r}: expected {O} floats, got {len(item.obs)}"
                    )
                obs[i] = item.obs
            m = item.action_mask
            if len(m):
                if len(m) != A:
                    raise invalid(
                        f"agents[{i}].action_mask", f"agent {agent_id!r}: expected {A} booleans, got {len(m)}"
                    )
                if mask is None:
                    mask = np.ones((n, A), dtype=bool)
                mask[i] = m
            if item.HasField("current_action"):
                if current is None:
                    current = [None] * n
                current[i] = item.current_action
            if item.HasField("current_action_elapsed"):
                if elapsed is None:
                    elapsed = [None] * n
                elapsed[i] = item.current_action_elapsed
        prefix = "agents"
    if prefix == "agents" and n > 1 and len(set(ids)) != n:
        _raise_duplicate(ids, "agents[{}].agent_id")
    if mask is not None:
        legal = mask.any(axis=1)
        if not legal.all():
            i = int(np.flatnonzero(~legal)[0])
            field = "packed.action_mask_raw" if prefix.startswith("packed") else f"agents[{i}].action_mask"
            raise invalid(field, f"agent {ids[i]!r}: no legal action in the mask")
    return Decoded(agents, obs, mask, current, ids, elapsed)


class Routed:
    """What answers a request, before the guardrails: arrays per row, and who served them."""

    __slots__ = (
        "obs",
        "probs",
        "action",
        "chosen",
        "fallback",
        "fixed",
        "arms",
        "candidate",
        "served_version",
    )

    def __init__(self, obs, probs, action, chosen, fallback, fixed, arms, candidate, served_version):
        self.obs, self.probs, self.action, self.chosen = obs, probs, action, chosen
        self.fallback: dict[int, str] = fallback  # row -> reason a fallback answered
        self.fixed = fixed  # rows a guardrail must leave alone (None: none yet)
        self.arms: list[str] | None = arms  # per row, under a deployment
        self.candidate: LoadedModel | None = candidate  # the canary candidate that answered some rows
        self.served_version = served_version


def encode_response(
    request: policy_pb2.ActRequest, model_name: str, ids: list[str], r: Routed, changed: dict[int, str]
) -> policy_pb2.ActResponse:
    """The response in the request's encoding (packed arrays, or one message per agent)."""
    n = len(ids)
    response = policy_pb2.ActResponse(
        model=model_name, model_version=r.served_version, request_id=request.request_id
    )
    if r.candidate is not None:
        response.candidate_model, response.candidate_version = r.candidate.name, r.candidate.version
    actions_list, chosen_list = r.action.tolist(), r.chosen.tolist()
    if request.HasField("packed"):
        out = response.packed
        out.action.extend(actions_list)
        out.probability.extend(chosen_list)
        if request.return_probs:
            out.probs_raw = np.ascontiguousarray(r.probs, dtype="<f4").tobytes()
        for i in sorted(r.fallback):
            out.fallback_index.append(i)
            out.fallback_reason.append(r.fallback[i])
        if r.candidate is not None:
            out.candidate_index.extend(i for i, arm in enumerate(r.arms) if arm == CANDIDATE)
        for i in sorted(changed):
            out.guardrail_index.append(i)
            out.guardrail_rule.append(changed[i])
        return response
    add = response.actions.add
    if request.return_probs:
        rows = r.probs.tolist()
        for i in range(n):
            add(agent_id=ids[i], action=actions_list[i], probability=chosen_list[i], probs=rows[i])
    else:
        for i in range(n):
            add(agent_id=ids[i], action=actions_list[i], probability=chosen_list[i])
    for i, reason in r.fallback.items():
        response.actions[i].fallback = True
        response.actions[i].fallback_reason = reason
    if r.candidate is not None:
        for i, arm in enumerate(r.arms):
            response.actions[i].arm = arm
    for i, rule_name in changed.items():
        response.actions[i].guardrail = rule_name
    return response


def finite_rows(d: Decoded, rule, request) -> np.ndarray | None:
    """The one NaN/Inf check: per row whether its observation is finite (None when all are). Under the
    model's ``nonfinite_obs = "reject"`` the first bad row is an INVALID_ARGUMENT naming its field."""
    if np.isfinite(d.obs).all():
        return None
    finite = np.isfinite(d.obs).all(axis=1)
    if rule.nonfinite_obs == "reject":
        i = int(np.flatnonzero(~finite)[0])
        field = "packed.obs_raw" if request.HasField("packed") else f"agents[{i}].obs"
        raise invalid(field, f"agent {d.ids[i]!r}: observation contains NaN or Inf")
    return finite


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(
        self,
        config: RuntimeConfig,
        repo: ModelRepository,
        metrics: Metrics,
        decision_log: DecisionLog | None,
        deployments: Deployments | None = None,
        shadow_runner: ShadowRunner | None = None,
        calls: Calls | None = None,
    ):
        self.config, self.repo, self.metrics, self.decision_log = config, repo, metrics, decision_log
        self.calls = calls or Calls(metrics, repo.entries.__contains__)
        self.deployments = deployments
        self.shadow_runner = shadow_runner or ShadowRunner(metrics, config.decision_log.__class__())
        self._guardrails: dict[tuple, Guardrails] = {}
        self.rng = np.random.default_rng()
        self.batchers: dict[str, Batcher | None] = {}  # None: batching off for that model
        metrics.inflight.set_function(lambda: self.calls.inflight)  # read at scrape time, not per call
        metrics.drift.window_rows = lambda name: config.model(name).drift_window or None

    def _model(self, name: str, version: str = "") -> LoadedModel:
        """The served (or pinned) model; names are checked only on a miss (a served name is valid)."""
        try:
            return self.repo.get(name, version)
        except ModelNotFound:
            check_name(name)
            check_version(version)
            raise

    def batcher(self, model: LoadedModel) -> Batcher | None:
        if model.name in self.batchers:
            return self.batchers[model.name]
        cfg = self.config.model(model.name).batching
        b = None
        if cfg.enabled:
            b = Batcher(cfg.max_batch_size, cfg.max_queue_delay_us, self.metrics.model(model.name))
        self.batchers[model.name] = b
        return b

    # -- the Act core --------------------------------------------------------------------------
    async def _act(self, request: policy_pb2.ActRequest, context) -> policy_pb2.ActResponse:
        """decode -> route (deployment arms) -> infer (``_decide``) -> guard -> count and log -> encode."""
        model = self._model(request.model, request.version)
        d = decode_agents(request, model, self.config.max_agents_per_request)
        mm = self.metrics.model(model.name)
        if model.cache.action_table is None:
            model.cache.action_table = mm.action_table(model.agent_ids, model.n_actions)
        n = len(d.agents)
        mask = d.mask
        finite = finite_rows(d, model.fallback, request)
        all_finite = finite is None
        if not request.version:  # drift of the served version's traffic (runtime/drift.py)
            self.metrics.drift.observe(model, d.obs, finite)
        remaining = context.time_remaining() if context is not None else None
        # A request pinned to a version bypasses the deployment (it asked for that version).
        dep = None if request.version or self.deployments is None else self.deployments.get(model.name)
        if dep is None:
            obs, probs, action, chosen, fallback = await self._decide(
                model, request, d, remaining, all_finite
            )
            routed = Routed(obs, probs, action, chosen, fallback, None, None, None, model.version)
        else:
            routed = await self._route(dep, model, request, d, finite, remaining, all_finite)
        run_mask = mask if mask is not None else model.all_legal(n)
        guard = self.guardrails(model)
        changed: dict[int, str] = {}
        if guard is not None:
            changed = self._guard(guard, model, request, d, routed, run_mask)
        obs, action, chosen = routed.obs, routed.action, routed.chosen

        mm.decisions.inc(n)
        model.cache.action_table.add(d.agents, action)
        if self.decision_log is not None:
            self.decision_log.record(
                model, request.episode_id, request.t, d.agents, obs, run_mask, action, chosen
            )
        response = encode_response(request, model.name, d.ids, routed, changed)
        if dep is not None and dep.shadow:
            self._shadow(
                dep,
                model,
                d,
                obs,
                run_mask,
                action,
                chosen,
                routed.arms,
                routed.served_version,
                request,
                guard,
            )
        return response

    async def _route(
        self, dep: Deployment, model: LoadedModel, request, d: Decoded, finite, remaining, all_finite
    ):
        """The deployment's answer: the incumbent (model, other model or rule) and the canary candidate's arm."""
        n = len(d.agents)
        incumbent = candidate = None
        if dep.incumbent and dep.incumbent != "rule":
            try:
                incumbent = self.deployments.resolve(dep.incumbent, model)
            except (ModelNotFound, DeploymentError) as err:
                log.warning("deployment of %s: incumbent %s unavailable (%s)", model.name, dep.incumbent, err)
        elif not dep.incumbent:
            incumbent = model
        if dep.canary:
            try:
                candidate = self.deployments.resolve(dep.candidate, model)
            except (ModelNotFound, DeploymentError) as err:
                log.warning("deployment of %s: candidate %s unavailable (%s)", model.name, dep.candidate, err)
        in_canary = (
            dep.candidate_flags(model.agent_ids)[d.agents] if candidate is not None else np.zeros(n, bool)
        )
        obs = np.where(finite[:, None], d.obs, 0.0).astype(np.float32) if finite is not None else d.obs
        fixed = np.zeros(n, dtype=bool)  # rows a guardrail must leave alone (rule answers, fallbacks)
        probs = np.zeros((n, model.n_actions), dtype=np.float32)
        action = np.zeros(n, dtype=np.int64)
        chosen = np.ones(n, dtype=np.float32)
        fallback: dict[int, str] = {}
        for arm_rows, arm_model in (
            (np.flatnonzero(~in_canary), incumbent),
            (np.flatnonzero(in_canary), candidate),
        ):
            if len(arm_rows) == 0:
                continue
            sub = d.take(arm_rows)
            if arm_model is None:  # the incumbent rule
                a = rule_actions(dep.rule, model, sub.agents, sub.obs, sub.mask, sub.current)
                action[arm_rows] = a
                probs[arm_rows, a] = 1.0
                fixed[arm_rows] = True
                continue
            _, p, a, c, fb = await self._decide(arm_model, request, sub, remaining, all_finite)
            probs[arm_rows], action[arm_rows], chosen[arm_rows] = p, a, c
            for j, reason in fb.items():
                fallback[int(arm_rows[j])] = reason
        arms = [CANDIDATE if x else INCUMBENT for x in in_canary.tolist()]
        k = int(in_canary.sum())
        for arm, count in ((INCUMBENT, n - k), (CANDIDATE, k)):
            if count:
                self.metrics.arm_decisions.labels(model.name, arm).inc(count)
        served_version = incumbent.version if incumbent is not None else f"rule:{dep.rule.rule}"
        return Routed(obs, probs, action, chosen, fallback, fixed, arms, candidate, served_version)

    def _guard(self, guard: Guardrails, model: LoadedModel, request, d: Decoded, routed: Routed, run_mask):
        """Enforce the guardrails on ``routed`` in place, count them; return the rows changed and their rule."""
        n = len(d.agents)
        fixed = routed.fixed if routed.fixed is not None else np.zeros(n, dtype=bool)
        for i in routed.fallback:
            fixed[i] = True
        rng = np.random.default_rng(request.seed) if request.HasField("seed") else self.rng
        enforced = guard.enforce(
            d.agents,
            routed.obs,
            run_mask,
            d.current,
            d.elapsed,
            routed.probs,
            routed.action,
            routed.chosen,
            fixed,
            request.deterministic,
            rng,
        )
        routed.probs, routed.action, routed.chosen = enforced.probs, enforced.action, enforced.chosen
        for rule_name, count in enforced.infeasible.items():
            if count:
                self.metrics.guardrail_infeasible.labels(model.name, rule_name).inc(count)
        if enforced.missing_state:
            self.metrics.guardrail_missing_state.labels(model.name).inc(enforced.missing_state)
        for rule_name in enforced.changed.values():
            self.metrics.guardrail_interventions.labels(model.name, rule_name).inc()
        return enforced.changed

    def _shadow(self, dep, model, d, obs, mask, action, chosen, arms, served_version, request, guard) -> None:
        """Queue the shadow's computation for the worker thread (after the response is built)."""
        try:
            shadow = self.deployments.resolve(dep.shadow, model)
        except ModelNotFound:
            self.metrics.shadow_errors.labels(model.name, "unresolved").inc()
            return
        except DeploymentError:
            self.metrics.shadow_errors.labels(model.name, "incompatible").inc()
            return
        job = ShadowJob(
            route=model,
            shadow=shadow,
            served_version=served_version,
            agents=d.agents,
            ids=d.ids,
            obs=obs,
            mask=mask,
            current=d.current,
            elapsed=d.elapsed,
            served=action,
            served_prob=chosen,
            arms=arms or [INCUMBENT] * len(d.agents),
            episode_id=request.episode_id,
            t=request.t,
            guardrails=guard,
        )
        self.shadow_runner.submit(job, dep.shadow_queue)

    def guardrails(self, model: LoadedModel) -> Guardrails | None:
        """The model's guardrails; versions with the same agents share one (the hold clocks carry over)."""
        cfg = self.config.model(model.name).guardrails
        if not cfg.enabled:
            return None
        key = (model.name, tuple(model.agent_ids), model.n_actions, id(cfg))
        g = self._guardrails.get(key)
        if g is None:
            g = self._guardrails[key] = Guardrails(cfg, model.agent_ids, model.n_actions)
        return g

    async def _decide(self, model: LoadedModel, request, d: Decoded, remaining, all_finite: bool = False):
        """One model's answer for the rows of ``d``: ``(obs, probs, action, chosen, fallback rows)``.

        ``all_finite``: the caller already knows every observation is finite (skips the row check).
        """
        mm = self.metrics.model(model.name)
        rule = model.fallback
        n = len(d.agents)
        obs, mask = d.obs, d.mask
        fallback: dict[int, str] = {}

        finite = None if all_finite else finite_rows(d, rule, request)
        if finite is not None:
            obs = np.where(finite[:, None], obs, 0.0).astype(np.float32)
            for i in np.flatnonzero(~finite):
                fallback[int(i)] = "nonfinite_obs"
        if model.has_bounds:
            oob = ((obs < model.obs_low) | (obs > model.obs_high)).any(axis=1)
            if finite is not None:
                oob &= finite
            if oob.any():
                for i in np.flatnonzero(oob):
                    mm.out_of_bounds(d.ids[i]).inc()
                    if rule.out_of_bounds == "fallback":
                        fallback.setdefault(int(i), "out_of_bounds")
        if remaining is not None and remaining * 1000.0 < rule.deadline_margin_ms:
            for i in range(n):
                fallback.setdefault(i, "deadline")

        run_mask = mask if mask is not None else model.all_legal(n)
        probs = action = None
        if len(fallback) < n:
            batcher = self.batcher(model)
            try:
                if batcher is None:
                    t0 = time.perf_counter()
                    probs, action = model.infer(obs, d.agents, run_mask)
                    mm.inference.observe(time.perf_counter() - t0)
                    mm.executions.inc()
                    mm.batch.observe(n)
                else:
                    wait = None
                    if remaining is not None:
                        wait = max(0.0, remaining - rule.deadline_margin_ms / 1000.0)
                    probs, action = await asyncio.wait_for(
                        batcher.submit(model, obs, d.agents, run_mask), wait
                    )
            except TimeoutError:
                for i in range(n):
                    fallback.setdefault(i, "deadline")
            except Exception as err:  # noqa: BLE001 - inference failure must not fail the request
                log.warning("inference failed for model %s version %s: %s", model.name, model.version, err)
                for i in range(n):
                    fallback.setdefault(i, "inference_error")
        if probs is None:
            probs = np.zeros((n, model.n_actions), dtype=np.float32)
            action = np.zeros(n, dtype=np.int64)
        elif not request.deterministic:
            rng = np.random.default_rng(request.seed) if request.HasField("seed") else self.rng
            u = 1.0 - rng.random(n)
            cdf = np.cumsum(probs, axis=1)
            action = np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), model.n_actions - 1)
        chosen = probs[np.arange(n), action]
        if fallback:
            probs = probs.copy()
            action = np.array(action, dtype=np.int64)
            chosen = np.array(chosen, dtype=np.float32)
            for i, reason in fallback.items():
                a = model.fallback_action(
                    int(d.agents[i]),
                    d.obs[i],
                    mask[i] if mask is not None else None,
                    d.current[i] if d.current is not None else None,
                )
                action[i], chosen[i] = a, 1.0
                probs[i] = 0.0
                probs[i, a] = 1.0
                mm.fallback(reason).inc()
        return obs, probs, action, chosen, fallback

    # -- RPCs ----------------------------------------------------------------------------------
    async def Act(self, request, context):
        return await self.calls.unary("Act", request, context, self._act)

    async def ActStream(self, request_iterator, context):
        """One response per request; a failed request is answered in-stream (``error``), the stream stays."""
        self.metrics.active_streams.inc()
        try:
            async for request in request_iterator:
                yield await self._stream_one(request, context)
        finally:
            self.metrics.active_streams.dec()

    async def _stream_one(self, request, context) -> policy_pb2.ActResponse:
        calls, started = self.calls, time.perf_counter()
        label = "-" if isinstance(request, Undecodable) else calls.label(request)
        calls.inflight += 1
        code = grpc.StatusCode.OK
        try:
            if isinstance(request, Undecodable):
                raise request
            return await self._act(request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as err:  # noqa: BLE001 - answered in-stream with the status Act would return
            code, message = calls.failed("ActStream", label, err)
            error = policy_pb2.RequestStatus(code=code.value[0], code_name=code.name, message=message)
            return policy_pb2.ActResponse(
                model=getattr(request, "model", ""),
                request_id=getattr(request, "request_id", ""),
                error=error,
            )
        finally:
            calls.inflight -= 1
            self.metrics.request("ActStream", label, code.name).inc()
            self.metrics.duration("ActStream", label).observe(time.perf_counter() - started)

    async def _outcome(self, request: policy_pb2.OutcomeRequest, context) -> policy_pb2.OutcomeResponse:
        model = self._model(request.model)
        mm = self.metrics.model(model.name)
        rows = []
        for i, a in enumerate(request.agents):
            if a.agent_id not in model.agent_index:
                raise invalid(f"agents[{i}].agent_id", f"unknown agent {a.agent_id!r} for model {model.name}")
            if not np.isfinite(a.reward):
                raise invalid(f"agents[{i}].reward", f"agent {a.agent_id!r}: reward is NaN or Inf")
            rows.append((a.agent_id, a.reward, a.terminated, a.truncated))
            mm.reward.observe(a.reward)
        mm.outcomes.inc(len(rows))
        for name, value in request.kpis.items():
            if np.isfinite(value):
                self.metrics.kpi.labels(model.name, name).set(value)
        # Per arm: the agent's canary arm (stable hash), so a dashboard compares incumbent and candidate.
        dep = self.deployments.get(model.name) if self.deployments is not None else None
        canary = dep is not None and dep.canary
        arms = set()
        for a in request.agents:
            arm = CANDIDATE if canary and dep.in_canary(a.agent_id) else INCUMBENT
            arms.add(arm)
            self.metrics.arm_reward.labels(model.name, arm).observe(a.reward)
            for name, value in a.kpis.items():
                if np.isfinite(value):
                    self.metrics.arm_kpi.labels(model.name, arm, name).observe(value)
        if len(arms) <= 1:  # site KPIs belong to an arm only when every reported agent is in it
            arm = arms.pop() if arms else INCUMBENT
            for name, value in request.kpis.items():
                if np.isfinite(value):
                    self.metrics.arm_kpi.labels(model.name, arm, name).observe(value)
        matched = 0
        if self.decision_log is not None and request.episode_id:
            matched = self.decision_log.outcome(model.name, request.episode_id, request.t, rows)
        return policy_pb2.OutcomeResponse(matched=matched)

    async def ReportOutcome(self, request, context):
        return await self.calls.unary("ReportOutcome", request, context, self._outcome)

    async def _info(self, request, context) -> policy_pb2.ModelInfoResponse:
        names = [request.model] if request.model else self.repo.served()
        out = policy_pb2.ModelInfoResponse()
        for name in names:
            out.models.append(model_info(self._model(name), self.repo))
        return out

    async def GetModelInfo(self, request, context):
        return await self.calls.unary("GetModelInfo", request, context, self._info)


def model_info(model: LoadedModel, repo: ModelRepository) -> policy_pb2.ModelInfo:
    entry = repo.entries.get(model.name)
    info = policy_pb2.ModelInfo(**model.info_dict())
    info.versions.extend(sorted(entry.versions, key=lambda v: (len(v), v)) if entry else [model.version])
    for spec in model.card.inputs:
        info.inputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
    for spec in model.card.outputs:
        info.outputs.add(name=spec["name"], datatype=spec["datatype"], shape=spec["shape"])
    return info


def deployment_message(d: Deployment, deployments: Deployments) -> admin_pb2.Deployment:
    out = admin_pb2.Deployment(
        model=d.model,
        incumbent=d.incumbent,
        shadow=d.shadow,
        candidate=d.candidate,
        canary_share=d.canary_share,
        canary_salt=d.canary_salt,
        canary_agents=d.canary_agents,
    )
    try:
        route = deployments.repo.get(d.model)
    except ModelNotFound:
        return out
    out.incumbent_version = f"rule:{d.rule.rule}" if d.incumbent == "rule" else ""
    for role, ref in (("incumbent", d.incumbent), ("shadow", d.shadow), ("candidate", d.candidate)):
        if ref == "rule" or (not ref and role != "incumbent"):
            continue
        try:
            setattr(out, f"{role}_version", deployments.resolve(ref, route).version)
        except (ModelNotFound, DeploymentError):
            setattr(out, f"{role}_version", "unavailable")
    if d.canary:
        flags = d.candidate_flags(route.agent_ids)
        out.candidate_agents.extend(a for a, f in zip(route.agent_ids, flags, strict=True) if f)
    return out


class AdminServicer(admin_pb2_grpc.ModelAdminServicer):
    """Thin handlers: check the names, run the repository / deployment operation in a worker thread."""

    def __init__(
        self,
        repo: ModelRepository,
        metrics: Metrics,
        deployments: Deployments | None = None,
        calls: Calls | None = None,
    ):
        self.repo, self.metrics = repo, metrics
        self.deployments = deployments or Deployments(repo.config, repo, metrics)
        self.calls = calls or Calls(metrics, repo.entries.__contains__)

    async def _run(self, method: str, request, context, fn):
        """``fn()`` in a worker thread after the request's model name is checked."""

        async def call(request, context):
            if method != "ListModels":
                check_name(request.model)
            return await asyncio.to_thread(fn)

        return await self.calls.unary(method, request, context, call)

    async def _deploy(self, method: str, fn, request, context):
        return await self._run(method, request, context, lambda: deployment_message(fn(), self.deployments))

    async def GetDeployment(self, request, context):
        return await self._deploy(
            "GetDeployment", lambda: self.deployments.describe(request.model), request, context
        )

    async def SetDeployment(self, request, context):
        def do():
            for role in ("incumbent", "shadow", "candidate"):
                check_ref(getattr(request, role), role)
            if not 0.0 <= request.canary_share <= 1.0:  # NaN included
                raise invalid("canary_share", f"must be in [0, 1], got {request.canary_share}")
            return self.deployments.set(
                Deployment(
                    model=request.model,
                    incumbent=request.incumbent,
                    shadow=request.shadow,
                    candidate=request.candidate,
                    canary_share=request.canary_share,
                    canary_salt=request.canary_salt,
                    canary_agents=tuple(request.canary_agents),
                )
            )

        return await self._deploy("SetDeployment", do, request, context)

    async def PromoteCandidate(self, request, context):
        return await self._deploy(
            "PromoteCandidate", lambda: self.deployments.promote(request.model), request, context
        )

    async def RollBackCandidate(self, request, context):
        return await self._deploy(
            "RollBackCandidate", lambda: self.deployments.rollback(request.model), request, context
        )

    async def LoadModel(self, request, context):
        def do():
            model, previous = self.repo.load(request.model, check_version(request.version))
            return admin_pb2.LoadModelResponse(model=model_info(model, self.repo), previous_version=previous)

        return await self._run("LoadModel", request, context, do)

    async def RollBack(self, request, context):
        def do():
            model, previous = self.repo.rollback(
                request.model, check_version(request.to_version, "to_version")
            )
            return admin_pb2.RollBackResponse(model=model_info(model, self.repo), previous_version=previous)

        return await self._run("RollBack", request, context, do)

    async def ListModels(self, request, context):
        def do():
            out = admin_pb2.ListModelsResponse()
            for name in self.repo.served():
                out.models.append(model_info(self.repo.get(name), self.repo))
            for (name, version), (_, reason) in sorted(self.repo.rejected.items()):
                out.rejected.add(model=name, version=version, reason=reason)
            for (name, version), (_, _, reason) in sorted(self.repo.held.items()):
                out.held.add(model=name, version=version, reason=f"held: {reason}")
            return out

        return await self._run("ListModels", request, context, do)
