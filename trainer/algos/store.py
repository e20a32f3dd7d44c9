"""Training rows on disk: a log's flat transitions, episode-indexed, and shards of them that fit a budget.

:func:`build_row_store` reads the memory-mapped array cache (``trainer.logs.stream``) a chunk of
episodes at a time and writes, beside it, one ``.npy`` per field of :class:`Transitions` with a row per
filled step (episodes in order), plus ``episodes.npy`` (each episode's first row) and ``meta.json``.
Everything that needs whole episodes is computed in that one pass: discounted returns-to-go, step
discounts, ``done``, the next step's row. Normalisation statistics are merged per chunk (float64), and
the automatic reward scale takes exact quantiles of the stored returns by counting passes. Nothing the
size of the log is held in RAM.

:class:`RowStore` hands out *shards*: runs of whole episodes whose rows fit a memory budget, as
:class:`Transitions` (so an algorithm samples a shard exactly as it samples an in-memory log). A log that
fits the budget is one shard: training then draws the same rows as the in-memory path. docs/scale-out.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trainer.algos.data import Transitions, discounted_returns_to_go, step_discounts
from trainer.logs.dataset import OfflineData
from trainer.logs.stream import building_directory

VERSION = 2  # 2: per-agent rewards (reward_credit)
FIELDS = {  # name -> dtype of the stored column (row-major: K rows, then the per-row shape)
    "obs": np.float32,
    "actions": np.int64,
    "masks": np.bool_,
    "states": np.float32,
    "team_rewards": np.float32,
    "agent_rewards": np.float32,  # the log's per-agent reward column (reward_credit)
    "returns": np.float64,  # discounted return-to-go, not yet divided by the reward scale
    "done": np.bool_,
    "next_index": np.int64,
    "discounts": np.float32,
    "episode": np.int64,
    "behavior_prob": np.float32,
}
CHUNK_BYTES = 8 << 20  # padded cache bytes read per chunk of episodes while building (RAM: a few times it)


def store_dir(cache_dir: Path, gamma: float, discount: str, horizon_s: float) -> Path:
    """The rows depend on the discounting (returns-to-go), so each discounting has its own store."""
    return cache_dir / f"rows-v{VERSION}-{discount}-g{gamma!r}-h{horizon_s!r}"


def _episode_slice(data: OfflineData, e0: int, e1: int) -> OfflineData:
    """Episodes ``e0:e1`` of a (memory-mapped) OfflineData, read into RAM."""

    def take(a):
        return None if a is None else np.asarray(a[e0:e1])

    return OfflineData(
        env_id=data.env_id,
        agent_ids=data.agent_ids,
        **{
            name: take(getattr(data, name))
            for name in (
                "obs", "actions", "masks", "rewards", "team_rewards", "states", "terminated",
                "truncated", "behavior_prob", "filled", "ts",
            )
        },
    )  # fmt: skip


class _Moments:
    """Per-feature count, mean, M2 (Chan et al.'s merge), min and max over chunks of rows, in float64."""

    def __init__(self, dim: int):
        self.n, self.mean, self.m2 = 0, np.zeros(dim), np.zeros(dim)
        self.low, self.high = np.full(dim, np.inf), np.full(dim, -np.inf)

    def add(self, rows: np.ndarray, block: int = 256) -> None:
        for start in range(0, len(rows), block):  # float64 copies of one block at a time
            self._merge(rows[start : start + block].astype(np.float64))

    def _merge(self, x: np.ndarray) -> None:
        n, mean = len(x), x.mean(0)
        m2 = ((x - mean) ** 2).sum(0)
        delta, total = mean - self.mean, self.n + n
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / total
        self.n = total
        self.low, self.high = np.minimum(self.low, x.min(0)), np.maximum(self.high, x.max(0))

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


def _sortable(x: np.ndarray) -> np.ndarray:
    """float64 -> uint64 with the same order (for exact selection by counting)."""
    bits = x.view(np.uint64)
    return np.where(bits >> 63 == 1, ~bits, bits | np.uint64(1 << 63))


def _kth(values: np.ndarray, k: int, chunk: int) -> float:
    """The k-th smallest (0-based) of a memory-mapped float64 column, by bisection on its bit order:
    64 counting passes over chunks, never the column in RAM."""
    lo, hi = 0, (1 << 64) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        below = sum(
            int((_sortable(values[s : s + chunk]) <= np.uint64(mid)).sum())
            for s in range(0, len(values), chunk)
        )
        lo, hi = (lo, mid) if below > k else (mid + 1, hi)
    key = np.uint64(lo)
    bits = key & ~np.uint64(1 << 63) if key >> np.uint64(63) == 1 else ~key
    return float(np.array([bits], dtype=np.uint64).view(np.float64)[0])


def exact_quantile(values: np.ndarray, q: float, budget_rows: int) -> float:
    """``np.quantile(values, q)`` (linear interpolation), in RAM when ``values`` fits ``budget_rows``."""
    if len(values) <= budget_rows:
        return float(np.quantile(np.asarray(values), q))
    position = q * (len(values) - 1)
    below = int(np.floor(position))
    pair = [_kth(values, below, budget_rows), _kth(values, min(below + 1, len(values) - 1), budget_rows)]
    return float(np.quantile(np.array(pair), position - below))  # numpy's own interpolation of the two


def stored_reward_scale(returns: np.ndarray, budget_rows: int) -> float:
    """``trainer.algos.data.auto_reward_scale`` of the stored returns, exactly, without loading them."""
    if len(returns) == 0:
        return 1.0
    spread = exact_quantile(returns, 0.95, budget_rows) - exact_quantile(returns, 0.05, budget_rows)
    if spread < 1e-6:
        low = min(float(np.min(returns[s : s + budget_rows])) for s in range(0, len(returns), budget_rows))
        high = max(float(np.max(returns[s : s + budget_rows])) for s in range(0, len(returns), budget_rows))
        spread = high - low
    return spread if spread > 1e-6 else 1.0


def build_row_store(
    data: OfflineData, directory: Path, gamma: float, discount: str = "step", horizon_s: float = 0.0
) -> Path:
    """Write the flat rows of ``data`` (memory-mapped padded arrays) under ``directory``; reused if there."""
    if (directory / "meta.json").exists():
        return directory
    e_total, t_max, n = data.filled.shape[0], data.filled.shape[1], data.n_agents
    padded_step = sum(a[0, 0].nbytes for a in (data.obs, data.masks, data.states, data.behavior_prob)) + 64
    per_chunk = max(1, CHUNK_BYTES // max(1, t_max * padded_step))
    lengths = np.concatenate(
        [np.asarray(data.filled[e : e + per_chunk]).sum(1) for e in range(0, e_total, per_chunk)]
    ).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    k = int(offsets[-1])
    if k == 0:
        raise ValueError("the dataset has no filled steps")
    shapes = {
        "obs": (k, n, data.obs_dim),
        "actions": (k, n),
        "masks": (k, n, data.n_actions),
        "states": (k, data.state_dim),
        "behavior_prob": (k, n),
        "agent_rewards": (k, n),
    }
    with building_directory(directory) as tmp:
        out = {
            name: np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dtype, shapes.get(name, (k,)))
            for name, dtype in FIELDS.items()
        }
        obs_m, state_m = _Moments(data.obs_dim), _Moments(data.state_dim)
        for e0 in range(0, e_total, per_chunk):
            e1 = min(e_total, e0 + per_chunk)
            chunk = _episode_slice(data, e0, e1)
            rows = _chunk_rows(chunk, gamma, discount, horizon_s, e0, int(offsets[e0]))
            r0, r1 = int(offsets[e0]), int(offsets[e1])
            for name, value in rows.items():
                out[name][r0:r1] = value
            obs_m.add(rows["obs"].reshape(-1, data.obs_dim))
            state_m.add(rows["states"])
        for array in out.values():
            array.flush()
        budget_rows = max(1, CHUNK_BYTES // 8)
        scale = stored_reward_scale(out["returns"], budget_rows)
        del out
        np.save(tmp / "episodes.npy", offsets)
        meta = {
            "version": VERSION,
            "rows": k,
            "episodes": e_total,
            "n_agents": n,
            "obs_dim": data.obs_dim,
            "n_actions": data.n_actions,
            "state_dim": data.state_dim,
            "gamma": gamma,
            "discount": discount,
            "horizon_s": horizon_s,
            "auto_reward_scale": scale,
            "obs_mean": obs_m.mean.tolist(),
            "obs_std": obs_m.std().tolist(),
            "obs_low": obs_m.low.tolist(),
            "obs_high": obs_m.high.tolist(),
            "state_mean": state_m.mean.tolist(),
            "state_std": state_m.std().tolist(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
    return directory


def _chunk_rows(
    chunk: OfflineData, gamma: float, discount: str, horizon_s: float, first_episode: int, first_row: int
) -> dict[str, np.ndarray]:
    """The rows of whole episodes, as ``build_transitions`` makes them (indices made global)."""
    filled = chunk.filled.astype(bool)
    e_idx, t_idx = np.nonzero(filled)
    rows = np.arange(len(e_idx))
    has_next = np.zeros(len(e_idx), dtype=bool)
    nxt = t_idx + 1 < filled.shape[1]
    has_next[nxt] = filled[e_idx[nxt], t_idx[nxt] + 1]
    factors = step_discounts(chunk, gamma, discount, horizon_s)
    returns = discounted_returns_to_go(chunk.team_rewards.astype(np.float64), filled, factors)
    actions = chunk.actions[e_idx, t_idx].astype(np.int64)
    masks = chunk.masks[e_idx, t_idx].astype(bool)
    legal = np.take_along_axis(masks, actions[..., None], axis=-1)[..., 0]
    if not legal.all():
        bad = np.argwhere(~legal)[0]
        raise ValueError(f"logged action outside its mask at step row {first_row + bad[0]}, agent {bad[1]}")
    return {
        "obs": chunk.obs[e_idx, t_idx].astype(np.float32),
        "actions": actions,
        "masks": masks,
        "states": chunk.states[e_idx, t_idx].astype(np.float32),
        "team_rewards": chunk.team_rewards[e_idx, t_idx],
        "agent_rewards": chunk.rewards[e_idx, t_idx].astype(np.float32),
        "returns": returns[e_idx, t_idx],
        "done": chunk.terminated[e_idx, t_idx].astype(bool) | ~has_next,
        "next_index": first_row + np.where(has_next, rows + 1, rows),
        "discounts": factors[e_idx, t_idx].astype(np.float32),
        "episode": first_episode + e_idx.astype(np.int64),
        "behavior_prob": chunk.behavior_prob[e_idx, t_idx].astype(np.float32),
    }


@dataclass
class RowStore:
    """A built store: its meta, episode offsets, and shards of whole episodes that fit a budget."""

    directory: Path
    meta: dict
    offsets: np.ndarray  # [E + 1] first row of each episode
    exogenous_file: Path | None = None  # [K, X] hindsight features of the log's exogenous events, if asked

    @classmethod
    def open(cls, directory: str | os.PathLike) -> RowStore:
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        return cls(directory, meta, np.load(directory / "episodes.npy"))

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    def row_bytes(self) -> int:
        """RAM one row takes in a shard: its tensors, the copy made while reading them, and what InSPO
        derives per row (log mu and propensities of every action, residual)."""
        m = self.meta
        n, o, a, s = m["n_agents"], m["obs_dim"], m["n_actions"], m["state_dim"]
        tensors = 4 * n * o + 8 * n + n * a + 4 * s + 4 * 4 + 8 * 2 + 4 * n
        return tensors + 4 * n * o + 8 * n * a + 4

    def shards(self, budget_bytes: int, min_episodes: int = 1) -> list[tuple[int, int]]:
        """Episode ranges ``(e0, e1)`` whose rows fit ``budget_bytes`` each, at least ``min_episodes`` long
        (cross-fitting needs an episode per fold); a budget that cannot hold that is a ValueError."""
        limit = max(1, budget_bytes // self.row_bytes())
        lengths = np.diff(self.offsets)
        window = min(min_episodes, len(lengths))
        widest = max(
            int(self.offsets[e + window] - self.offsets[e]) for e in range(len(lengths) - window + 1)
        )
        if widest > limit:
            need = widest * self.row_bytes() / 2**20
            raise ValueError(
                f"memory budget {budget_bytes / 2**20:.3g} MB is below one shard of {window} whole episode(s) "
                f"({need:.1f} MB); raise --memory-budget"
            )
        out, e0 = [], 0
        while e0 < len(lengths):
            e1 = int(np.searchsorted(self.offsets, self.offsets[e0] + limit, side="right")) - 1
            e1 = min(len(lengths), max(e1, e0 + window))
            out.append((e0, e1))
            e0 = e1
        if out[-1][1] - out[-1][0] < window:  # a short tail: the last `window` episodes (any that many fit)
            out[-1] = (len(lengths) - window, len(lengths))
        return out

    def shard(self, e0: int, e1: int, reward_scale: float | None = None) -> Transitions:
        """Episodes ``e0:e1`` as :class:`Transitions` (rows read through memory maps, then copied)."""
        r0, r1 = int(self.offsets[e0]), int(self.offsets[e1])

        def col(name: str) -> np.ndarray:
            return np.array(np.load(self.directory / f"{name}.npy", mmap_mode="r")[r0:r1])

        m = self.meta
        scale = float(reward_scale) if reward_scale else float(m["auto_reward_scale"])
        return Transitions(
            obs=torch.from_numpy(col("obs")),
            actions=torch.from_numpy(col("actions")),
            masks=torch.from_numpy(col("masks")),
            states=torch.from_numpy(col("states")),
            rewards=torch.from_numpy((col("team_rewards") / scale).astype(np.float32)),
            agent_rewards=torch.from_numpy((col("agent_rewards") / scale).astype(np.float32)),
            returns=torch.from_numpy((col("returns") / scale).astype(np.float32)),
            done=torch.from_numpy(col("done").astype(np.float32)),
            next_index=torch.from_numpy(col("next_index") - r0),
            discounts=torch.from_numpy(col("discounts")),
            episode=torch.from_numpy(col("episode") - e0),  # within the shard (folds, episode counts)
            behavior_prob=torch.from_numpy(col("behavior_prob")),
            reward_scale=scale,
            obs_mean=torch.tensor(m["obs_mean"], dtype=torch.float32),
            obs_std=torch.tensor(m["obs_std"], dtype=torch.float32).clamp(min=1e-3),
            obs_low=np.array(m["obs_low"], dtype=np.float32),
            obs_high=np.array(m["obs_high"], dtype=np.float32),
            state_mean=torch.tensor(m["state_mean"], dtype=torch.float32),
            state_std=torch.tensor(m["state_std"], dtype=torch.float32).clamp(min=1e-3),
            exogenous=None
            if self.exogenous_file is None
            else torch.from_numpy(np.array(np.load(self.exogenous_file, mmap_mode="r")[r0:r1])),
        )


def attach_exogenous(store: RowStore, log: str | os.PathLike, data: OfflineData) -> None:
    """Give ``store``'s rows the hindsight features of the log's exogenous events (computed once, kept
    beside the rows under a name that hashes the exogenous part files, so new events recompute them)."""
    import hashlib
    from dataclasses import replace

    from trainer.algos.exogenous import missing_events, row_features
    from trainer.logs.exogenous import read_exogenous
    from trainer.logs.reader import file_digest, part_files

    files = part_files(Path(log), "exogenous")
    if not files:
        raise missing_events(str(log))
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(log)).encode() + file_digest(path))
    horizon_s = float(store.meta["horizon_s"])
    target = store.directory / f"exogenous-{h.hexdigest()[:16]}-h{horizon_s!r}.npy"
    if not target.exists():
        events = read_exogenous(log, data.episode_ids)
        features = row_features(replace(data, exogenous=events), horizon_s, str(log))
        tmp = target.with_name(f".{target.name}.tmp")
        with tmp.open("wb") as f:
            np.save(f, features)
        os.replace(tmp, target)
    store.exogenous_file = target


@dataclass
class StoredLog:
    """What ``Algorithm.setup`` trains from when a log streams: the store, the budget, the log's identity."""

    store: RowStore
    budget_bytes: int
    env_id: str
    agent_ids: list[str]
    fingerprint: str
    site_spec: dict | None


class ShardCycle:
    """The shard in RAM and when to move on: after as many rows were drawn as it holds, the next shard
    (in order, cycling), so every row is equally likely over a pass of the log. One shard never moves."""

    def __init__(self, stored: StoredLog, reward_scale: float | None, min_episodes: int = 1):
        self.store, self.reward_scale = stored.store, reward_scale
        self.ranges = stored.store.shards(stored.budget_bytes, min_episodes)
        self.index, self.drawn = 0, 0

    def load(self, index: int, drawn: int = 0) -> Transitions:
        self.index, self.drawn = index % len(self.ranges), drawn
        return self.store.shard(*self.ranges[self.index], reward_scale=self.reward_scale)

    def due(self, shard_rows: int) -> bool:
        return len(self.ranges) > 1 and self.drawn >= shard_rows

    def state(self) -> dict[str, int]:
        return {"index": self.index, "drawn": self.drawn}


def open_stored_log(
    path: str | os.PathLike,
    gamma: float,
    discount: str,
    horizon_s: float,
    budget_mb: float,
    exogenous: bool = False,
) -> StoredLog:
    """The log's array cache (built on first use), its row store for this discounting, and the budget;
    ``exogenous``: the rows also carry the hindsight features of the log's exogenous events."""
    from trainer.logs.stream import load_log_cached

    if budget_mb <= 0:
        raise ValueError(f"memory budget must be > 0 MB, got {budget_mb}")
    cache = load_log_cached(path)
    data = cache.data
    directory = build_row_store(
        data, store_dir(cache.directory, gamma, discount, horizon_s), gamma, discount, horizon_s
    )
    store = RowStore.open(directory)
    if exogenous:
        attach_exogenous(store, path, data)
    return StoredLog(
        store, int(budget_mb * 2**20), data.env_id, list(data.agent_ids),
        data.fingerprint, data.site_spec,
    )  # fmt: skip
