"""The Parquet log format (design.md §3.3): schema and a streaming, crash-safe writer.

It lives in ``runtime`` because two writers share it: offline collection (``trainer``) and the
serving runtime's decision log. It needs pyarrow and numpy only (no torch).

Layout::

    <log>/agent_steps/site=<site>/date=<YYYY-MM-DD>/part-<writer>-<seq>.parquet
    <log>/env_steps/site=<site>/date=<YYYY-MM-DD>/part-<writer>-<seq>.parquet

Each part file is written to a hidden temp name and renamed into place, so a crash never
leaves a readable half file (readers skip names starting with ``.`` or ``_``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
SIM_EPOCH = dt.datetime(2026, 1, 1)  # simulated time 0 (keeps simulator logs deterministic)

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


@dataclass(frozen=True)
class LogMeta:
    """What every part file's schema metadata records about the environment."""

    env_id: str
    obs_dim: int
    n_actions: int
    agent_ids: list[str]
    state_dim: int
    schema_version: int = SCHEMA_VERSION

    def to_metadata(self) -> dict[bytes, bytes]:
        return {
            b"schema_version": str(self.schema_version).encode(),
            b"env_id": self.env_id.encode(),
            b"obs_dim": str(self.obs_dim).encode(),
            b"n_actions": str(self.n_actions).encode(),
            b"agent_ids": json.dumps(list(self.agent_ids)).encode(),
            b"state_dim": str(self.state_dim).encode(),
        }


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
    offsets = (
        pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)) if n else pa.array([0], pa.int32())
    )
    return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1), type=value_type))


@dataclass
class _Buffer:
    """Columns of rows not yet written, as lists of per-step numpy blocks."""

    columns: dict[str, list] = field(default_factory=dict)
    rows: int = 0

    def add(self, **blocks) -> None:
        for name, block in blocks.items():
            self.columns.setdefault(name, []).append(block)
        self.rows += len(next(iter(blocks.values())))

    def clear(self) -> None:
        self.columns, self.rows = {}, 0


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
        self._agents = _Buffer()
        self._envs = _Buffer()
        self._date: dt.date | None = None
        self._seq = 0
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
        agents = agent_ids or self.meta.agent_ids
        n = len(agents)
        date = ts.date()
        if self._date is not None and date != self._date:
            self.flush()
        self._date = date
        probs = (
            pa.array(np.asarray(behavior_probs, dtype=np.float32))
            if behavior_probs is not None
            else pa.nulls(n, pa.float32())
        )
        self._agents.add(
            episode_id=[episode_id] * n,
            t=np.full(n, t, dtype=np.int32),
            agent_id=list(agents),
            obs=np.asarray(obs, dtype=np.float32).reshape(n, -1),
            action=np.asarray(actions, dtype=np.int32),
            action_mask=np.asarray(masks, dtype=bool).reshape(n, -1),
            reward=np.asarray(rewards, dtype=np.float32),
            terminated=np.asarray(terminated, dtype=bool),
            truncated=np.asarray(truncated, dtype=bool),
            behavior_prob=probs,
            controller=[controller] * n,
            model_version=[model_version] * n,
            ts=[ts] * n,
        )
        self._envs.add(
            episode_id=[episode_id],
            t=np.array([t], dtype=np.int32),
            state=np.asarray(state, dtype=np.float32).reshape(1, -1),
            team_reward=np.array([team_reward], dtype=np.float32),
        )

    def end_episode(self) -> None:
        """Episodes are kept whole inside a part file where possible: flush only at boundaries."""
        if self._agents.rows >= self.rows_per_file:
            self.flush()

    # -- writing -------------------------------------------------------------------------------
    def _table(self, buffer: _Buffer, schema: pa.Schema) -> pa.Table:
        arrays = []
        for f in schema:
            blocks = buffer.columns[f.name]
            if pa.types.is_list(f.type):
                arrays.append(list_column(np.concatenate(blocks, axis=0), f.type.value_type))
            elif isinstance(blocks[0], pa.Array):
                arrays.append(pa.concat_arrays(blocks))
            elif isinstance(blocks[0], np.ndarray):
                arrays.append(pa.array(np.concatenate(blocks), type=f.type))
            else:
                arrays.append(pa.array([x for b in blocks for x in b], type=f.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _write(self, table: pa.Table, kind: str) -> Path:
        assert self._date is not None
        folder = self.root / kind / f"site={self.site}" / f"date={self._date.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-{self.writer_id}-{self._seq:05d}.parquet"
        tmp = folder / f".{final.name}.tmp"
        pq.write_table(table, tmp, compression=self.compression)
        os.replace(tmp, final)
        self.files_written.append(final)
        return final

    def flush(self) -> None:
        """Write buffered rows as one agent_steps and one env_steps part file."""
        if self._agents.rows == 0:
            return
        self._write(self._table(self._agents, self._agent_schema), "agent_steps")
        self._write(self._table(self._envs, self._env_schema), "env_steps")
        self.rows_written += self._agents.rows
        self._seq += 1
        self._agents.clear()
        self._envs.clear()

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
