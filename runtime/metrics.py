"""Prometheus metrics (docs/serving.md, docs/operations.md), all prefixed ``inspo_runtime_``.

Each server owns its own :class:`CollectorRegistry` (so tests and benchmarks can run several in
one process). Label children are bound once per model (``ModelMetrics``) and cached per
method/code, so the serving path never calls ``.labels()``. ``METRIC_NAMES`` lists every exported
sample family; the dashboard/alert test checks that deploy/ uses only these.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.core import CounterMetricFamily

from runtime.drift import DriftMonitor

PREFIX = "inspo_runtime_"
LATENCY_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self, agent_label: bool = True):
        self.registry = r = CollectorRegistry()
        self.agent_label = agent_label
        p = PREFIX
        self.requests = Counter(
            p + "requests", "RPCs by method, model and status code", ["method", "model", "code"], registry=r
        )
        self.request_duration = Histogram(
            p + "request_duration_seconds",
            "Server-side RPC handling time",
            ["method", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            p + "inference_duration_seconds",
            "ONNX Runtime session.run time",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            p + "batch_size", "Agents per inference execution", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.decisions = Counter(
            p + "agent_decisions", "Agent decisions served (policy or fallback)", ["model"], registry=r
        )
        self.executions = Counter(
            p + "inference_executions", "ONNX Runtime executions", ["model"], registry=r
        )
        # Counted in numpy tables (one add per request, not one counter per agent) and exported at scrape time.
        self.actions = ActionCollector(p + "actions", agent_label)
        r.register(self.actions)
        self.fallbacks = Counter(
            p + "fallbacks",
            "Decisions answered by the fallback rule, by reason",
            ["model", "reason"],
            registry=r,
        )
        self.out_of_bounds = Counter(
            p + "obs_out_of_bounds",
            "Observations outside the training bounds",
            ["model", "agent"],
            registry=r,
        )
        self.drift = DriftMonitor(p)  # obs_drift_psi / obs_drift_window_rows, computed at scrape time
        r.register(self.drift)
        self.invalid = Counter(
            p + "invalid_requests", "Requests rejected as invalid, by field", ["model", "field"], registry=r
        )
        self.auth_failures = Counter(
            p + "auth_failures", "Calls rejected by the token check", ["service"], registry=r
        )
        self.model_info = Gauge(
            p + "model_info", "1 for the version each model serves now", ["model", "version"], registry=r
        )
        self.model_loaded_timestamp = Gauge(
            p + "model_loaded_timestamp_seconds",
            "Unix time the serving version was loaded",
            ["model"],
            registry=r,
        )
        self.model_load_duration = Histogram(
            p + "model_load_duration_seconds",
            "Time to load and validate a model version",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.reloads = Counter(
            p + "model_reloads",
            "Model load attempts by result (ok, rejected, held, rollback)",
            ["model", "result"],
            registry=r,
        )
        self.held_versions = Gauge(
            p + "model_held_versions",
            "Versions on disk held back because their signature differs from the served version's",
            ["model"],
            registry=r,
        )
        self.ready = Gauge(p + "ready", "1 while serving (a model loaded, not draining)", registry=r)
        self.inflight = Gauge(p + "inflight_requests", "RPCs being handled", registry=r)
        self.active_streams = Gauge(p + "active_streams", "Open ActStream calls", registry=r)
        self.log_queue_depth = Gauge(
            p + "decision_log_queue_depth", "Decision-log items waiting to be written", registry=r
        )
        self.log_dropped = Counter(
            p + "decision_log_dropped", "Decision-log items dropped because the queue was full", registry=r
        )
        self.log_rows = Counter(p + "decision_log_rows", "Decision-log rows written", ["outcome"], registry=r)
        self.outcomes = Counter(
            p + "outcomes_reported", "ReportOutcome agent rows received", ["model"], registry=r
        )
        self.reward = Summary(
            p + "reported_reward", "Per-agent rewards reported by clients", ["model"], registry=r
        )
        self.kpi = Gauge(p + "kpi", "Last reported value of each site KPI", ["model", "kpi"], registry=r)
        # -- safe deployment: shadow, canary, guardrails --------------------------------------
        self.shadow = ShadowCollector(p + "shadow_decisions", p + "shadow_action_pairs", agent_label)
        r.register(self.shadow)
        self.shadow_errors = Counter(
            p + "shadow_errors",
            "Shadow computations skipped, by reason (dropped, unresolved, incompatible, inference_error)",
            ["model", "reason"],
            registry=r,
        )
        self.shadow_duration = Histogram(
            p + "shadow_duration_seconds",
            "Time of one shadow computation (off the response path)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.arm_decisions = Counter(
            p + "arm_decisions", "Agent decisions by deployment arm", ["model", "arm"], registry=r
        )
        self.arm_reward = Summary(
            p + "arm_reward",
            "Per-agent rewards reported by clients, by deployment arm",
            ["model", "arm"],
            registry=r,
        )
        self.arm_kpi = Summary(
            p + "arm_kpi",
            "Reported KPIs by deployment arm (per-agent KPIs, and site KPIs of single-arm outcomes)",
            ["model", "arm", "kpi"],
            registry=r,
        )
        self.canary_share = Gauge(
            p + "canary_share", "Share of agents the canary candidate answers", ["model"], registry=r
        )
        self.canary_agents = Gauge(
            p + "canary_agents", "Agents the canary candidate answers", ["model"], registry=r
        )
        self.deployment_changes = Counter(
            p + "deployment_changes",
            "Deployment changes by action (set, promote, rollback)",
            ["model", "action"],
            registry=r,
        )
        self.guardrail_interventions = Counter(
            p + "guardrail_interventions",
            "Served actions a guardrail replaced, by rule",
            ["model", "rule"],
            registry=r,
        )
        self.guardrail_infeasible = Counter(
            p + "guardrail_infeasible",
            "Rows where a guardrail could not apply because a stronger constraint won, by rule",
            ["model", "rule"],
            registry=r,
        )
        self.guardrail_missing_state = Counter(
            p + "guardrail_missing_state",
            "Rows where the hold rules lacked the current action or its elapsed time",
            ["model"],
            registry=r,
        )
        self._model: dict[str, ModelMetrics] = {}
        self._requests: dict[tuple[str, str, str], object] = {}
        self._durations: dict[tuple[str, str], object] = {}

    def model(self, name: str) -> ModelMetrics:
        m = self._model.get(name)
        if m is None:
            m = self._model[name] = ModelMetrics(self, name)
        return m

    def request(self, method: str, model: str, code: str):
        key = (method, model, code)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(method, model, code)
        return child

    def duration(self, method: str, model: str):
        key = (method, model)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.request_duration.labels(method, model)
        return child


class ModelMetrics:
    """Children bound once per model; action counters bound per (agent, action) lazily, then cached."""

    def __init__(self, metrics: Metrics, name: str):
        self.metrics, self.name = metrics, name
        self.inference = metrics.inference_duration.labels(name)
        self.batch = metrics.batch_size.labels(name)
        self.decisions = metrics.decisions.labels(name)
        self.executions = metrics.executions.labels(name)
        self.reward = metrics.reward.labels(name)
        self.outcomes = metrics.outcomes.labels(name)
        self._fallbacks: dict[str, object] = {}
        self._oob: dict[str, object] = {}

    def fallback(self, reason: str):
        c = self._fallbacks.get(reason)
        if c is None:
            c = self._fallbacks[reason] = self.metrics.fallbacks.labels(self.name, reason)
        return c

    def action_table(self, agent_ids: list[str], n_actions: int) -> ActionTable:
        """The counts table for one agent list (versions with the same agents share it)."""
        return self.metrics.actions.table(self.name, agent_ids, n_actions)

    def out_of_bounds(self, agent: str):
        c = self._oob.get(agent)
        if c is None:
            c = self._oob[agent] = self.metrics.out_of_bounds.labels(
                self.name, agent if self.metrics.agent_label else ""
            )
        return c


class ActionTable:
    """Served actions of one model as an ``[agents, actions]`` int64 table (updated on the event loop)."""

    def __init__(self, agent_ids: list[str], n_actions: int):
        self.agent_ids = list(agent_ids)
        self.counts = np.zeros((len(agent_ids), n_actions), dtype=np.int64)

    def add(self, agents: np.ndarray, actions: np.ndarray) -> None:
        """Count one served action per row; ``agents`` are distinct (a request names an agent once)."""
        if len(agents) == 1:
            self.counts[agents[0], actions[0]] += 1
        else:  # distinct agents give distinct cells, so fancy-index += counts each exactly once
            self.counts.reshape(-1)[agents * self.counts.shape[1] + actions] += 1


class ActionCollector:
    """``<prefix>_total{model, agent, action}`` read from the :class:`ActionTable` s at scrape time."""

    def __init__(self, name: str, agent_label: bool):
        self.name, self.agent_label = name, agent_label
        self.tables: dict[tuple, ActionTable] = {}

    def table(self, model: str, agent_ids: list[str], n_actions: int) -> ActionTable:
        key = (model, tuple(agent_ids), n_actions)
        t = self.tables.get(key)
        if t is None:
            t = self.tables[key] = ActionTable(agent_ids, n_actions)
        return t

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(
            self.name, "Served actions by model, agent and action", labels=["model", "agent", "action"]
        )

    def describe(self):
        return [self._family()]

    def collect(self):
        family = self._family()
        totals: dict[tuple[str, str, str], int] = {}
        for (model, _, _), t in list(self.tables.items()):
            counts = t.counts.copy()
            if not self.agent_label:
                counts = counts.sum(axis=0, keepdims=True)
                ids = [""]
            else:
                ids = t.agent_ids
            for i, j in zip(*np.nonzero(counts), strict=True):
                key = (model, ids[i], str(j))
                totals[key] = totals.get(key, 0) + int(counts[i, j])
        for labels, value in sorted(totals.items()):
            family.add_metric(list(labels), value)
        return [family]


class ShadowTable:
    """Agreement of one (model, shadow) pair: agree/disagree per agent and served x shadow action counts."""

    def __init__(self, agent_ids: list[str], n_actions: int):
        self.agent_ids = list(agent_ids)
        self.agree = np.zeros(len(agent_ids), dtype=np.int64)
        self.disagree = np.zeros(len(agent_ids), dtype=np.int64)
        self.pairs = np.zeros((n_actions, n_actions), dtype=np.int64)

    def add(self, agents: np.ndarray, served: np.ndarray, shadow: np.ndarray) -> None:
        same = served == shadow
        np.add.at(self.agree, agents[same], 1)
        np.add.at(self.disagree, agents[~same], 1)
        np.add.at(self.pairs, (served, shadow), 1)


class ShadowCollector:
    """``shadow_decisions_total{model, shadow, agent, result}`` and
    ``shadow_action_pairs_total{model, shadow, served_action, shadow_action}``, read at scrape time."""

    def __init__(self, decisions: str, pairs: str, agent_label: bool):
        self.decisions, self.pairs_name, self.agent_label = decisions, pairs, agent_label
        self.tables: dict[tuple, ShadowTable] = {}

    def table(self, model: str, shadow: str, agent_ids: list[str], n_actions: int) -> ShadowTable:
        key = (model, shadow, tuple(agent_ids), n_actions)
        t = self.tables.get(key)
        if t is None:
            t = self.tables[key] = ShadowTable(agent_ids, n_actions)
        return t

    def _families(self):
        return (
            CounterMetricFamily(
                self.decisions,
                "Shadow decisions by agreement with the served action (result=agree|disagree)",
                labels=["model", "shadow", "agent", "result"],
            ),
            CounterMetricFamily(
                self.pairs_name,
                "Served action x shadow action counts (the distribution of disagreements)",
                labels=["model", "shadow", "served_action", "shadow_action"],
            ),
        )

    def describe(self):
        return list(self._families())

    def collect(self):
        decisions, pairs = self._families()
        dec: dict[tuple, int] = {}
        pair: dict[tuple, int] = {}
        for (model, shadow, _, _), t in list(self.tables.items()):
            ids = t.agent_ids if self.agent_label else [""] * len(t.agent_ids)
            for i, agent in enumerate(ids):
                for result, counts in (("agree", t.agree), ("disagree", t.disagree)):
                    key = (model, shadow, agent, result)
                    dec[key] = dec.get(key, 0) + int(counts[i])
            for a, b in zip(*np.nonzero(t.pairs), strict=True):
                key = (model, shadow, str(a), str(b))
                pair[key] = pair.get(key, 0) + int(t.pairs[a, b])
        for labels, value in sorted(dec.items()):
            decisions.add_metric(list(labels), value)
        for labels, value in sorted(pair.items()):
            pairs.add_metric(list(labels), value)
        return [decisions, pairs]


def metric_names(metrics: Metrics | None = None) -> set[str]:
    """Every sample name the runtime can export (``_total``, ``_bucket``, ... included)."""
    metrics = metrics or Metrics()
    names: set[str] = set()
    for collector in list(metrics.registry._collector_to_names):  # noqa: SLF001 - names only
        names.update(metrics.registry._collector_to_names[collector])  # noqa: SLF001
    return names
