"""Shadow and canary deployments (docs/deployment.md).

A *route* is the model name a request asks for. Its deployment says who answers (the ``incumbent``:
the route model itself, a fallback-style ``rule`` standing for the controller in operation today, or
another model), which model runs in ``shadow`` (computed after the response is built, on a worker
thread, compared and logged), and which ``candidate`` answers a ``canary_share`` of the agents. Agents
are assigned to the canary by a stable hash of ``canary_salt`` and the agent id, the same in every
request and every server process. ``PromoteCandidate`` / ``RollBackCandidate`` are one admin call each.

Deployments start from the config (``[models.<name>.deployment]``); the admin RPCs change them, and
with ``state_file`` set the changes survive a restart (runtime/state.py). ``PromoteCandidate`` serves
exactly the version the canary ran (resolved when promoting), named in the response and the log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from runtime.config import DecisionLogConfig, DeploymentConfig, FallbackConfig, RuntimeConfig
from runtime.guardrails import Guardrails
from runtime.metrics import Metrics
from runtime.model import LoadedModel
from runtime.names import check_ref
from runtime.repository import ModelEntry, ModelNotFound, ModelRepository

log = logging.getLogger("inspo.runtime.deployment")
INCUMBENT, CANDIDATE = "incumbent", "candidate"
SAVED = (
    "incumbent",
    "shadow",
    "candidate",
    "canary_share",
    "canary_salt",
    "canary_agents",
)  # kept in the state file


class DeploymentError(ValueError):
    """A deployment that cannot be set (unknown or incompatible model); the old one stays."""


class UnknownAgents(DeploymentError):
    """A deployment naming agents the model does not have (a wrong value: INVALID_ARGUMENT)."""

    field = "canary_agents"


def parse_ref(ref: str) -> tuple[str, str]:
    """``"name"`` -> ``(name, "")``; ``"name:version"`` -> ``(name, version)``."""
    name, _, version = ref.strip().partition(":")
    return name, version


def canary_fraction(agent_id: str, salt: str = "") -> float:
    """A stable number in [0, 1) per (salt, agent): the agent is in the canary when it is below the share."""
    digest = hashlib.blake2b(f"{salt}\0{agent_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def canary_agents(agent_ids: list[str], share: float, salt: str = "") -> np.ndarray:
    """Boolean per agent: answered by the candidate."""
    return np.array([canary_fraction(a, salt) < share for a in agent_ids], dtype=bool)


def rule_actions(
    rule: FallbackConfig,
    model: LoadedModel,
    agents: np.ndarray,
    obs: np.ndarray,
    mask: np.ndarray | None,
    current: list | None,
) -> np.ndarray:
    """The actions of a fallback-style rule (fixed / per_agent / obs_index / current), made legal."""
    out = np.empty(len(agents), dtype=np.int64)
    for i, k in enumerate(agents):
        action = (
            rule.actions.get(model.agent_ids[int(k)], rule.action)
            if rule.rule == "per_agent"
            else rule.action
        )
        if (
            rule.rule == "obs_index"
            and 0 <= rule.obs_index < obs.shape[1]
            and np.isfinite(obs[i, rule.obs_index])
        ):
            action = int(round(float(obs[i, rule.obs_index])))
        elif rule.rule == "current" and current is not None and current[i] is not None:
            action = int(current[i])
        if not 0 <= action < model.n_actions:
            action = rule.action if 0 <= rule.action < model.n_actions else 0
        if mask is not None and not mask[i, action]:
            action = int(np.flatnonzero(mask[i])[0])
        out[i] = action
    return out


@dataclasses.dataclass
class Deployment:
    """One route's deployment (a mutable copy of :class:`DeploymentConfig`)."""

    model: str
    incumbent: str = ""
    rule: FallbackConfig = dataclasses.field(default_factory=FallbackConfig)
    shadow: str = ""
    candidate: str = ""
    canary_share: float = 0.0
    canary_salt: str = ""
    shadow_queue: int = 1024
    # Agents the candidate answers by name, in addition to the canary_share drawn by hash.
    canary_agents: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.canary_agents = tuple(self.canary_agents)
        self._canary_cache: dict[tuple, np.ndarray] = {}

    @property
    def canary(self) -> bool:
        """A candidate answers some agents (by share or by name)."""
        return bool(self.candidate and (self.canary_share > 0 or self.canary_agents))

    @property
    def active(self) -> bool:
        return bool(self.incumbent or self.shadow or self.canary)

    def in_canary(self, agent_id: str) -> bool:
        return (
            agent_id in self.canary_agents or canary_fraction(agent_id, self.canary_salt) < self.canary_share
        )

    def candidate_flags(self, agent_ids: list[str]) -> np.ndarray:
        key = (tuple(agent_ids), self.canary_share, self.canary_salt, self.canary_agents)
        flags = self._canary_cache.get(key)
        if flags is None:
            flags = canary_agents(agent_ids, self.canary_share, self.canary_salt)
            if self.canary_agents:
                flags |= np.isin(np.asarray(agent_ids, dtype=object), list(self.canary_agents))
            self._canary_cache[key] = flags
        return flags


def compatible(route: LoadedModel, other: LoadedModel) -> str:
    """Empty when ``other`` can answer for ``route``'s agents, else why not."""
    if other.agent_ids != route.agent_ids:
        return f"{other.name}:{other.version} has agents {other.agent_ids[:5]}..., {route.name} has {route.agent_ids[:5]}..."
    if (other.obs_dim, other.n_actions) != (route.obs_dim, route.n_actions):
        return (
            f"{other.name}:{other.version} has obs_dim={other.obs_dim}, n_actions={other.n_actions}; "
            f"{route.name} has {route.obs_dim}, {route.n_actions}"
        )
    return ""


class Deployments:
    """Every route's deployment, model resolution and the admin operations."""

    def __init__(self, config: RuntimeConfig, repo: ModelRepository, metrics: Metrics):
        self.config, self.repo, self.metrics = config, repo, metrics
        self.routes: dict[str, Deployment] = {}
        self._lock = threading.RLock()
        self.persist = lambda: None  # set by the server: write the deployment state
        for name, mc in config.models.items():
            if name != "default" and _configured(mc.deployment):
                self._pin(_from_config(name, mc.deployment))

    def _pin(self, d: Deployment) -> None:
        """Take ``d`` as the route's deployment; keep the initial poll from serving its pinned versions."""
        self.routes[d.model] = d
        for ref in (d.shadow, d.candidate, d.incumbent):
            ref_name, version = parse_ref(ref)
            if version:
                name = ref_name or d.model
                self.repo.entries.setdefault(name, ModelEntry(name)).pinned.add(version)

    # -- durable state (runtime/state.py) -----------------------------------------------------------
    def snapshot(self) -> dict[str, dict]:
        # No lock: called while the repository's lock is held; routes are replaced, never mutated.
        routes = dict(self.routes)
        return {name: {k: getattr(d, k) for k in SAVED} for name, d in sorted(routes.items())}

    def restore(self, saved: dict[str, dict]) -> None:
        """Replace the configured deployments by the saved ones (before the initial poll)."""
        for name, fields in saved.items():
            if not isinstance(fields, dict):
                continue
            base = self.routes.get(name) or Deployment(name)
            try:
                d = dataclasses.replace(base, **{k: fields[k] for k in SAVED if k in fields})
                d.canary_share = float(d.canary_share)
                d.canary_agents = tuple(str(a) for a in d.canary_agents)
                for role in ("incumbent", "shadow", "candidate"):
                    check_ref(getattr(d, role), role)
            except (TypeError, ValueError) as err:
                log.error("state file: deployment of %s ignored (%s)", name, err)
                continue
            if name in self.config.models and name not in self.routes:
                d.rule = dataclasses.replace(self.config.models[name].deployment.rule)
            self._pin(d)

    # -- serving path --------------------------------------------------------------------------
    def get(self, name: str) -> Deployment | None:
        d = self.routes.get(name)
        return d if d is not None and d.active else None

    def resolve(self, ref: str, route: LoadedModel) -> LoadedModel:
        name, version = parse_ref(ref)
        name = name or route.name
        model = self.repo.get(name, version)
        why = compatible(route, model)
        if why:
            raise DeploymentError(why)
        return model

    # -- start-up and admin --------------------------------------------------------------------
    def prepare(self) -> None:
        """Preload the configured versions (after the initial repository poll); log what fails."""
        for d in list(self.routes.values()):
            try:
                self._check(d)
            except (DeploymentError, ModelNotFound) as err:
                log.error("deployment of %s: %s (serving without the unresolved parts)", d.model, err)
            self._export(d)

    def _check(self, d: Deployment) -> dict[str, LoadedModel]:
        """Resolve (and preload pinned versions of) every reference of ``d``; raise if one fails."""
        if not 0.0 <= d.canary_share <= 1.0:
            raise DeploymentError(f"canary_share must be in [0, 1], got {d.canary_share}")
        route = self.repo.get(d.model)
        unknown = sorted(set(d.canary_agents) - set(route.agent_ids))
        if unknown:
            raise UnknownAgents(f"canary_agents: unknown agents {unknown[:10]} for model {d.model}")
        out = {}
        for role in ("incumbent", "shadow", "candidate"):
            ref = getattr(d, role)
            if not ref or ref == "rule" and role == "incumbent":
                continue
            if ref == "rule":
                raise DeploymentError(f"{role}: 'rule' can only be the incumbent")
            name, version = parse_ref(ref)
            if version:
                self.repo.preload(name or d.model, version)
            out[role] = self.resolve(ref, route)
        return out

    def describe(self, name: str) -> Deployment:
        with self._lock:
            self.repo.get(name)  # NOT_FOUND for an unknown route
            return self.routes.get(name) or Deployment(name)

    def set(self, new: Deployment) -> Deployment:
        with self._lock:
            old = self.routes.get(new.model)
            if old is not None:
                new.rule = old.rule  # the rule comes from the config only
                new.shadow_queue = old.shadow_queue
            elif new.model in self.config.models:
                new.rule = dataclasses.replace(self.config.models[new.model].deployment.rule)
            self._check(new)
            self.routes[new.model] = new
            self.metrics.deployment_changes.labels(new.model, "set").inc()
            self._export(new)
            self.persist()
            log.info("deployment of %s: %s", new.model, new)
            return new

    def promote(self, name: str) -> Deployment:
        """The candidate answers every agent from now on (it becomes the incumbent).

        The version promoted is the one the canary runs now (an unversioned candidate is resolved,
        never re-read from disk), so what was canaried is exactly what is served.
        """
        with self._lock:
            d = self.routes.get(name)
            if d is None or not d.candidate:
                raise DeploymentError(f"model {name!r} has no canary candidate to promote")
            canaried = self._check(d)["candidate"]
            if canaried.name == name:
                self.repo.load(name, canaried.version)  # becomes the served version (or stays, if it is)
                incumbent = ""
            else:
                incumbent = f"{canaried.name}:{canaried.version}"
                self.repo.preload(canaried.name, canaried.version)
            new = dataclasses.replace(
                d,
                incumbent=incumbent,
                candidate="",
                canary_share=0.0,
                canary_agents=(),
                shadow="" if d.shadow == d.candidate else d.shadow,
            )
            self.routes[name] = new
            self.metrics.deployment_changes.labels(name, "promote").inc()
            self._export(new)
            self.persist()
            log.info(
                "deployment of %s: promoted candidate %s: %s version %s now answers every agent",
                name,
                d.candidate,
                canaried.name,
                canaried.version,
            )
            return new

    def rollback(self, name: str) -> Deployment:
        """Drop the candidate: every agent goes back to the incumbent; a pinned candidate version is blocked."""
        with self._lock:
            d = self.routes.get(name)
            if d is None or not d.candidate:
                raise DeploymentError(f"model {name!r} has no canary candidate to roll back")
            cand_name, version = parse_ref(d.candidate)
            if version and d.shadow != d.candidate:
                self.repo.unpin(cand_name or name, version, block=True)
            new = dataclasses.replace(d, candidate="", canary_share=0.0, canary_agents=())
            self.routes[name] = new
            self.metrics.deployment_changes.labels(name, "rollback").inc()
            self._export(new)
            self.persist()
            log.info("deployment of %s: rolled back candidate %s", name, d.candidate)
            return new

    def _export(self, d: Deployment) -> None:
        share = d.canary_share if d.canary else 0.0
        self.metrics.canary_share.labels(d.model).set(share)
        try:
            agents = self.repo.get(d.model).agent_ids
            self.metrics.canary_agents.labels(d.model).set(
                int(d.candidate_flags(agents).sum()) if d.canary else 0
            )
        except ModelNotFound:
            pass


def _configured(cfg: DeploymentConfig) -> bool:
    return bool(cfg.incumbent or cfg.shadow or cfg.candidate)


def _from_config(name: str, cfg: DeploymentConfig) -> Deployment:
    return Deployment(
        model=name,
        incumbent=cfg.incumbent,
        rule=dataclasses.replace(cfg.rule),
        shadow=cfg.shadow,
        candidate=cfg.candidate,
        canary_share=cfg.canary_share,
        canary_salt=cfg.canary_salt,
        shadow_queue=cfg.shadow_queue,
        canary_agents=tuple(cfg.canary_agents),
    )


# -- shadow ------------------------------------------------------------------------------------
@dataclasses.dataclass
class ShadowJob:
    route: LoadedModel
    shadow: LoadedModel
    served_version: str
    agents: np.ndarray
    ids: list[str]
    obs: np.ndarray
    mask: np.ndarray
    current: list | None
    elapsed: list | None
    served: np.ndarray
    served_prob: np.ndarray
    arms: list[str]
    episode_id: str
    t: int
    guardrails: Guardrails | None


class ShadowRunner:
    """Runs shadow inference on one worker thread after the response is built; never blocks serving.

    Work beyond ``limit`` pending jobs is dropped and counted (``shadow_errors_total{reason="dropped"}``).
    """

    def __init__(self, metrics: Metrics, log_config: DecisionLogConfig):
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow")
        self.pending = 0
        self._lock = threading.Lock()
        self.log = ShadowLog(log_config) if log_config.enabled else None
        self.rng = np.random.default_rng()
        self.done = 0

    def submit(self, job: ShadowJob, limit: int) -> None:
        with self._lock:
            if self.pending >= limit:
                self.metrics.shadow_errors.labels(job.route.name, "dropped").inc()
                return
            self.pending += 1
        self.pool.submit(self._run, job)

    def _run(self, job: ShadowJob) -> None:
        started = time.perf_counter()
        try:
            probs, action = job.shadow.infer(job.obs, job.agents, job.mask)
            action = np.asarray(action, dtype=np.int64)
            chosen = probs[np.arange(len(action)), action]
            if job.guardrails is not None and job.guardrails.enabled:
                enforced = job.guardrails.enforce(
                    job.agents,
                    job.obs,
                    job.mask,
                    job.current,
                    job.elapsed,
                    probs,
                    action,
                    chosen,
                    np.zeros(len(action), dtype=bool),
                    True,
                    self.rng,
                )
                probs, action, chosen = enforced.probs, enforced.action, enforced.chosen
            table = self.metrics.shadow.table(
                job.route.name, job.shadow.name, job.route.agent_ids, job.route.n_actions
            )
            table.add(job.agents, job.served, action)
            if self.log is not None:
                self.log.add(job, action, chosen, probs[np.arange(len(action)), job.served])
        except Exception as err:  # noqa: BLE001 - the shadow must never affect serving
            log.warning("shadow %s of %s failed: %s", job.shadow.name, job.route.name, err)
            self.metrics.shadow_errors.labels(job.route.name, "inference_error").inc()
        finally:
            self.metrics.shadow_duration.labels(job.route.name).observe(time.perf_counter() - started)
            with self._lock:
                self.pending -= 1
                self.done += 1

    def drain(self, timeout: float = 10.0) -> None:
        """Wait (up to ``timeout``) for queued shadow work (tests; shutdown)."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.log is not None:
            self.log.close()


class ShadowLog:
    """Shadow decisions beside the served ones, as Parquet under ``<decision_log.dir>/<model>/shadow/``.

    One row per agent decision: the served action (and arm, version, probability) next to the
    shadow's action, its probability, and the shadow's probability of the *served* action (what
    off-policy evaluation of the shadow needs); the schema is ``contract.shadowlog``.
    """

    def __init__(self, config: DecisionLogConfig):
        self.config = config
        self.rows: dict[str, list[dict]] = {}
        self.writer_id = f"shadow-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.seq = 0
        self.last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.rows_written = 0

    def add(self, job: ShadowJob, action: np.ndarray, chosen: np.ndarray, prob_served: np.ndarray) -> None:
        ts = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        out = []
        for i, agent_id in enumerate(job.ids):
            out.append(
                {
                    "ts": ts,
                    "model": job.route.name,
                    "episode_id": job.episode_id,
                    "t": int(job.t),
                    "agent_id": agent_id,
                    "arm": job.arms[i],
                    "served_version": job.served_version,
                    "served_action": int(job.served[i]),
                    "served_probability": float(job.served_prob[i]),
                    "shadow_model": job.shadow.name,
                    "shadow_version": job.shadow.version,
                    "shadow_action": int(action[i]),
                    "shadow_probability": float(chosen[i]),
                    "shadow_prob_of_served": float(prob_served[i]),
                    "agree": bool(action[i] == job.served[i]),
                }
            )
        with self._lock:
            self.rows.setdefault(job.route.name, []).extend(out)
            total = sum(len(r) for r in self.rows.values())
        if (
            total >= self.config.rows_per_file
            or time.monotonic() - self.last_flush >= self.config.flush_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        import pyarrow.parquet as pq

        from contract.shadowlog import shadow_table

        with self._lock:
            batches, self.rows = self.rows, {}
            self.last_flush = time.monotonic()
        for model, rows in batches.items():
            if not rows:
                continue
            table = shadow_table(rows)
            day = rows[0]["ts"].strftime("%Y-%m-%d")
            folder = Path(self.config.dir) / model / "shadow" / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{self.writer_id}-{self.seq:05d}.parquet"
            self.seq += 1
            tmp = folder / f".{name}.tmp"
            pq.write_table(table, tmp)
            tmp.rename(folder / name)
            self.rows_written += len(rows)

    def close(self) -> None:
        self.flush()
