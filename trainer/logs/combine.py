"""Several logs -> one training log (``inspo data combine``), repairing the gaps of decision logs.

Two things keep the runtime's decision log and earlier logs from being trained on together as they are:

* The decision log's ``state`` is the joint observation (``state_dim = obs_dim × agents``; the runtime
  does not know the simulator's global state), while a collected log carries the env's own state.
  ``state="auto"`` keeps the env state when every input has the same ``state_dim`` and otherwise
  rebuilds the state of *every* input as the joint observation (every agent's ``obs`` concatenated in
  ``agent_ids`` order, the runtime's definition); ``"env"`` refuses differing dims; ``"joint-obs"``
  always rebuilds.
* A step whose outcome never arrived is written to ``<dir>/<model>/no-outcome/`` and leaves a gap in
  ``t`` in ``<dir>/<model>/``; an outcome for only some agents leaves agents missing at a step. Both
  make ``load_log`` reject the whole log. Here, per episode, only steps where every agent has exactly
  one row (and, if the input has ``env_steps``, exactly one env row) are kept; the kept steps are cut
  into maximal runs of consecutive ``t``, and each run becomes an episode with ``t`` renumbered from 0:
  ``<episode_id>~<k>`` (``k`` counts the episode's runs from 0) when the episode fell into several
  runs, the unchanged id otherwise. The last step of a run that ends before its episode's last logged
  step is marked truncated (never terminated), so no target bootstraps across the gap. Runs shorter
  than ``min_length`` are dropped.

Values are checked with the loader's own checks (an error names the input file, column and row), the
output is written through :class:`contract.logformat.LogWriter` into a hidden temporary directory,
validated as ``load_log`` would, and renamed into place, so ``OUT`` either is a valid log or does not
exist.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contract.logformat import SIM_EPOCH, LogMeta, LogWriter, list_column, site_name
from trainer.logs.errors import LogValidationError
from trainer.logs.reader import RawLog, parse_meta, part_files, read_log
from trainer.logs.validate import (
    _finite,
    _fixed_lists,
    _no_nulls,
    _scalars,
    check_rows,
    validate,
)

STATE_MODES = ("auto", "env", "joint-obs")
SPLIT_MARK = "~"


@dataclass
class InputSummary:
    """What happened to one input log."""

    path: str
    env_id: str
    state_dim: int  # the state the input carries (joint obs when it has no env_steps)
    has_env_steps: bool
    episodes_in: int = 0
    steps_in: int = 0
    rows_in: int = 0
    steps_incomplete: int = 0  # dropped: an agent missing or repeated, or no single env_steps row
    episodes_split: int = 0  # episodes whose kept steps fell into several runs
    runs_short: int = 0  # runs dropped for --min-length
    steps_short: int = 0
    episodes_out: int = 0
    steps_out: int = 0
    rows_out: int = 0

    def row(self) -> dict[str, str | int]:
        return {
            "log": self.path,
            "episodes in": self.episodes_in,
            "steps in": self.steps_in,
            "incomplete steps dropped": self.steps_incomplete,
            "episodes split": self.episodes_split,
            "short runs dropped (steps)": f"{self.runs_short} ({self.steps_short})",
            "episodes out": self.episodes_out,
            "steps out": self.steps_out,
            "agent-steps out": self.rows_out,
        }


@dataclass
class CombineResult:
    out: Path
    meta: LogMeta
    state: str  # "env" or "joint-obs": what the output's state is
    inputs: list[InputSummary]
    files: list[Path]
    notes: list[str] = field(default_factory=list)

    @property
    def episodes(self) -> int:
        return sum(s.episodes_out for s in self.inputs)

    @property
    def steps(self) -> int:
        return sum(s.steps_out for s in self.inputs)

    @property
    def rows(self) -> int:
        return sum(s.rows_out for s in self.inputs)


# -- pass 0: metadata of every input ------------------------------------------------------------------
@dataclass
class _Peek:
    path: Path
    meta: LogMeta
    has_env: bool

    @property
    def state_dim(self) -> int:
        """The state the trainer would see: without env_steps it is the joint observation."""
        return self.meta.state_dim if self.has_env else self.meta.obs_dim * len(self.meta.agent_ids)


def _peek(path: Path) -> _Peek:
    if path.is_file():
        files, has_env = [path], False
    elif path.is_dir():
        files, has_env = part_files(path, "agent_steps"), bool(part_files(path, "env_steps"))
        if not files:
            raise LogValidationError(
                path, "no agent_steps part files found; expected <log>/agent_steps/**/part-*.parquet"
            )
    else:
        raise FileNotFoundError(f"{path}: no such log directory or file")
    try:
        schema = pq.read_schema(files[0])
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as err:
        raise LogValidationError(
            files[0], f"not a readable Parquet file (truncated, or another format?): {err}"
        ) from None
    return _Peek(path, parse_meta(files[0], schema.metadata), has_env)


def _check_compatible(peeks: list[_Peek], env_id: str | None) -> None:
    """Same agents, observation and action spaces; the same env id unless ``env_id`` names the output's."""
    first = peeks[0]
    for other in peeks[1:]:
        for key in ("obs_dim", "n_actions"):
            a, b = getattr(other.meta, key), getattr(first.meta, key)
            if a != b:
                raise ValueError(
                    f"{other.path}: {key}={a} differs from {key}={b} of {first.path}; "
                    "only logs of the same agents and spaces can be combined"
                )
        if set(other.meta.agent_ids) != set(first.meta.agent_ids):
            raise ValueError(
                f"{other.path}: agent_ids {other.meta.agent_ids} differ from {first.meta.agent_ids} of "
                f"{first.path}; only logs of the same agents can be combined"
            )
        if env_id is None and other.meta.env_id != first.meta.env_id:
            raise ValueError(
                f"{other.path}: env_id {other.meta.env_id!r} differs from {first.meta.env_id!r} of "
                f"{first.path}; if they are the same site, name the combined log's env with --env-id"
            )


def choose_state(peeks: list[_Peek], mode: str) -> tuple[str, str]:
    """(``"env"`` or ``"joint-obs"``, a sentence saying why)."""
    if mode not in STATE_MODES:
        raise ValueError(f"state must be one of {STATE_MODES}, got {mode!r}")
    dims = {p.state_dim for p in peeks}
    listed = ", ".join(f"{p.path}: {p.state_dim}" for p in peeks)
    if mode == "joint-obs":
        return "joint-obs", "state = joint observation (--state joint-obs)"
    if len(dims) == 1:
        return "env", f"state = each log's own state (state_dim {dims.pop()} in every input)"
    if mode == "env":
        raise ValueError(
            f"the inputs' state_dim differ ({listed}); the runtime's decision log records the joint "
            "observation as its state. Use --state joint-obs (or auto) to rebuild every input's state "
            "as the joint observation"
        )
    return "joint-obs", (
        f"state_dim differ ({listed}): state = joint observation (every agent's obs in agent_ids order) "
        "for all inputs"
    )


# -- pass 1: read, check and repair one input ---------------------------------------------------------
@dataclass
class _Repaired:
    agents: pa.Table  # output agent_steps rows, grouped by output step
    envs: pa.Table  # one row per output step
    run_names: list[str]  # output episode ids
    run_rows: np.ndarray  # [runs + 1] first agent row of each output episode
    run_sources: list[str]  # the input episode each output episode was cut from


def _extra_columns(raw: RawLog, n: int) -> tuple[pa.Array, pa.Array]:
    """``model_version`` and ``ts`` (the loader does not read them) in the row order of ``raw.agents``."""
    versions, stamps = [], []
    for path in raw.agents.files:
        names = pq.read_schema(path).names
        cols = [c for c in ("model_version", "ts") if c in names]
        table = pq.read_table(path, columns=cols)
        rows = table.num_rows if cols else pq.ParquetFile(path).metadata.num_rows
        version = table.column("model_version") if "model_version" in cols else None
        if version is None or pa.types.is_null(version.type):
            versions.append(pa.nulls(rows, pa.string()))
        else:
            versions.append(version.combine_chunks().cast(pa.string()))
        stamp = table.column("ts").combine_chunks() if "ts" in cols else None
        if stamp is None or not pa.types.is_timestamp(stamp.type):
            stamps.append(pa.nulls(rows, pa.timestamp("us")))
        else:
            stamps.append(stamp.cast(pa.timestamp("us", stamp.type.tz), safe=False).cast(pa.timestamp("us")))
    version, stamp = pa.concat_arrays(versions), pa.concat_arrays(stamps)
    assert len(version) == n, "extra columns must line up with the read rows"
    stamp = pc.fill_null(stamp, pa.scalar(SIM_EPOCH, pa.timestamp("us")))
    return version, stamp


def _env_rows(raw: RawLog, episode_ids: list[str], step_key: np.ndarray, steps_per_episode: int):
    """For each step (by key), how many env_steps rows it has and the index of one of them."""
    parts = raw.envs
    assert parts is not None
    if len(step_key) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _no_nulls(parts, "episode_id")
    index = pc.index_in(
        parts.table.column("episode_id"), value_set=pa.array(episode_ids, pa.string())
    ).to_numpy(zero_copy_only=False)
    known = ~np.isnan(index) if index.dtype.kind == "f" else np.ones(len(index), dtype=bool)
    episode = np.nan_to_num(index).astype(np.int64)
    t = _scalars(parts, "t").astype(np.int64)
    key = episode * steps_per_episode + t
    position = np.searchsorted(step_key, key)
    position = np.minimum(position, len(step_key) - 1)
    matched = known & (t >= 0) & (t < steps_per_episode) & (step_key[position] == key)
    count = np.bincount(position[matched], minlength=len(step_key))
    row_of_step = np.zeros(len(step_key), dtype=np.int64)
    row_of_step[position[matched]] = np.flatnonzero(matched)
    return count, row_of_step


def _repair(
    raw: RawLog, agent_ids: list[str], state: str, min_length: int, summary: InputSummary
) -> _Repaired:
    parts, meta = raw.agents, raw.meta
    n_agents, obs_dim = len(agent_ids), meta.obs_dim
    table = parts.table

    # the loader's value checks (they name the input file, column and row of the first bad value)
    v = check_rows(parts, meta)
    episode_ids, episode, t = v.episode_ids, v.episode, v.t
    position = {a: i for i, a in enumerate(agent_ids)}  # the output's agent order
    agent = np.array([position[a] for a in meta.agent_ids], dtype=np.int64)[v.agent]
    obs, masks, actions, rewards = v.obs, v.masks, v.actions, v.rewards
    terminated, truncated, probs = v.terminated, v.truncated, v.probs

    # steps: rows sorted by (episode, t, agent); a step is complete with one row per agent
    order = np.lexsort((agent, t, episode))
    se, st, sa = episode[order], t[order], agent[order]
    new_step = np.ones(len(order), dtype=bool)
    new_step[1:] = (se[1:] != se[:-1]) | (st[1:] != st[:-1])
    step_of = np.cumsum(new_step) - 1
    first_row = np.flatnonzero(new_step)
    n_steps = len(first_row)
    count = np.bincount(step_of, minlength=n_steps)
    repeated = np.zeros(len(order), dtype=bool)
    repeated[1:] = ~new_step[1:] & (sa[1:] == sa[:-1])
    complete = (count == n_agents) & (np.bincount(step_of, weights=repeated, minlength=n_steps) == 0)
    step_e, step_t = se[first_row], st[first_row]
    span = int(t.max()) + 1 if len(t) else 1
    step_key = step_e * span + step_t  # increasing
    env_row = None
    if raw.envs is not None:
        env_count, env_row = _env_rows(raw, episode_ids, step_key, span)
        complete &= env_count == 1
    summary.episodes_in, summary.steps_in, summary.rows_in = len(episode_ids), n_steps, len(order)
    summary.steps_incomplete = int((~complete).sum())

    # runs of consecutive t among the complete steps of each episode
    last_t = np.full(len(episode_ids), -1, dtype=np.int64)
    np.maximum.at(last_t, step_e, step_t)  # the episode's last logged step, complete or not
    kept = np.flatnonzero(complete)
    ke, kt = step_e[kept], step_t[kept]
    new_run = np.ones(len(kept), dtype=bool)
    new_run[1:] = (ke[1:] != ke[:-1]) | (kt[1:] != kt[:-1] + 1)
    run_of = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    run_e, run_start = ke[run_first], kt[run_first]
    run_len = np.diff(np.append(run_first, len(kept)))
    runs_per_episode = np.bincount(run_e, minlength=len(episode_ids))
    run_k = np.arange(len(run_first)) - np.searchsorted(run_e, run_e)  # index among its episode's runs
    run_cut = run_start + run_len - 1 < last_t[run_e]
    summary.episodes_split = int((runs_per_episode > 1).sum())
    keep_run = run_len >= min_length
    summary.runs_short = int((~keep_run).sum())
    summary.steps_short = int(run_len[~keep_run].sum())

    # output steps and rows
    out_steps = kept[keep_run[run_of]]
    out_run_old = run_of[keep_run[run_of]]
    new_index = np.cumsum(keep_run) - 1  # old run -> output run
    out_run = new_index[out_run_old]
    out_t = step_t[out_steps] - run_start[out_run_old]
    last_of_cut_run = run_cut[out_run_old] & (out_t == run_len[out_run_old] - 1)
    rows_per_step = n_agents
    sorted_rows = first_row[out_steps][:, None] + np.arange(rows_per_step)[None, :]
    rows = order[sorted_rows.reshape(-1)]  # original row indices, grouped by output step
    row_step = np.repeat(np.arange(len(out_steps)), rows_per_step)
    kept_runs = np.flatnonzero(keep_run)
    names = [
        episode_ids[run_e[r]] + (f"{SPLIT_MARK}{run_k[r]}" if runs_per_episode[run_e[r]] > 1 else "")
        for r in kept_runs
    ]
    name_array = pa.array(names, pa.string())
    summary.episodes_out, summary.steps_out, summary.rows_out = len(names), len(out_steps), len(rows)

    version, stamp = _extra_columns(raw, table.num_rows)
    take = pa.array(rows, pa.int64())
    controller = (
        pc.fill_null(table.column("controller").combine_chunks().take(take), "")
        if "controller" in table.column_names
        else pa.array([""] * len(rows), pa.string())
    )
    trunc = truncated[rows] | (last_of_cut_run[row_step] & ~terminated[rows])
    prob = probs[rows]
    agent_out = agent[rows]
    agents_table = pa.table(
        {
            "episode_id": name_array.take(pa.array(out_run[row_step])),
            "t": pa.array(out_t[row_step].astype(np.int32)),
            "agent_id": pa.array(agent_ids, pa.string()).take(pa.array(agent_out)),
            "obs": list_column(obs[rows], pa.float32()),
            "action": pa.array(actions[rows].astype(np.int32)),
            "action_mask": list_column(masks[rows], pa.bool_()),
            "reward": pa.array(rewards[rows]),
            "terminated": pa.array(terminated[rows]),
            "truncated": pa.array(trunc),
            "behavior_prob": pa.array(prob, mask=np.isnan(prob)),
            "controller": controller,
            "model_version": version.take(take),
            "ts": stamp.take(take),
        }
    )

    def joint_obs() -> np.ndarray:  # every agent's obs of the step, in the output's agent order
        joint = np.zeros((len(out_steps), n_agents, obs_dim), dtype=np.float32)
        joint[row_step, agent_out] = obs[rows]
        return joint.reshape(len(out_steps), n_agents * obs_dim)

    if raw.envs is not None:
        assert env_row is not None
        env_rows = env_row[out_steps]
        team = _scalars(raw.envs, "team_reward").astype(np.float32)
        _finite(raw.envs, "team_reward", team)
        team = team[env_rows]
        if state == "env":
            states = _fixed_lists(raw.envs, "state", meta.state_dim, "state_dim")
            _finite(raw.envs, "state", states)
            states = states[env_rows]
        else:
            states = joint_obs()
    else:  # as the loader derives them: the joint observation and the agents' mean reward
        states = joint_obs()
        weights = rewards[rows].astype(np.float64)
        team = (np.bincount(row_step, weights=weights, minlength=len(out_steps)) / n_agents).astype(
            np.float32
        )
    envs_table = pa.table(
        {
            "episode_id": name_array.take(pa.array(out_run)),
            "t": pa.array(out_t.astype(np.int32)),
            "state": list_column(states, pa.float32()),
            "team_reward": pa.array(team),
        }
    )
    run_rows = np.append(np.searchsorted(out_run, np.arange(len(names))), len(out_steps)) * rows_per_step
    return _Repaired(agents_table, envs_table, names, run_rows, [episode_ids[run_e[r]] for r in kept_runs])


# -- exogenous input events ----------------------------------------------------------------------------
def exogenous_channels(peeks: list[_Peek]) -> tuple[list[str] | None, str | None]:
    """The channels of the inputs' exogenous events when every input has them and names the same ones;
    otherwise None and why the combined log goes without them (a baseline that saw "no arrivals" in
    the episodes of an input that never recorded any would be wrong, not just noisier)."""
    from trainer.logs.exogenous import exogenous_channel_names

    names = [exogenous_channel_names(p.path) for p in peeks]
    if all(n is None for n in names):
        return None, None
    if any(n is None for n in names) or any(n != names[0] for n in names):
        have = [str(p.path) for p, n in zip(peeks, names, strict=True) if n is not None]
        return None, (
            f"exogenous events dropped: {', '.join(have)} record them, but not every input does with the "
            "same channels"
        )
    return names[0], None


def _add_exogenous(writer: LogWriter, path: Path, repaired: _Repaired, channels: list[str]) -> None:
    """Every output episode gets the events of the input episode it was cut from (same clock as its ``ts``:
    a run of an episode split at a gap keeps the episode's arrivals, which no action changed)."""
    from trainer.logs.exogenous import read_exogenous

    events = read_exogenous(path, sorted(set(repaired.run_sources)))
    assert events is not None
    epoch = (SIM_EPOCH - dt.datetime(1970, 1, 1)).total_seconds()
    for name, source in zip(repaired.run_names, repaired.run_sources, strict=True):
        writer.add_exogenous(name, events.times[source] - epoch, events.channel[source], channels)
    writer.flush()


# -- pass 2: write ------------------------------------------------------------------------------------
def _write(writer: LogWriter, repaired: _Repaired, rows_per_file: int) -> None:
    """Part files of about ``rows_per_file`` agent-steps, cut at episode boundaries."""
    bounds, n_agents = repaired.run_rows, len(writer.meta.agent_ids)
    start = 0
    while start < len(bounds) - 1:
        target = bounds[start] + rows_per_file
        stop = max(start + 1, int(np.searchsorted(bounds, target, side="right")) - 1)
        stop = min(stop, len(bounds) - 1)
        lo, hi = int(bounds[start]), int(bounds[stop])
        agents = repaired.agents.slice(lo, hi - lo)
        envs = repaired.envs.slice(lo // n_agents, (hi - lo) // n_agents)
        writer.add_tables(agents, envs)  # date partition: the first row's ts
        start = stop


def combine_logs(
    out: str | os.PathLike,
    logs: Sequence[str | os.PathLike],
    state: str = "auto",
    min_length: int = 1,
    env_id: str | None = None,
    rows_per_file: int = 200_000,
    progress: bool = False,
) -> CombineResult:
    """Write one training log at ``out`` from ``logs`` (see the module docstring)."""
    from tqdm import tqdm

    if not logs:
        raise ValueError("no input logs")
    if min_length < 1:
        raise ValueError(f"--min-length must be >= 1, got {min_length}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} already exists and is not empty; combine writes a new log")
    paths = [Path(p) for p in logs]
    peeks = [_peek(p) for p in paths]
    _check_compatible(peeks, env_id)
    mode, reason = choose_state(peeks, state)
    channels, dropped = exogenous_channels(peeks)
    first = peeks[0].meta
    agent_ids = list(first.agent_ids)
    meta = LogMeta(
        env_id=env_id or first.env_id,
        obs_dim=first.obs_dim,
        n_actions=first.n_actions,
        agent_ids=agent_ids,
        state_dim=peeks[0].state_dim if mode == "env" else first.obs_dim * len(agent_ids),
        site_spec=_common_site(peeks),
    )
    notes = [reason] + ([dropped] if dropped else [])
    for p in peeks:
        if p.path.name == "no-outcome":
            notes.append(
                f"{p.path} looks like a decision log's no-outcome/ part: its rewards are 0 (never reported)"
            )
    if env_id is not None and any(p.meta.env_id != env_id for p in peeks):
        notes.append(
            "env_id " + ", ".join(sorted({repr(p.meta.env_id) for p in peeks})) + f" written as {env_id!r}"
        )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.combine-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    summaries: list[InputSummary] = []
    seen: dict[str, Path] = {}
    try:
        writer = LogWriter(tmp, meta, site=site_name(meta.env_id), writer_id="combined")
        for peek in tqdm(peeks, desc="combine", unit="log", disable=not progress):
            raw = read_log(peek.path)
            summary = InputSummary(str(peek.path), raw.meta.env_id, peek.state_dim, raw.envs is not None)
            repaired = _repair(raw, agent_ids, mode, min_length, summary)
            for name in repaired.run_names:
                if name in seen:
                    where = "twice in it" if seen[name] == peek.path else f"also in {seen[name]}"
                    raise ValueError(
                        f"{peek.path}: episode_id {name!r} would appear {where}; episode ids must be unique "
                        "across the combined logs"
                    )
                seen[name] = peek.path
            _write(writer, repaired, rows_per_file)
            if channels is not None:
                _add_exogenous(writer, peek.path, repaired, channels)
            summaries.append(summary)
            del raw, repaired
        writer.close()
        if not writer.files_written:
            raise ValueError("no complete step left in any input: nothing to write")
        validate(read_log(tmp))  # what load_log checks; an error here is a bug of this module
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    files = [out / p.relative_to(tmp) for p in writer.files_written]
    return CombineResult(out, meta, mode, summaries, files, notes)


__all__ = ["STATE_MODES", "CombineResult", "InputSummary", "choose_state", "combine_logs"]


def _common_site(peeks: list[_Peek]) -> dict | None:
    """The first recorded site spec, once every other input's is of the same structure (envs/site.py)."""
    from envs.site import SiteMismatchError, compare

    specs = [(p.path, p.meta.site_spec) for p in peeks if p.meta.site_spec]
    for path, spec in specs[1:]:
        try:
            compare(specs[0][1], spec, left=str(specs[0][0]), right=str(path))
        except SiteMismatchError as err:
            raise ValueError(f"cannot combine logs of different sites: {err}") from None
    return specs[0][1] if specs else None
