"""The log's optional exogenous input events (docs/log-format.md, "Exogenous inputs").

One row per event that no control action changes (elevator: a passenger arriving at a floor), by
episode, time and channel. The residual estimator's state baseline may look at them *after* a decision
(trainer/algos/exogenous.py); nothing else reads them. A log without the table loads as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract.logformat import EXOGENOUS_CHANNELS_KEY, EXOGENOUS_FIELDS
from trainer.logs.errors import LogValidationError
from trainer.logs.reader import part_files


@dataclass
class ExogenousEvents:
    """Per episode id: the events' times (float64 seconds, same clock as the steps' ``ts``) and channels."""

    channels: list[str]
    times: dict[str, np.ndarray]
    channel: dict[str, np.ndarray]

    @property
    def n_events(self) -> int:
        return sum(len(t) for t in self.times.values())


def _channel_names(path: Path, schema: pa.Schema) -> list[str]:
    """The channel names in a file's schema metadata; raises naming the file when they are missing or bad."""
    raw = (schema.metadata or {}).get(EXOGENOUS_CHANNELS_KEY)
    if raw is None:
        raise LogValidationError(path, f"schema metadata lacks {EXOGENOUS_CHANNELS_KEY.decode()!r}")
    try:
        channels = json.loads(raw)
        assert isinstance(channels, list) and channels and all(isinstance(c, str) for c in channels)
    except (ValueError, AssertionError):
        raise LogValidationError(
            path, f"{EXOGENOUS_CHANNELS_KEY.decode()} must be a JSON list of names, got {raw[:80]!r}"
        ) from None
    return channels


def _check_file(path: Path, table: pa.Table) -> list[str]:
    """The file's channel names; raises naming the file, column and row on a broken file."""
    names = {f.name: f for f in table.schema}
    for field in EXOGENOUS_FIELDS:
        if field.name not in names:
            raise LogValidationError(path, f"missing column (has {sorted(names)})", column=field.name)
        if not names[field.name].type.equals(field.type):
            raise LogValidationError(
                path, f"type {names[field.name].type}, expected {field.type}", column=field.name
            )
        column = table.column(field.name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise LogValidationError(path, "null value", column=field.name, row=row)
    channels = _channel_names(path, table.schema)
    channel = table.column("channel").to_numpy()
    bad = np.flatnonzero((channel < 0) | (channel >= len(channels)))
    if len(bad):
        raise LogValidationError(
            path,
            f"channel {int(channel[bad[0]])} outside 0..{len(channels) - 1} ({len(bad)} such rows)",
            column="channel",
            row=int(bad[0]),
        )
    return channels


def exogenous_channel_names(root: str | Path) -> list[str] | None:
    """The channels the log's exogenous files name, from their schemas only (the rows are validated where
    :func:`read_exogenous` reads them); None without the table."""
    files = part_files(Path(root), "exogenous")
    if not files:
        return None
    channels = _channel_names(files[0], pq.read_schema(files[0]))
    for path in files[1:]:
        names = _channel_names(path, pq.read_schema(path))
        if names != channels:
            raise LogValidationError(path, f"exogenous channels {names} differ from {files[0]}'s {channels}")
    return channels


def _checked_tables(root: str | Path) -> tuple[list[str], list[pa.Table]] | None:
    """The log's exogenous part files (validated, naming the same channels) and their channel names."""
    channels = exogenous_channel_names(root)
    if channels is None:
        return None
    files = part_files(Path(root), "exogenous")
    tables = [pq.read_table(path) for path in files]
    for path, table in zip(files, tables, strict=True):
        _check_file(path, table)
    return channels, tables


def read_exogenous(root: str | Path, episode_ids: list[str]) -> ExogenousEvents | None:
    """The exogenous events of ``episode_ids`` (an episode with none gets empty arrays); None without the table.

    Every part file must name the same channels. Events of episodes the steps do not have are ignored
    (a log filtered by episode keeps its exogenous files whole)."""
    checked = _checked_tables(root)
    if checked is None:
        return None
    channels, tables = checked
    parts = [
        (
            t.column("episode_id").to_numpy(zero_copy_only=False),
            t.column("ts").cast(pa.int64()).to_numpy() / 1e6,
            t.column("channel").to_numpy(),
        )
        for t in tables
    ]
    ids = np.concatenate([p[0] for p in parts]).astype(str)
    ts = np.concatenate([p[1] for p in parts])
    ch = np.concatenate([p[2] for p in parts]).astype(np.int64)
    wanted = set(episode_ids)
    order = np.lexsort((ts, ids))
    ids, ts, ch = ids[order], ts[order], ch[order]
    bounds = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
    times, channel = {}, {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if ids[a] in wanted:
            times[str(ids[a])], channel[str(ids[a])] = ts[a:b], ch[a:b]
    empty_t, empty_c = np.zeros(0), np.zeros(0, np.int64)
    for episode in episode_ids:
        times.setdefault(episode, empty_t)
        channel.setdefault(episode, empty_c)
    return ExogenousEvents(channels, times, channel)


def exogenous_counts(root: str | Path) -> dict[str, int] | None:
    """Events per channel over the log's exogenous files (validated), for the dataset card; None without."""
    checked = _checked_tables(root)
    if checked is None:
        return None
    channels, tables = checked
    counts = np.zeros(len(channels), np.int64)
    for table in tables:
        counts += np.bincount(table.column("channel").to_numpy(), minlength=len(channels))
    return dict(zip(channels, counts.tolist(), strict=True))


__all__ = ["ExogenousEvents", "exogenous_channel_names", "exogenous_counts", "read_exogenous"]
