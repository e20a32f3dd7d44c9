"""The decision log: served decisions (+ outcomes from ReportOutcome) as Parquet, in the log format
the trainer reads (docs/log-format.md, written by :class:`contract.logformat.LogWriter`).

Serving never blocks on it. A decision is joined in memory with its step's outcome (key: model,
episode_id, t) under a lock held for a few dict operations; a step is complete when every agent
decided in it has an outcome, then it goes on a bounded queue to a writer thread. Steps that wait
longer than ``outcome_timeout_s``, and everything pending at shutdown, are written without an
outcome (reward 0) to a separate log, ``<dir>/<model>/no-outcome/``, so ``<dir>/<model>/`` holds only
rewarded, trainable steps and training reads it as it is. When
the queue or the pending table is full, items are dropped and counted
(``inspo_runtime_decision_log_dropped_total``).

Rows: one per agent decision. ``behavior_prob`` is the probability the runtime chose the action
with (1 for a fallback answer), ``controller`` is ``inspo-runtime:<model>``, ``state`` is the joint
observation of the model's agents (zeros for agents absent from the step).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from contract.logformat import LogMeta, LogWriter, site_name
from runtime.config import DecisionLogConfig
from runtime.metrics import Metrics
from runtime.model import LoadedModel

log = logging.getLogger("inspo.runtime.decision_log")
_STOP = object()


@dataclass
class _Step:
    model: LoadedModel
    episode_id: str
    t: int
    created: float
    ts: dt.datetime
    agents: list[np.ndarray] = field(default_factory=list)  # agent index arrays
    obs: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    probs: list[np.ndarray] = field(default_factory=list)
    decided: set[int] = field(default_factory=set)
    outcomes: dict[int, tuple[float, bool, bool]] = field(default_factory=dict)
    rows: int = 0


class DecisionLog:
    def __init__(self, config: DecisionLogConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self.writer_id = f"runtime-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pending: dict[tuple[str, str, int], _Step] = {}
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, config.queue_size // 8))
        self._writers: dict[tuple, LogWriter] = {}
        self.rows_written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._closed = False
        self._thread.start()

    # -- serving path (never blocks) -----------------------------------------------------------
    def record(
        self,
        model: LoadedModel,
        episode_id: str,
        t: int,
        agents: np.ndarray,
        obs: np.ndarray,
        masks: np.ndarray,
        actions: np.ndarray,
        probs: np.ndarray,
    ) -> None:
        n = len(agents)
        if self._closed:
            self._drop(n)
            return
        now = time.monotonic()
        if not episode_id:  # nothing to join an outcome with: write as it is
            step = _Step(
                model, f"req-{uuid.uuid4().hex}", int(t), now, dt.datetime.now(dt.UTC).replace(tzinfo=None)
            )
            self._add(step, agents, obs, masks, actions, probs)
            self._enqueue(step)
            return
        key = (model.name, episode_id, int(t))
        with self._lock:
            if self._pending_rows + n > self.config.queue_size:
                self._drop(n)
                return
            step = self._pending.get(key)
            if step is None:
                step = self._pending[key] = _Step(
                    model, episode_id, int(t), now, dt.datetime.now(dt.UTC).replace(tzinfo=None)
                )
            self._add(step, agents, obs, masks, actions, probs)
            self._pending_rows += n

    @staticmethod
    def _add(step: _Step, agents, obs, masks, actions, probs) -> None:
        step.agents.append(np.array(agents, dtype=np.int64))
        step.obs.append(np.array(obs, dtype=np.float32))
        step.masks.append(np.array(masks, dtype=bool))
        step.actions.append(np.array(actions, dtype=np.int32))
        step.probs.append(np.array(probs, dtype=np.float32))
        step.decided.update(int(a) for a in agents)
        step.rows += len(agents)

    def outcome(self, model: str, episode_id: str, t: int, rows: list[tuple[str, float, bool, bool]]) -> int:
        """Join an outcome with its step's decisions; returns the number of agents matched."""
        key = (model, episode_id, int(t))
        with self._lock:
            step = self._pending.get(key)
            if step is None:
                return 0
            matched = 0
            for agent_id, reward, terminated, truncated in rows:
                index = step.model.agent_index.get(agent_id)
                if index is not None and index in step.decided:
                    step.outcomes[index] = (float(reward), bool(terminated), bool(truncated))
                    matched += 1
            if len(step.outcomes) >= len(step.decided):
                del self._pending[key]
                self._pending_rows -= step.rows
            else:
                step = None
        if step is not None:
            self._enqueue(step)
        return matched

    def _enqueue(self, step: _Step) -> None:
        try:
            self._queue.put_nowait(step)
        except queue.Full:
            self._drop(step.rows)
        self.metrics.log_queue_depth.set(self._queue.qsize())

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.metrics.log_dropped.inc(n)

    # -- writer thread -------------------------------------------------------------------------
    def _expire(self, older_than: float) -> None:
        with self._lock:
            expired = [k for k, s in self._pending.items() if s.created <= older_than]
            steps = [self._pending.pop(k) for k in expired]
            self._pending_rows -= sum(s.rows for s in steps)
        for step in steps:
            self._write(step)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            try:
                if item is not None:
                    self._write(item)
                now = time.monotonic()
                self._expire(now - self.config.outcome_timeout_s)
                if now - last_flush >= self.config.flush_interval_s:
                    self._flush_all()
                    last_flush = now
                self.metrics.log_queue_depth.set(self._queue.qsize())
            except Exception:  # noqa: BLE001 - the log must never take the server down
                log.exception("decision log: write failed")
        # drain: everything queued, then everything pending, then flush
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._write(item)
        self._expire(float("inf"))
        self._flush_all()

    def _writer(self, model: LoadedModel, outcome: bool) -> LogWriter:
        meta = LogMeta(
            env_id=model.card.env_id or model.name,
            obs_dim=model.obs_dim,
            n_actions=model.n_actions,
            agent_ids=model.agent_ids,
            state_dim=model.obs_dim * len(model.agent_ids),
            site_spec=model.card.site_spec,  # the site the model was trained for (its policy.json)
        )
        site = self.config.site or site_name(meta.env_id)
        key = (model.name, meta.env_id, meta.obs_dim, meta.n_actions, tuple(meta.agent_ids), site, outcome)
        writer = self._writers.get(key)
        if writer is None:
            root = os.path.join(self.config.dir, model.name)
            if not outcome:
                root = os.path.join(root, "no-outcome")
            writer = self._writers[key] = LogWriter(
                root,
                meta,
                site=site,
                writer_id=f"{self.writer_id}-{len(self._writers)}",
                rows_per_file=self.config.rows_per_file,
            )
        return writer

    def _write(self, step: _Step) -> None:
        model = step.model
        agents = np.concatenate(step.agents)
        obs = np.concatenate(step.obs)
        masks = np.concatenate(step.masks)
        actions = np.concatenate(step.actions)
        probs = np.concatenate(step.probs)
        state = np.zeros((len(model.agent_ids), model.obs_dim), dtype=np.float32)
        state[agents] = obs
        has = np.array([int(a) in step.outcomes for a in agents], dtype=bool)
        for outcome in (True, False):
            rows = np.flatnonzero(has == outcome)
            if len(rows) == 0:
                continue
            triples = [step.outcomes.get(int(agents[i]), (0.0, False, False)) for i in rows]
            rewards = np.array([r for r, _, _ in triples], dtype=np.float32)
            writer = self._writer(model, outcome)
            writer.add_step(
                episode_id=step.episode_id,
                t=step.t,
                obs=obs[rows],
                actions=actions[rows],
                masks=masks[rows],
                rewards=rewards,
                terminated=np.array([x for _, x, _ in triples], dtype=bool),
                truncated=np.array([x for _, _, x in triples], dtype=bool),
                behavior_probs=probs[rows],
                controller=f"inspo-runtime:{model.name}",
                model_version=model.version,
                ts=step.ts,
                state=state.reshape(-1),
                team_reward=float(rewards.mean()),
                agent_ids=[model.agent_ids[int(a)] for a in agents[rows]],
            )
            writer.end_episode()
            self.rows_written += len(rows)
            self.metrics.log_rows.labels("yes" if outcome else "no").inc(len(rows))

    def _flush_all(self) -> None:
        for writer in self._writers.values():
            writer.flush()

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued and pending (outcome or not) and flush; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self.metrics.log_queue_depth.set(0)
