"""Value checks of a log, vectorised over all rows (no per-row Python loop).

Every check finds the first offending row and raises :class:`LogValidationError` naming its
file, row, column and (episode, t, agent), with how many other rows share the problem. The
result, :class:`Columns`, holds the validated columns as numpy arrays plus the index that
places each row in the padded ``(E, T, N)`` grid, so conversion does no further checking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.logformat import LogMeta
from trainer.logs.errors import LogValidationError
from trainer.logs.reader import PartTables, RawLog


@dataclass
class Columns:
    """Validated agent_steps (and env_steps) columns and each row's place in the padded grid."""

    episode_ids: list[str]  # sorted; index = episode code
    episode: np.ndarray  # [n] episode code of each agent row
    t: np.ndarray  # [n]
    agent: np.ndarray  # [n] index into meta.agent_ids
    lengths: np.ndarray  # [E] steps per episode
    obs: np.ndarray  # [n, O] float32
    masks: np.ndarray  # [n, A] bool
    actions: np.ndarray  # [n] int64
    rewards: np.ndarray  # [n] float32
    terminated: np.ndarray  # [n] bool
    truncated: np.ndarray  # [n] bool
    behavior_prob: np.ndarray  # [n] float32, NaN where null
    controller: np.ndarray | None  # [E] controller name of each episode's first row
    env_episode: np.ndarray | None  # [m] episode code of each env row
    env_t: np.ndarray | None
    states: np.ndarray | None  # [m, S]
    team_rewards: np.ndarray | None  # [m]
    ts: np.ndarray | None = None  # [n] float64 seconds since the simulation epoch; None without a ts column


def _context(parts: PartTables, row: int) -> str:
    table = parts.table
    bits = []
    for name in ("episode_id", "t", "agent_id"):
        if name in table.column_names:
            value = table.column(name)[row].as_py()
            bits.append(
                f"{'episode' if name == 'episode_id' else 'agent' if name == 'agent_id' else 't'}={value!r}"
            )
    return ", ".join(bits)


def fail(parts: PartTables, bad: np.ndarray, column: str, message: Callable[[int], str]) -> None:
    """Raise for the first True of ``bad`` (a bool mask over rows), if any."""
    rows = np.flatnonzero(bad)
    if rows.size == 0:
        return
    first = int(rows[0])
    file, row = parts.locate(first)
    more = f" ({rows.size - 1} more rows like it)" if rows.size > 1 else ""
    raise LogValidationError(file, message(first) + more, column, row, _context(parts, first))


def _no_nulls(parts: PartTables, name: str) -> None:
    column = parts.table.column(name)
    if column.null_count:
        bad = pc.is_null(column).to_numpy(zero_copy_only=False)
        fail(parts, bad, name, lambda r: "null value; this column must always be set")


def _scalars(parts: PartTables, name: str) -> np.ndarray:
    _no_nulls(parts, name)
    return parts.table.column(name).to_numpy()


def _fixed_lists(parts: PartTables, name: str, width: int, width_name: str) -> np.ndarray:
    """A list column as a ``[rows, width]`` array; every list must have exactly ``width`` items."""
    _no_nulls(parts, name)
    column = parts.table.column(name)
    lengths = pc.list_value_length(column).to_numpy()
    fail(
        parts, lengths != width, name, lambda r: f"list of length {lengths[r]}, expected {width_name}={width}"
    )
    values = pc.list_flatten(column)
    if values.null_count:
        flat_bad = pc.is_null(values).to_numpy(zero_copy_only=False)
        rows = np.zeros(len(lengths), dtype=bool)
        rows[np.flatnonzero(flat_bad) // max(width, 1)] = True
        fail(parts, rows, name, lambda r: "null inside the list; every element must be set")
    return values.to_numpy().reshape(len(lengths), width)


def _finite(parts: PartTables, name: str, values: np.ndarray) -> None:
    # Fast path: a float64 sum of float32 values cannot overflow, so it is finite iff all values are.
    if np.isfinite(np.sum(values, dtype=np.float64)):
        return
    finite = np.isfinite(values)
    if values.ndim == 2:
        finite = finite.all(axis=1)
    fail(
        parts,
        ~finite,
        name,
        lambda r: f"NaN or Inf in {np.asarray(values[r]).tolist()}; expected finite numbers",
    )


def _encode_sorted(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray, pa.Array]:
    """Codes of a string column that follow the sorted order of its distinct values."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(array)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    names = encoded.dictionary.to_pylist()
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return [names[i] for i in order], rank[encoded.indices.to_numpy()], pa.array([names[i] for i in order])


def _agents(parts: PartTables, agent_ids: list[str]) -> np.ndarray:
    _no_nulls(parts, "agent_id")
    names, codes, _ = _encode_sorted(parts.table.column("agent_id"))
    position = {a: i for i, a in enumerate(agent_ids)}
    lookup = np.array([position.get(n, -1) for n in names], dtype=np.int64)
    agent = lookup[codes]
    fail(parts, agent < 0, "agent_id", lambda r: f"agent not in the metadata's agent_ids {agent_ids}")
    return agent


def _check_keys(
    parts: PartTables,
    episode: np.ndarray,
    t: np.ndarray,
    agent: np.ndarray,
    agent_ids: list[str],
    n_episodes: int,
) -> np.ndarray:
    """Every episode has one row per agent for each t = 0..L-1: no duplicates, no gaps. Returns L."""
    n_agents = len(agent_ids)
    lengths = np.zeros(n_episodes, dtype=np.int64)
    np.maximum.at(lengths, episode, t)
    lengths += 1
    counts = np.bincount(episode, minlength=n_episodes)
    bad = np.flatnonzero(counts != lengths * n_agents)
    if bad.size == 0:  # counts match; a duplicate could still hide a gap of equal size
        steps = int(lengths.max())
        flat = (episode * steps + t) * n_agents + agent
        cells = np.bincount(flat, minlength=n_episodes * steps * n_agents)
        bad = np.unique(flat[cells[flat] > 1] // (steps * n_agents))
    if bad.size:
        _diagnose_episode(parts, episode, t, agent, agent_ids, int(bad[0]), int(lengths[bad[0]]))
    return lengths


def _diagnose_episode(parts, episode, t, agent, agent_ids: list[str], e: int, length: int) -> None:
    """Name the duplicate row or the missing step of one broken episode."""
    n_agents = len(agent_ids)
    rows = np.flatnonzero(episode == e)
    keys = t[rows] * n_agents + agent[rows]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    repeated = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if repeated.size:
        first, second = rows[order[repeated[0]]], rows[order[repeated[0] + 1]]
        other_file, other_row = parts.locate(int(first))
        mask = np.zeros(len(episode), dtype=bool)
        mask[second] = True
        fail(
            parts,
            mask,
            "t",
            lambda r: (
                f"repeated t: duplicate (episode, t, agent), first seen at {other_file} row {other_row}"
            ),
        )
    missing = int(np.setdiff1d(np.arange(length * n_agents), sorted_keys)[0])
    mt, ma = divmod(missing, n_agents)
    step_present = np.any(t[rows] == mt)
    after = rows[t[rows] > mt]
    mask = np.zeros(len(episode), dtype=bool)
    mask[after[0] if after.size else rows[0]] = True
    if not step_present:
        fail(
            parts,
            mask,
            "t",
            lambda r: f"gap in t: no step t={mt} (expected t = 0..{length - 1}, consecutive from 0)",
        )
    fail(
        parts,
        mask,
        "agent_id",
        lambda r: f"agent {agent_ids[ma]!r} has no row at t={mt}; every agent needs a row at every step",
    )


@dataclass
class RowValues:
    """Every agent row's values, each checked (an error names the file, column and row)."""

    episode_ids: np.ndarray  # sorted unique episode ids
    episode: np.ndarray  # per row: index into episode_ids
    t: np.ndarray
    agent: np.ndarray  # per row: index into the log's agent_ids
    obs: np.ndarray
    masks: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    probs: np.ndarray


def check_rows(parts: PartTables, meta: LogMeta) -> RowValues:
    """The per-row checks of docs/log-format.md (shared by the loader and ``inspo data combine``)."""
    _no_nulls(parts, "episode_id")
    episode_ids, episode, _ = _encode_sorted(parts.table.column("episode_id"))
    t = _scalars(parts, "t").astype(np.int64)
    fail(parts, t < 0, "t", lambda r: f"negative t={t[r]}; steps count from 0")
    agent = _agents(parts, meta.agent_ids)

    obs = _fixed_lists(parts, "obs", meta.obs_dim, "obs_dim")
    _finite(parts, "obs", obs)
    masks = _fixed_lists(parts, "action_mask", meta.n_actions, "n_actions")
    fail(
        parts, ~masks.any(axis=1), "action_mask", lambda r: "no legal action; at least one entry must be true"
    )
    actions = _scalars(parts, "action").astype(np.int64)
    fail(
        parts,
        (actions < 0) | (actions >= meta.n_actions),
        "action",
        lambda r: f"action {actions[r]} outside 0..{meta.n_actions - 1}",
    )
    allowed = masks[np.arange(len(actions)), actions]
    fail(
        parts,
        ~allowed,
        "action",
        lambda r: f"action {actions[r]} is not allowed by its action_mask {masks[r].astype(int).tolist()}",
    )
    rewards = _scalars(parts, "reward").astype(np.float32)
    _finite(parts, "reward", rewards)
    terminated = _scalars(parts, "terminated").astype(bool)
    truncated = _scalars(parts, "truncated").astype(bool)
    probs = _behavior_prob(parts)
    return RowValues(
        episode_ids, episode, t, agent, obs, masks, actions, rewards, terminated, truncated, probs
    )


def validate(raw: RawLog) -> Columns:
    """Check every value of the log and return the validated columns."""
    meta, parts = raw.meta, raw.agents
    v = check_rows(parts, meta)
    lengths = _check_keys(parts, v.episode, v.t, v.agent, meta.agent_ids, len(v.episode_ids))
    controller = _episode_controllers(parts, v.episode, v.t, len(v.episode_ids))

    columns = Columns(
        v.episode_ids,
        v.episode,
        v.t,
        v.agent,
        lengths,
        v.obs,
        v.masks,
        v.actions,
        v.rewards,
        v.terminated,
        v.truncated,
        v.probs,
        controller,
        None,
        None,
        None,
        None,
        _timestamps(parts),
    )
    if raw.envs is not None:
        _validate_env_steps(raw, columns)
    return columns


def _timestamps(parts: PartTables) -> np.ndarray | None:
    """``ts`` as float seconds (time-aware discounting reads it); None when the log has no ts column."""
    if "ts" not in parts.table.column_names:
        return None
    _no_nulls(parts, "ts")
    column = parts.table.column("ts")
    micros = pc.cast(column, pa.timestamp("us")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return micros.astype(np.float64) * 1e-6


def _behavior_prob(parts: PartTables) -> np.ndarray:
    """Null means unknown (NaN in the arrays); a value must be a probability in (0, 1]."""
    if "behavior_prob" not in parts.table.column_names:
        return np.full(parts.table.num_rows, np.nan, dtype=np.float32)
    column = parts.table.column("behavior_prob")
    known = pc.is_valid(column).to_numpy(zero_copy_only=False)
    probs = column.to_numpy(zero_copy_only=False).astype(np.float32)
    bad = known & ~((probs > 0) & (probs <= 1 + 1e-6))
    fail(
        parts,
        bad,
        "behavior_prob",
        lambda r: f"{probs[r]} is not a probability in (0, 1] (write null when unknown)",
    )
    return np.where(known, np.minimum(probs, 1.0), np.nan).astype(np.float32)


def _episode_controllers(
    parts: PartTables, episode: np.ndarray, t: np.ndarray, n_episodes: int
) -> np.ndarray | None:
    if "controller" not in parts.table.column_names:
        return None
    first = np.flatnonzero(t == 0)
    first = first[np.unique(episode[first], return_index=True)[1]]
    names = parts.table.column("controller").take(pa.array(first)).to_pylist()
    out = np.array(["" if n is None else n for n in names], dtype=object)
    return out if len(out) == n_episodes else None


def _validate_env_steps(raw: RawLog, columns: Columns) -> None:
    """env_steps rows must match the agent steps' (episode, t) one to one."""
    parts, meta = raw.envs, raw.meta
    assert parts is not None
    _no_nulls(parts, "episode_id")
    value_set = pa.array(columns.episode_ids, type=pa.string())
    index = pc.index_in(parts.table.column("episode_id"), value_set=value_set).to_numpy(zero_copy_only=False)
    unknown = np.isnan(index) if index.dtype.kind == "f" else np.zeros(len(index), dtype=bool)
    fail(parts, unknown, "episode_id", lambda r: "episode has env_steps but no agent_steps rows")
    episode = np.nan_to_num(index).astype(np.int64)
    t = _scalars(parts, "t").astype(np.int64)
    length = columns.lengths[episode]
    fail(
        parts,
        (t < 0) | (t >= length),
        "t",
        lambda r: f"t={t[r]} outside the episode's agent steps 0..{length[r] - 1}",
    )
    steps = int(columns.lengths.max())
    flat = episode * steps + t
    cells = np.bincount(flat, minlength=len(columns.episode_ids) * steps)
    fail(parts, cells[flat] > 1, "t", lambda r: "repeated t: duplicate (episode, t) in env_steps")
    if len(flat) != int(columns.lengths.sum()):
        expected = np.arange(steps)[None, :] < columns.lengths[:, None]
        missing = np.flatnonzero(expected.reshape(-1) & (cells == 0))[0]
        e, mt = divmod(int(missing), steps)
        raise LogValidationError(
            parts.files[0].parents[2],
            f"no env_steps row for episode {columns.episode_ids[e]!r} t={mt}, which has agent_steps rows",
            column="t",
        )
    states = _fixed_lists(parts, "state", meta.state_dim, "state_dim")
    _finite(parts, "state", states)
    team = _scalars(parts, "team_reward").astype(np.float32)
    _finite(parts, "team_reward", team)
    columns.env_episode, columns.env_t, columns.states, columns.team_rewards = episode, t, states, team
