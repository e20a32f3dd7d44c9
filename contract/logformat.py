"""The Parquet log format (docs/log-format.md): schema, metadata and a streaming, crash-safe writer.

Two writers share it, offline collection (``trainer``) and the serving runtime's decision log,
and the trainer's reader checks files against it. It needs pyarrow and numpy only (no torch).

Layout::

    <log>/agent_steps/site=<site>/date=<YYYY-MM-DD>/part-<writer>-<seq>.parquet
    <log>/env_steps/site=<site>/date=<YYYY-MM-DD>/part-<writer>-<seq>.parquet   (optional)
    <log>/exogenous/site=<site>/date=<YYYY-MM-DD>/part-<writer>-<seq>.parquet   (optional)

Each part file is written to a hidden temp name and renamed into place, so a crash never
leaves a readable half file (readers skip names starting with ``.`` or ``_``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
SIM_EPOCH = dt.datetime(2026, 1, 1)  # simulated time 0 (keeps simulator logs deterministic)
# The schema-metadata keys every part file carries (``site_spec`` is optional and not listed).
META_KEYS = ("schema_version", "env_id", "obs_dim", "n_actions", "agent_ids", "state_dim")

AGENT_STEPS_FIELDS: list[pa.Field] = [
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("t", pa.int32(), nullable=False),
    pa.field("agent_id", pa.string(), nullable=False),
    pa.field("obs", pa.list_(pa.float32()), nullable=False),
    pa.field("action", pa.int32(), nullable=False),
    pa.field("action_mask", pa.list_(pa.bool_()), nullable=False),
    pa.field("reward", pa.float32(), nullable=False),
    pa.field("terminated", pa.bool_(), nullable=False),
    pa.field("truncated", pa.bool_(), nullable=False),
    pa.field("behavior_prob", pa.float32(), nullable=True),
    pa.field("controller", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=True),
    pa.field("ts", pa.timestamp("us"), nullable=False),
]
ENV_STEPS_FIELDS: list[pa.Field] = [
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("t", pa.int32(), nullable=False),
    pa.field("state", pa.list_(pa.float32()), nullable=False),
    pa.field("team_reward", pa.float32(), nullable=False),
]

# Optional: one row per exogenous input event, something the site records that no control action changes
# (elevator: a passenger arriving at a floor; ``channel`` is the floor). The trainer's residual estimator
# may let its state baseline see these *after* each decision (docs/algorithm.md, "Exogenous inputs").
EXOGENOUS_FIELDS: list[pa.Field] = [
    pa.field("episode_id", pa.string(), nullable=False),
    pa.field("ts", pa.timestamp("us"), nullable=False),
    pa.field("channel", pa.int32(), nullable=False),
]
EXOGENOUS_CHANNELS_KEY = b"exogenous_channels"  # schema metadata: JSON list of the channels' names


def exogenous_schema(meta: LogMeta, channels: list[str]) -> pa.Schema:
    return pa.schema(
        EXOGENOUS_FIELDS,
        metadata={**meta.to_metadata(), EXOGENOUS_CHANNELS_KEY: json.dumps(channels).encode()},
    )


@dataclass(frozen=True)
class LogMeta:
    """What every part file's schema metadata records about the environment.

    ``site_spec``: the resolved site spec (every env option, sha256 of the files it names; envs/site.py),
    written as the optional ``site_spec`` key (JSON). Logs without it (older ones, other tools') stay readable.
    """

    env_id: str
    obs_dim: int
    n_actions: int
    agent_ids: list[str]
    state_dim: int
    schema_version: int = SCHEMA_VERSION
    site_spec: dict | None = None

    def to_metadata(self) -> dict[bytes, bytes]:
        values = (
            str(self.schema_version),
            self.env_id,
            str(self.obs_dim),
            str(self.n_actions),
            json.dumps(list(self.agent_ids)),
            str(self.state_dim),
        )
        out = {key.encode(): value.encode() for key, value in zip(META_KEYS, values, strict=True)}
        if self.site_spec is not None:
            out[b"site_spec"] = json.dumps(self.site_spec, sort_keys=True, separators=(",", ":")).encode()
        return out


def agent_steps_schema(meta: LogMeta) -> pa.Schema:
    return pa.schema(AGENT_STEPS_FIELDS, metadata=meta.to_metadata())


def env_steps_schema(meta: LogMeta) -> pa.Schema:
    return pa.schema(ENV_STEPS_FIELDS, metadata=meta.to_metadata())


def site_name(env_id: str) -> str:
    """A partition-safe site name derived from an env id (``elevator:cb10x4:downpeak`` -> ``elevator-cb10x4-downpeak``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", env_id).strip("-") or "site"


def list_column(rows: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    """A ``list<value_type>`` column from a 2-D array, built from offsets without a Python loop."""
    rows = np.ascontiguousarray(rows)
    n, width = rows.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * np.int32(width))  # also right for width 0
    return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1), type=value_type))


class _StepBuffer:
    """Rows not yet written, in preallocated flat arrays that grow by doubling.

    ``add_step`` is on the hot path of collection and of the runtime's decision log, so a call only
    copies into slices and appends per-step scalars; columns are expanded once, at flush.
    """

    def __init__(self, obs_dim: int, n_actions: int, state_dim: int, capacity: int = 4096):
        self.obs_dim, self.n_actions, self.state_dim = obs_dim, n_actions, state_dim
        self._allocate(capacity, 256)
        self.clear()

    def _allocate(self, rows: int, steps: int) -> None:
        self.obs = np.zeros((rows, self.obs_dim), np.float32)
        self.mask = np.zeros((rows, self.n_actions), bool)
        self.action = np.zeros(rows, np.int32)
        self.reward = np.zeros(rows, np.float32)
        self.terminated = np.zeros(rows, bool)
        self.truncated = np.zeros(rows, bool)
        self.prob = np.zeros(rows, np.float32)
        self.state = np.zeros((steps, self.state_dim), np.float32)

    def _grow(self, rows: int, steps: int) -> None:
        old = self.__dict__.copy()
        self._allocate(max(rows, 2 * len(old["action"])), max(steps, 2 * len(old["state"])))
        for name in ("obs", "mask", "action", "reward", "terminated", "truncated", "prob"):
            getattr(self, name)[: self.rows] = old[name][: self.rows]
        self.state[: self.steps] = old["state"][: self.steps]

    def clear(self) -> None:
        self.rows = self.steps = 0
        # one tuple per step: (episode_id, t, agent ids, controller, model_version, ts, team reward, probs known)
        self.step_meta: list[tuple] = []
        self.counts: list[int] = []

    def add(
        self,
        episode_id,
        t,
        agents,
        obs,
        actions,
        masks,
        rewards,
        terminated,
        truncated,
        probs,
        controller,
        model_version,
        ts,
        state,
        team_reward,
    ) -> None:
        n, r = len(agents), self.rows
        if r + n > len(self.action) or self.steps + 1 > len(self.state):
            self._grow(r + n, self.steps + 1)
        end = r + n
        self.obs[r:end] = obs
        self.mask[r:end] = masks
        self.action[r:end] = actions
        self.reward[r:end] = rewards
        self.terminated[r:end] = terminated
        self.truncated[r:end] = truncated
        if probs is not None:
            self.prob[r:end] = probs
        self.state[self.steps] = state
        self.step_meta.append(
            (episode_id, t, agents, controller, model_version, ts, team_reward, probs is not None)
        )
        self.counts.append(n)
        self.rows = end
        self.steps += 1

    def tables(self, agent_schema: pa.Schema, env_schema: pa.Schema) -> tuple[pa.Table, pa.Table]:
        r, k = self.rows, self.steps
        episode_ids, ts, agent_lists, controllers, versions, times, team, known = zip(
            *self.step_meta, strict=True
        )
        counts = np.asarray(self.counts)
        step_of_row = pa.array(np.repeat(np.arange(k), counts))

        def per_row(values: tuple, type_: pa.DataType) -> pa.Array:
            return pa.array(values, type=type_).take(step_of_row)

        if all(agents is agent_lists[0] for agents in agent_lists):  # the usual case: every agent every step
            agent_ids = pa.array(list(agent_lists[0]), pa.string()).take(
                pa.array(np.tile(np.arange(counts[0]), k))
            )
        else:
            agent_ids = pa.array([a for agents in agent_lists for a in agents], pa.string())
        known_rows = np.repeat(np.asarray(known), counts)
        prob = pa.array(self.prob[:r], mask=None if known_rows.all() else ~known_rows)
        stamps = pa.array(np.asarray(times, dtype="datetime64[us]")).take(step_of_row)
        agents = pa.Table.from_arrays(
            [
                per_row(episode_ids, pa.string()),
                pa.array(np.repeat(np.asarray(ts, np.int32), counts)),
                agent_ids,
                list_column(self.obs[:r], pa.float32()),
                pa.array(self.action[:r]),
                list_column(self.mask[:r], pa.bool_()),
                pa.array(self.reward[:r]),
                pa.array(self.terminated[:r]),
                pa.array(self.truncated[:r]),
                prob,
                per_row(controllers, pa.string()),
                per_row(versions, pa.string()),
                stamps.cast(pa.timestamp("us")),
            ],
            schema=agent_schema,
        )
        envs = pa.Table.from_arrays(
            [
                pa.array(episode_ids, pa.string()),
                pa.array(np.asarray(ts, np.int32)),
                list_column(self.state[:k], pa.float32()),
                pa.array(np.asarray(team, np.float32)),
            ],
            schema=env_schema,
        )
        return agents, envs


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth dictionary-encoding: the strings (ids, controller names) repeat; floats mostly do
    not, and trying a dictionary on the obs/state lists before falling back costs about a third of a
    part file's write time (bench/hires_import.py) for files of the same size."""
    return [f.name for f in schema if pa.types.is_string(f.type)]


def _statistics_columns(schema: pa.Schema) -> list[str]:
    """The columns given min/max statistics: the flat ones (ids, steps, ``ts``: what a reader may filter
    on). The obs/state/mask lists' element ranges help no query, and computing them costs about a tenth
    of a part file's write time (docs/benchmarks.md, "Hi-res event import")."""
    return [f.name for f in schema if not pa.types.is_list(f.type)]


class LogWriter:
    """Streams steps of one or many episodes into part files of roughly ``rows_per_file`` agent-steps.

    ``writer_id`` names this writer's files (``part-<writer_id>-<seq>``) so parallel workers never
    collide and a re-run with the same seeds produces the same file names and bytes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        meta: LogMeta,
        site: str | None = None,
        writer_id: str = "0",
        rows_per_file: int = 200_000,
        compression: str = "zstd",
    ):
        self.root = Path(root)
        self.meta = meta
        self.site = site or site_name(meta.env_id)
        self.writer_id = writer_id
        self.rows_per_file = rows_per_file
        self.compression = compression
        self._agent_schema = agent_steps_schema(meta)
        self._env_schema = env_steps_schema(meta)
        self._buffer = _StepBuffer(meta.obs_dim, meta.n_actions, meta.state_dim)
        self._exogenous: list[tuple[str, np.ndarray, np.ndarray]] = []  # (episode, ts in us, channel)
        self._exogenous_channels: list[str] | None = None
        self._date: dt.date | None = None
        self._seq = 0
        # whether this writer's parts have env_steps (None: nothing written yet)
        self._with_env_steps: bool | None = None
        self.files_written: list[Path] = []
        self.rows_written = 0

    # -- adding data ---------------------------------------------------------------------------
    def add_step(
        self,
        episode_id: str,
        t: int,
        obs: np.ndarray,
        actions: np.ndarray,
        masks: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        behavior_probs: np.ndarray | None,
        controller: str,
        model_version: str | None,
        ts: dt.datetime,
        state: np.ndarray,
        team_reward: float,
        agent_ids: list[str] | None = None,
    ) -> None:
        """One decision step of all agents (rows in ``agent_ids`` order, default ``meta.agent_ids``)."""
        date = ts.date()
        if self._date is not None and date != self._date:
            self.flush()
        self._date = date
        self._buffer.add(
            episode_id,
            t,
            agent_ids or self.meta.agent_ids,
            obs,
            actions,
            masks,
            rewards,
            terminated,
            truncated,
            behavior_probs,
            controller,
            model_version,
            ts,
            state,
            team_reward,
        )

    def add_exogenous(
        self, episode_id: str, seconds: np.ndarray, channels: np.ndarray, names: list[str], day: int = 0
    ) -> None:
        """An episode's exogenous input events (simulated ``seconds``, ``channels`` indexing ``names``),
        written with the episode's steps (same part file number and date partition)."""
        if self._exogenous_channels is not None and names != self._exogenous_channels:
            raise ValueError(
                f"exogenous channels changed within one writer: {self._exogenous_channels} -> {names}"
            )
        channels = np.asarray(channels, dtype=np.int32)
        if len(channels) and (channels.min() < 0 or channels.max() >= len(names)):
            raise ValueError(f"exogenous channel outside 0..{len(names) - 1}")
        start = np.datetime64(SIM_EPOCH + dt.timedelta(days=day), "us")
        ts = start + np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype("timedelta64[us]")
        self._exogenous_channels = list(names)
        self._exogenous.append((episode_id, ts, channels))

    def add_tables(
        self, agent_steps: pa.Table, env_steps: pa.Table | None, date: dt.date | None = None
    ) -> None:
        """Bulk path: whole tables of rows in the documented schema, written as one part file each.

        For rows that already exist as columns (an imported site log, a batched simulator), where
        per-step :meth:`add_step` calls would cost Python time per row. Columns are reordered and
        cast to the documented types; all rows go to one ``date`` partition (default: the first
        row's ``ts``). Buffered :meth:`add_step` rows are flushed first, so file order is kept.

        ``env_steps=None`` writes no env_steps file: the reader then derives the state (all agents'
        observations concatenated) and the team reward (the agents' mean), docs/log-format.md. A log
        has env_steps for every step or for none, so a writer refuses to mix the two.
        """
        agents = agent_steps.select(self._agent_schema.names).cast(self._agent_schema)
        envs = None if env_steps is None else env_steps.select(self._env_schema.names).cast(self._env_schema)
        if agents.num_rows == 0:
            return
        self._env_steps_kind(envs is not None)
        self.flush()
        self._date = date or agents.column("ts")[0].as_py().date()
        self._write(agents, "agent_steps")
        if envs is not None:
            self._write(envs, "env_steps")
        self.rows_written += agents.num_rows
        self._seq += 1

    def _env_steps_kind(self, with_env_steps: bool) -> None:
        """Every part of one log has env_steps, or none has (the reader needs one row per step)."""
        if self._with_env_steps is not None and self._with_env_steps != with_env_steps:
            raise ValueError(
                "a log has env_steps for every step or for none: this writer already wrote "
                + ("env_steps" if self._with_env_steps else "agent_steps without env_steps")
            )
        self._with_env_steps = with_env_steps

    def end_episode(self) -> None:
        """Episodes are kept whole inside a part file where possible: flush only at boundaries."""
        if self._buffer.rows >= self.rows_per_file:
            self.flush()

    # -- writing -------------------------------------------------------------------------------
    def _write(self, table: pa.Table, kind: str) -> Path:
        assert self._date is not None
        folder = self.root / kind / f"site={self.site}" / f"date={self._date.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-{self.writer_id}-{self._seq:05d}.parquet"
        tmp = folder / f".{final.name}.tmp"
        pq.write_table(
            table,
            tmp,
            compression=self.compression,
            use_dictionary=_dictionary_columns(table.schema),
            write_statistics=_statistics_columns(table.schema),
        )
        os.replace(tmp, final)
        self.files_written.append(final)
        return final

    def flush(self) -> None:
        """Write buffered rows as one agent_steps and one env_steps part file (and exogenous events)."""
        if self._buffer.rows == 0:
            if self._exogenous and self._date is not None:
                self._write_exogenous()
                self._seq += 1
            return
        self._env_steps_kind(True)
        agents, envs = self._buffer.tables(self._agent_schema, self._env_schema)
        self._write(agents, "agent_steps")
        self._write(envs, "env_steps")
        self._write_exogenous()
        self.rows_written += self._buffer.rows
        self._seq += 1
        self._buffer.clear()

    def _write_exogenous(self) -> None:
        if not self._exogenous:
            return
        assert self._exogenous_channels is not None
        ids = [np.full(len(ch), eid, dtype=object) for eid, _, ch in self._exogenous]
        table = pa.table(
            [
                pa.array(np.concatenate(ids), pa.string()),
                pa.array(np.concatenate([ts for _, ts, _ in self._exogenous]), pa.timestamp("us")),
                pa.array(np.concatenate([ch for _, _, ch in self._exogenous]), pa.int32()),
            ],
            schema=exogenous_schema(self.meta, self._exogenous_channels),
        )
        self._write(table, "exogenous")
        self._exogenous = []

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On error, still write what was complete: losing logged decisions is worse than a short file.
        self.close()


def sim_timestamp(seconds: float, day: int = 0) -> dt.datetime:
    """A deterministic timestamp for simulated time (``day`` days after the simulation epoch)."""
    return SIM_EPOCH + dt.timedelta(days=day, seconds=float(seconds))
