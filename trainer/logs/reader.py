"""Find a log's part files, read them, and check each file's metadata and column types.

This is the schema half of validation (value checks live in ``validate.py``). Columns are
accepted by *kind*, not exact width: a log written by plain pandas (int64, float64,
timestamp[ns], list<double>) loads and is cast to the documented types; a column of another
kind (a float ``action``, a string ``t``) is an error that names the file and the column.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from contract.logformat import AGENT_STEPS_FIELDS, ENV_STEPS_FIELDS, META_KEYS, SCHEMA_VERSION, LogMeta
from envs.site import SiteMismatchError, compare, parse_spec
from trainer.logs.errors import LogValidationError

# Columns a reader may do without: behaviour probabilities unknown, no controller name, no time.
OPTIONAL_AGENT_COLUMNS = {"behavior_prob", "controller", "model_version", "ts"}
# Columns only checked by type, never read (training does not need them).
UNREAD_COLUMNS = {"model_version"}

# Kinds a column may have on disk, per documented type; the reader casts to the documented type.
ACCEPTED_KINDS = {
    "string": {"string"},
    "int": {"int"},
    "float": {"float", "int"},
    "bool": {"bool"},
    "timestamp": {"timestamp"},
    "list<float>": {"list<float>", "list<int>"},
    "list<bool>": {"list<bool>"},
}


def kind_of(t: pa.DataType) -> str:
    """A coarse type name: the widths pandas and pyarrow pick differ, the kinds must not."""
    if pa.types.is_dictionary(t):
        return kind_of(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"list<{kind_of(t.value_type)}>"
    return str(t)


@dataclass
class PartTables:
    """All part files of one kind (``agent_steps`` or ``env_steps``), concatenated."""

    table: pa.Table
    files: list[Path]
    row_starts: np.ndarray  # [len(files) + 1] first global row of each file

    def locate(self, row: int) -> tuple[Path, int]:
        """The file and the row inside it of a global row."""
        i = int(np.searchsorted(self.row_starts, row, side="right") - 1)
        return self.files[i], int(row - self.row_starts[i])


@dataclass
class RawLog:
    meta: LogMeta
    agents: PartTables
    envs: PartTables | None  # None when the log has no env_steps (state and team reward derived)
    has_behavior_prob: bool
    fingerprint: str  # sha256 over the part files' relative paths and bytes


def part_files(root: Path, kind: str) -> list[Path]:
    """Part files under ``root/kind`` in sorted order, skipping hidden/temporary names (``.x``, ``_x``)."""
    base = root / kind
    if not base.is_dir():
        return []
    found = []
    for path in sorted(base.rglob("*.parquet")):
        rel = path.relative_to(base).parts
        if any(p.startswith((".", "_")) for p in rel) or not path.is_file():
            continue
        found.append(path)
    return found


def log_files(path: str | os.PathLike) -> tuple[Path, list[Path], list[Path]]:
    """The root and the agent/env part files of a log (a directory, or one agent_steps file), in reading order."""
    root = Path(path)
    if root.is_file():
        return root, [root], []
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such log directory or file")
    agents = part_files(root, "agent_steps")
    if not agents:
        raise LogValidationError(
            root, "no agent_steps part files found; expected <log>/agent_steps/**/part-*.parquet"
        )
    return root, agents, part_files(root, "env_steps")


def file_digest(path: Path, block: int = 1 << 22) -> bytes:
    """sha256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.digest()


def add_to_fingerprint(hasher, path: Path, digest: bytes) -> None:
    """A log's fingerprint covers each part file's relative path tail and the sha256 of its bytes."""
    hasher.update(str(path.parts[-4:]).encode())
    hasher.update(digest)


def combine_fingerprint(files: Iterable[Path], digests: Iterable[bytes]) -> str:
    """``read_log``'s fingerprint from per-file digests (the files in reading order)."""
    hasher = hashlib.sha256()
    for path, digest in zip(files, digests, strict=True):
        add_to_fingerprint(hasher, path, digest)
    return hasher.hexdigest()


def parse_meta(path: Path, metadata: dict[bytes, bytes] | None) -> LogMeta:
    """The environment facts from one file's schema metadata; every key is required."""
    metadata = metadata or {}
    values = {}
    for key in META_KEYS:
        raw = metadata.get(key.encode())
        if raw is None:
            raise LogValidationError(
                path,
                f"schema metadata has no {key!r}; expected keys {list(META_KEYS)} (docs/log-format.md shows how to add them)",
            )
        values[key] = raw.decode()
    try:
        version = int(values["schema_version"])
        if version > SCHEMA_VERSION:
            raise LogValidationError(
                path,
                f"schema_version {version} is newer than this reader understands (<= {SCHEMA_VERSION}); "
                "upgrade inspo-control to read this log",
            )
        agent_ids = json.loads(values["agent_ids"])
        if not (isinstance(agent_ids, list) and agent_ids and all(isinstance(a, str) for a in agent_ids)):
            raise ValueError("agent_ids must be a non-empty JSON list of strings")
        if len(set(agent_ids)) != len(agent_ids):
            raise ValueError("agent_ids repeats an agent")
        spec = metadata.get(b"site_spec")
        meta = LogMeta(
            env_id=values["env_id"],
            obs_dim=int(values["obs_dim"]),
            n_actions=int(values["n_actions"]),
            agent_ids=agent_ids,
            state_dim=int(values["state_dim"]),
            schema_version=version,
            site_spec=None if spec is None else parse_spec(spec, "schema metadata"),
        )
    except LogValidationError:
        raise
    except ValueError as err:  # json.JSONDecodeError is a ValueError
        raise LogValidationError(path, f"bad schema metadata: {err}; values {values}") from None
    if meta.obs_dim < 1 or meta.n_actions < 1 or meta.state_dim < 0:
        raise LogValidationError(path, f"bad schema metadata: obs_dim, n_actions must be >= 1, got {values}")
    return meta


def _cast_columns(path: Path, table: pa.Table, fields: list[pa.Field], present: list[str]) -> pa.Table:
    """Cast each present column to its documented type; overflow (e.g. int64 t > 2^31) is an error."""
    by_name = {f.name: f for f in fields}
    arrays = []
    for name in table.column_names:
        target = by_name[name].type
        column = table.column(name)
        if column.type == target:
            arrays.append(column)
            continue
        try:
            safe = kind_of(target) in ("int", "string")  # float narrowing is the documented width
            arrays.append(column.cast(target, safe=safe))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise LogValidationError(
                path, f"cannot convert {column.type} to {target}: {err}", column=name
            ) from None
    return pa.Table.from_arrays(arrays, names=table.column_names)


def read_part(path: Path, kind: str, hasher) -> tuple[pa.Table, LogMeta]:
    """One part file: bytes hashed, schema checked, needed columns read and cast."""
    fields = AGENT_STEPS_FIELDS if kind == "agent_steps" else ENV_STEPS_FIELDS
    optional = OPTIONAL_AGENT_COLUMNS if kind == "agent_steps" else set()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LogValidationError(path, f"cannot read file: {err}") from None
    add_to_fingerprint(hasher, path, hashlib.sha256(data).digest())
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
        raise LogValidationError(
            path, f"not a readable Parquet file (truncated, or another format?): {err}"
        ) from None
    meta = parse_meta(path, schema.metadata)
    present = []
    for f in fields:
        if f.name not in schema.names:
            if f.name in optional:
                continue
            raise LogValidationError(path, f"missing column; expected type {f.type}", column=f.name)
        found, expected = kind_of(schema.field(f.name).type), kind_of(f.type)
        all_null_ok = found == "null" and f.nullable  # pandas writes an all-None column as type null
        if found not in ACCEPTED_KINDS[expected] and not all_null_ok:
            raise LogValidationError(
                path,
                f"wrong dtype {schema.field(f.name).type}; expected {f.type}",
                column=f.name,
            )
        if f.name not in UNREAD_COLUMNS:
            present.append(f.name)
    try:
        table = parquet.read(columns=present)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
        raise LogValidationError(path, f"Parquet data unreadable (truncated or corrupt?): {err}") from None
    return _cast_columns(path, table, fields, present), meta


def _read_files(files: list[Path], kind: str, hasher) -> tuple[PartTables | None, list[tuple[Path, LogMeta]]]:
    if not files:
        return None, []
    tables, metas = [], []
    for path in files:
        table, meta = read_part(path, kind, hasher)
        tables.append(table)
        metas.append((path, meta))
    return concat_parts(tables, files, kind), metas


def concat_parts(tables: list[pa.Table], files: list[Path], kind: str) -> PartTables:
    """One table from part files' tables, remembering which rows came from which file.

    Files may differ in which optional columns they hold: missing ones are filled with nulls.
    """
    names = list(dict.fromkeys(n for t in tables for n in t.column_names))
    fields = {f.name: f for f in (AGENT_STEPS_FIELDS if kind == "agent_steps" else ENV_STEPS_FIELDS)}
    aligned = [
        t
        if t.column_names == names
        else pa.Table.from_arrays(
            [t.column(n) if n in t.column_names else pa.nulls(t.num_rows, fields[n].type) for n in names],
            names=names,
        )
        for t in tables
    ]
    return PartTables(pa.concat_tables(aligned), files, np.cumsum([0] + [t.num_rows for t in tables]))


def _check_same_meta(metas: list[tuple[Path, LogMeta]]) -> LogMeta:
    """Every file describes the same env; site specs may differ in demand only (the first file's is kept)."""
    first_path, first = metas[0]
    for path, meta in metas[1:]:
        for key in ("env_id", "obs_dim", "n_actions", "agent_ids", "state_dim"):
            if getattr(meta, key) != getattr(first, key):
                raise LogValidationError(
                    path,
                    f"schema metadata {key}={getattr(meta, key)!r} differs from {key}={getattr(first, key)!r} in {first_path}",
                )
        if meta.site_spec and first.site_spec and meta.site_spec != first.site_spec:
            try:
                compare(first.site_spec, meta.site_spec, left=first_path.name, right="this file")
            except SiteMismatchError as err:
                raise LogValidationError(path, f"schema metadata site_spec: {err}") from None
    return first


def read_log(path: str | os.PathLike) -> RawLog:
    """Read a log directory (``<log>/agent_steps/...``) or a single agent_steps Parquet file."""
    _, agent_files, env_files = log_files(path)
    hasher = hashlib.sha256()
    agents, metas = _read_files(agent_files, "agent_steps", hasher)
    envs, env_metas = _read_files(env_files, "env_steps", hasher)
    metas += env_metas
    meta = _check_same_meta(metas)
    has_probs = "behavior_prob" in agents.table.column_names
    return RawLog(meta, agents, envs, has_probs, hasher.hexdigest())
