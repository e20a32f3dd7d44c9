"""Logs larger than memory: the dataset card and the padded arrays, one group of part files at a time.

Pass 1 (:func:`plan_log`) reads each part file once, alone: its schema is checked (``reader.read_part``),
its bytes enter the log fingerprint (the same hash as ``read_log``), and the episodes it holds are
noted. Files that share an episode (an episode cut by a date change, its ``env_steps`` file) form a
*group*; episodes never cross groups. Pass 2 reads one group at a time and runs the unchanged
``validate`` and ``to_offline_data`` on it, so every value check is the in-memory one, and
accumulates the card (:func:`stream_card`) or writes the group's episodes into ``.npy`` memory maps
(:func:`build_array_cache`). Peak memory is one group, not the log.

The cache is a directory ``<cache_dir>/<fingerprint>/`` of ``.npy`` files (``np.load(mmap_mode="r")``)
plus ``meta.json`` and ``card.json``; :func:`open_array_cache` returns an :class:`OfflineData` whose
arrays are memory maps, and :class:`ArrayCache.sample` draws transitions reading only their rows.
Results equal the in-memory path exactly (tests compare card and arrays). Where a log holds
several errors, the first one reported may differ from ``open_log``'s (groups are checked in order).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.logformat import LogMeta
from trainer.logs.card import (
    CLEAR_CHOICE,
    JOINT_COVERAGE_LIMIT,
    NEAR_ONE,
    DatasetCard,
    _action_names,
    _stats,
    _warnings,
)
from trainer.logs.convert import LoadedLog, to_offline_data
from trainer.logs.dataset import OfflineData
from trainer.logs.errors import LogValidationError
from trainer.logs.reader import (
    PartTables,
    RawLog,
    _check_same_meta,
    combine_fingerprint,
    concat_parts,
    file_digest,
    log_files,
    read_part,
)
from trainer.logs.validate import validate

ARRAYS = {  # name -> (dtype, trailing shape key, padding value)
    "obs": (np.float32, "O", 0.0),
    "actions": (np.int64, "", 0),
    "masks": (np.bool_, "A", False),
    "rewards": (np.float32, "", 0.0),
    "team_rewards": (np.float32, None, 0.0),
    "states": (np.float32, "S", 0.0),
    "terminated": (np.bool_, None, False),
    "truncated": (np.bool_, None, False),
    "behavior_prob": (np.float32, "", np.nan),
    "filled": (np.bool_, None, False),
    "ts": (np.float64, None, np.nan),  # seconds of each step (discount="time"); NaN where not logged
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("INSPO_CACHE_DIR", "~/.cache/inspo")).expanduser() / "arrays"


# -- pass 1: plan ---------------------------------------------------------------------------------
@dataclass
class FileGroup:
    """Part files that together hold whole episodes."""

    agent_files: list[Path]
    env_files: list[Path]


@dataclass
class LogPlan:
    root: Path
    meta: LogMeta
    agent_files: list[Path]
    env_files: list[Path]
    episode_ids: list[str]  # sorted, as in the in-memory arrays
    max_steps: int  # T of the padded arrays
    groups: list[FileGroup]
    fingerprint: str
    has_behavior_prob: bool = False
    index: dict[str, int] = field(default_factory=dict)  # episode id -> row of the arrays

    def __post_init__(self) -> None:
        self.index = {e: i for i, e in enumerate(self.episode_ids)}


@dataclass
class FileScan:
    """What pass 1 keeps of one part file: its episodes, their row counts and largest t."""

    path: Path
    kind: str
    meta: LogMeta
    episodes: list[str]
    counts: np.ndarray
    max_t: np.ndarray
    has_behavior_prob: bool = False


def scan_table(path: Path, kind: str, meta: LogMeta, table: pa.Table) -> FileScan:
    keys = table.select(["episode_id", "t"]).filter(pc.is_valid(table.column("episode_id")))
    agg = keys.group_by("episode_id").aggregate([("t", "max"), ("t", "count")])
    return FileScan(
        path,
        kind,
        meta,
        agg.column("episode_id").to_pylist(),
        agg.column("t_count").to_numpy(zero_copy_only=False).astype(np.int64),
        np.nan_to_num(agg.column("t_max").to_numpy(zero_copy_only=False).astype(np.float64), nan=-1).astype(
            np.int64
        ),
        "behavior_prob" in table.column_names,
    )


def log_fingerprint(path: str | os.PathLike) -> str:
    """The fingerprint ``load_log`` would give, by hashing the files only (no Parquet decoding)."""
    _, agents, envs = log_files(path)
    files = agents + envs
    return combine_fingerprint(files, (file_digest(p) for p in files))


def plan_from_scans(root: Path, scans: list[FileScan], fingerprint: str) -> LogPlan:
    """Group files sharing an episode (union-find) and size the arrays."""
    meta = _check_same_meta([(s.path, s.meta) for s in scans])
    parent = list(range(len(scans)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    counts: dict[str, int] = {}
    longest: dict[str, int] = {}
    for i, scan in enumerate(scans):
        for e, n, t in zip(scan.episodes, scan.counts.tolist(), scan.max_t.tolist(), strict=True):
            if e in owner:
                parent[find(i)] = find(owner[e])
            else:
                owner[e] = i
            if scan.kind == "agent_steps":
                counts[e] = counts.get(e, 0) + n
                longest[e] = max(longest.get(e, -1), t)
    members: dict[int, list[int]] = {}
    for i in range(len(scans)):
        members.setdefault(find(i), []).append(i)
    groups = [
        FileGroup(
            [scans[i].path for i in ids if scans[i].kind == "agent_steps"],
            [scans[i].path for i in ids if scans[i].kind == "env_steps"],
        )
        for ids in sorted(members.values(), key=min)
    ]
    plan = LogPlan(
        root=root,
        meta=meta,
        agent_files=[s.path for s in scans if s.kind == "agent_steps"],
        env_files=[s.path for s in scans if s.kind == "env_steps"],
        episode_ids=sorted(counts),
        max_steps=0,
        groups=groups,
        fingerprint=fingerprint,
        has_behavior_prob=any(s.has_behavior_prob for s in scans if s.kind == "agent_steps"),
    )
    # A valid episode of length L has L * N rows; a larger t means a gap that validation names.
    n_agents = len(meta.agent_ids)
    suspicious = [e for e in counts if longest[e] + 1 > -(-counts[e] // n_agents)]
    if suspicious:
        bad = owner[suspicious[0]]
        for group in groups:
            if scans[bad].path in group.agent_files + group.env_files:
                read_group(plan, group)  # raises the in-memory message
    plan.max_steps = max(longest.values(), default=-1) + 1
    return plan


def plan_log(path: str | os.PathLike) -> LogPlan:
    """Pass 1: every file read alone, schema-checked and hashed; returns the grouping."""
    root, agents, envs = log_files(path)
    hasher = hashlib.sha256()
    scans = []
    for kind, files in (("agent_steps", agents), ("env_steps", envs)):
        for p in files:
            table, meta = read_part(p, kind, hasher)
            scans.append(scan_table(p, kind, meta, table))
    return plan_from_scans(root, scans, hasher.hexdigest())


# -- pass 2: one group at a time ------------------------------------------------------------------
def _part_tables(files: list[Path], kind: str) -> PartTables:
    """Like ``reader._read_kind`` for a list of files (the fingerprint came from pass 1)."""
    hasher = hashlib.sha256()  # unused: the fingerprint came from pass 1
    return concat_parts([read_part(p, kind, hasher)[0] for p in files], files, kind)


def read_group(plan: LogPlan, group: FileGroup) -> LoadedLog:
    """Validate and convert one group with the in-memory code (arrays padded to the group's T)."""
    if not group.agent_files:
        envs = _part_tables(group.env_files, "env_steps")
        raise LogValidationError(
            group.env_files[0],
            "episode has env_steps but no agent_steps rows",
            column="episode_id",
            row=0,
            context=f"episode={envs.table.column('episode_id')[0].as_py()!r}",
        )
    agents = _part_tables(group.agent_files, "agent_steps")
    envs = _part_tables(group.env_files, "env_steps") if group.env_files else None
    if plan.env_files and envs is None:
        first = agents.table.column("episode_id")[0].as_py()
        raise LogValidationError(
            plan.root, f"no env_steps row for episode {first!r} t=0, which has agent_steps rows", column="t"
        )
    raw = RawLog(plan.meta, agents, envs, "behavior_prob" in agents.table.column_names, plan.fingerprint)
    columns = validate(raw)
    return LoadedLog(to_offline_data(raw, columns), raw, columns)


def iter_groups(plan: LogPlan) -> Iterator[LoadedLog]:
    for group in plan.groups:
        yield read_group(plan, group)


GroupMapper = Callable[[LogPlan], Iterable[LoadedLog]]


# -- the card -------------------------------------------------------------------------------------
class CardAccumulator:
    """The dataset card's statistics summed over groups; :meth:`card` equals ``build_card``."""

    def __init__(self, plan: LogPlan):
        self.plan = plan
        n_ep, meta = len(plan.episode_ids), plan.meta
        n, a = len(meta.agent_ids), meta.n_actions
        self.returns = np.zeros(n_ep, np.float64)
        self.lengths = np.zeros(n_ep, np.int64)
        self.controllers = np.full(n_ep, "", dtype=object)
        self.any_controller = False
        self.counts = np.zeros((n, a), np.int64)
        self.ever_legal = np.zeros((n, a), bool)
        self.codes: set[int] | None = set()
        self.known = self.ones = self.cells = self.near_one = 0
        self.choices = np.zeros(
            n, np.int64
        )  # per agent: known probabilities of decisions with > 1 legal action
        self.alternatives = np.zeros(n, np.int64)  # ... of which the logged action had p <= CLEAR_CHOICE

    def add(self, log: LoadedLog) -> np.ndarray:
        """Fold one group in; returns the rows of the log's arrays its episodes occupy."""
        data, cols = log.data, log.columns
        rows = np.array([self.plan.index[e] for e in data.episode_ids], dtype=np.int64)
        pad = self.plan.max_steps - data.filled.shape[1]
        team = np.pad(data.team_rewards, ((0, 0), (0, pad)))
        filled = np.pad(data.filled, ((0, 0), (0, pad)))
        self.returns[rows] = (team * filled).sum(axis=1).astype(np.float64)  # as episode_returns()
        self.lengths[rows] = data.filled.sum(axis=1)
        if cols.controller is not None:
            self.controllers[rows] = cols.controller
            self.any_controller = True
        actions, masks = data.actions[data.filled], data.masks[data.filled]
        for i in range(data.n_agents):
            self.counts[i] += np.bincount(actions[:, i], minlength=data.n_actions)
        self.ever_legal |= masks.any(axis=0)
        if self.codes is not None:
            self.codes.update(
                np.unique((actions * (data.n_actions ** np.arange(data.n_agents))).sum(axis=1)).tolist()
            )
            if len(self.codes) > JOINT_COVERAGE_LIMIT:  # the joint space is larger than the limit
                self.codes = None
        probs = data.behavior_prob[data.filled]
        known = ~np.isnan(probs)
        self.cells += probs.size
        self.known += int(known.sum())
        self.ones += int((probs[known] >= 1.0 - 1e-6).sum())
        choice = known & (masks.sum(axis=-1) > 1)
        self.near_one += int((probs[choice] > NEAR_ONE).sum())
        self.choices += choice.sum(axis=0)
        self.alternatives += (choice & (probs <= CLEAR_CHOICE)).sum(axis=0)
        return rows

    def card(self, path: str = "") -> DatasetCard:
        plan, meta = self.plan, self.plan.meta
        agents, n_actions = list(meta.agent_ids), meta.n_actions
        steps = int(self.lengths.sum())
        card = DatasetCard(
            path=path,
            env_id=meta.env_id,
            fingerprint=plan.fingerprint,
            files=len(plan.agent_files) + len(plan.env_files),
            episodes=len(plan.episode_ids),
            steps=steps,
            agent_steps=steps * len(agents),
            agents=agents,
            obs_dim=meta.obs_dim,
            n_actions=n_actions,
            action_names=_action_names(meta.env_id, n_actions, meta.site_spec),
            site_spec=meta.site_spec,
            length={k: v for k, v in _stats(self.lengths.astype(np.float64)).items() if k != "std"},
            returns=_stats(self.returns),
        )
        if self.any_controller:
            for name in sorted(set(self.controllers)):
                chosen = self.controllers == name
                card.controllers.append(
                    {
                        "controller": name,
                        "episodes": int(chosen.sum()),
                        "return_mean": float(self.returns[chosen].mean()),
                    }
                )
        for i, agent in enumerate(agents):
            card.action_histogram[agent] = self.counts[i].tolist()
            card.action_coverage[agent] = float((self.counts[i] > 0).sum() / max(self.ever_legal[i].sum(), 1))
        joint_size = int(np.prod(self.ever_legal.sum(axis=1), dtype=np.float64))
        if joint_size <= JOINT_COVERAGE_LIMIT and self.codes is not None:
            card.joint_coverage = float(len(self.codes) / joint_size)
            card.joint_actions = joint_size
        card.behavior_prob_known = float(self.known / self.cells) if self.cells else 0.0
        card.behavior_prob_one = float(self.ones / self.known) if self.known else 0.0
        if self.choices.sum():
            card.behavior_prob_near_one = float(self.near_one / self.choices.sum())
        for i, agent in enumerate(agents):
            mine = int(self.choices[i])
            card.alternatives[agent] = float(self.alternatives[i] / mine) if mine else None
        # ``_warnings`` reads the legal actions and whether env_steps exist from a loaded log; a
        # stand-in carries the accumulated facts (ever-legal actions as a one-step mask array).
        shim = SimpleNamespace(
            data=SimpleNamespace(masks=self.ever_legal[None], filled=np.ones(1, bool)),
            raw=SimpleNamespace(envs=True if plan.env_files else None),
        )
        card.warnings = _warnings(card, shim)
        return card


def stream_card(path: str | os.PathLike, groups: GroupMapper = iter_groups) -> DatasetCard:
    """The dataset card of a log, validated and summed one file group at a time."""
    plan = plan_log(path)
    acc = CardAccumulator(plan)
    for log in groups(plan):
        acc.add(log)
    card = acc.card(str(path))
    if Path(path).is_dir():
        from trainer.logs.exogenous import exogenous_counts

        card.exogenous = exogenous_counts(path)
    return card


# -- the memory-mapped array cache ----------------------------------------------------------------
def _shape(name: str, plan: LogPlan) -> tuple[int, ...]:
    meta = plan.meta
    e, t, n = len(plan.episode_ids), plan.max_steps, len(meta.agent_ids)
    trailing = ARRAYS[name][1]
    if trailing is None:
        return (e, t)
    sizes = {"": (), "O": (meta.obs_dim,), "A": (meta.n_actions,), "S": (meta.state_dim,)}
    if name == "states":
        return (e, t, meta.state_dim if plan.env_files else n * meta.obs_dim)
    return (e, t, n, *sizes[trailing])


def build_array_cache(
    path: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    groups: GroupMapper = iter_groups,
    plan: LogPlan | None = None,
) -> Path:
    """Write the padded arrays of a log as ``.npy`` memory maps under ``<cache_dir>/<fingerprint>``.

    Returns the cache directory; an existing complete cache of the same fingerprint is reused.
    ``groups`` maps the plan to loaded groups (default: one after another in this process; the Ray
    integration passes one that converts groups on a cluster).
    """
    plan = plan or plan_log(path)
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = base / plan.fingerprint
    if (final / "meta.json").exists():
        return final
    with building_directory(final) as tmp:
        arrays = {
            name: np.lib.format.open_memmap(
                tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=_shape(name, plan)
            )
            for name, (dtype, _, _) in ARRAYS.items()
        }
        acc = CardAccumulator(plan)
        for log in groups(plan):
            rows = acc.add(log)
            steps = log.data.filled.shape[1]
            for name in ARRAYS:
                value = getattr(log.data, name)
                arrays[name][rows, :steps] = np.nan if value is None else value  # ts may be unlogged
            for name in ("behavior_prob", "ts"):  # the padding that is not zero
                arrays[name][rows, steps:] = np.nan
        _write_steps(arrays["filled"], tmp / "steps.npy")
        for array in arrays.values():
            array.flush()
        del arrays
        meta = plan.meta
        (tmp / "card.json").write_text(json.dumps(acc.card(str(path)).to_dict()))
        (tmp / "meta.json").write_text(
            json.dumps(
                {
                    "env_id": meta.env_id,
                    "agent_ids": list(meta.agent_ids),
                    "episode_ids": plan.episode_ids,
                    "fingerprint": plan.fingerprint,
                    "site_spec": meta.site_spec,
                    "source": str(path),
                }
            )
        )
    return final


@contextmanager
def building_directory(final: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``final`` to write a cache into, renamed to ``final`` when the block
    ends without error and removed when it fails, so a reader never sees a half-written cache. If a
    concurrent builder published ``final`` first, its copy is kept and this one dropped."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        try:  # no exists() check first: another builder may publish between the check and the rename
            os.replace(tmp, final)
        except OSError:  # final is there and not empty (ENOTEMPTY / EEXIST)
            if not final.exists():
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_steps(filled: np.ndarray, path: Path, chunk: int = 4096) -> None:
    """``steps.npy``: ``[K, 2]`` (episode, t) of every filled step in row order, a chunk of episodes at a
    time (K can be billions: never the whole index in RAM)."""
    total = sum(int(np.asarray(filled[e : e + chunk]).sum()) for e in range(0, len(filled), chunk))
    if total == 0:  # a memory map cannot be empty
        np.save(path, np.zeros((0, 2), dtype=np.int64))
        return
    steps = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(total, 2))
    row = 0
    for e in range(0, len(filled), chunk):
        part = np.argwhere(np.asarray(filled[e : e + chunk]))
        part[:, 0] += e
        steps[row : row + len(part)] = part
        row += len(part)
    steps.flush()


@dataclass
class ArrayCache:
    """A log's padded arrays as read-only memory maps, and uniform sampling of filled steps."""

    directory: Path
    data: OfflineData
    steps: np.ndarray  # [K, 2] (episode, t) of every filled step, memory-mapped

    def card(self) -> dict:
        return json.loads((self.directory / "card.json").read_text())

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``batch_size`` uniformly drawn filled steps and their successors, reading only those rows.

        Keys: obs/actions/masks/behavior_prob ``[B, N, ...]``, state/team_reward ``[B, ...]``, next_obs,
        next_state, next_masks (the step itself where none follows), done (terminal, truncated, or last).
        """
        picks = np.sort(rng.integers(0, len(self.steps), size=batch_size))
        e, t = self.steps[picks, 0], self.steps[picks, 1]
        d = self.data
        last = t + 1 >= d.filled.shape[1]
        nt = np.where(last, t, t + 1)
        has_next = ~last & np.asarray(d.filled[e, nt])
        nt = np.where(has_next, nt, t)
        done = np.asarray(d.terminated[e, t]) | np.asarray(d.truncated[e, t]) | ~has_next
        return {
            "episode": e,
            "t": t,
            "obs": np.asarray(d.obs[e, t]),
            "actions": np.asarray(d.actions[e, t]),
            "masks": np.asarray(d.masks[e, t]),
            "behavior_prob": np.asarray(d.behavior_prob[e, t]),
            "rewards": np.asarray(d.rewards[e, t]),
            "state": np.asarray(d.states[e, t]),
            "team_reward": np.asarray(d.team_rewards[e, t]),
            "next_obs": np.asarray(d.obs[e, nt]),
            "next_state": np.asarray(d.states[e, nt]),
            "next_masks": np.asarray(d.masks[e, nt]),
            "done": done,
        }


def open_array_cache(directory: str | os.PathLike) -> ArrayCache:
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    # a cache written before ts was cached has no ts.npy: discount="time" then says ts is missing
    arrays = {
        name: np.load(directory / f"{name}.npy", mmap_mode="r")
        for name in ARRAYS
        if (directory / f"{name}.npy").exists() or name != "ts"
    }
    data = OfflineData(
        env_id=meta["env_id"],
        agent_ids=list(meta["agent_ids"]),
        episode_ids=list(meta["episode_ids"]),
        fingerprint=meta["fingerprint"],
        site_spec=meta.get("site_spec"),
        **arrays,
    )
    return ArrayCache(directory, data, np.load(directory / "steps.npy", mmap_mode="r"))


def load_log_cached(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ArrayCache:
    """The memory-mapped arrays of a log, built on first use and found by fingerprint afterwards."""
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fingerprint = log_fingerprint(path)  # hashing only: cheap next to decoding
    if not (base / fingerprint / "meta.json").exists():
        build_array_cache(path, base)
    return open_array_cache(base / fingerprint)
