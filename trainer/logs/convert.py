"""Validated log columns -> padded ``(E, T, N, ...)`` training arrays (:class:`OfflineData`).

Episodes are ordered by ``episode_id`` (string order), agents by the metadata's ``agent_ids``,
so the arrays do not depend on how rows were split into files. Conversion is a scatter by a
flat index; no per-row Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.logs.dataset import OfflineData
from trainer.logs.exogenous import read_exogenous
from trainer.logs.reader import RawLog, read_log
from trainer.logs.validate import Columns, validate


def _scatter(shape: tuple[int, ...], flat: np.ndarray, values: np.ndarray, fill, dtype) -> np.ndarray:
    flat_shape = (int(np.prod(shape[: len(shape) - values.ndim + 1])), *values.shape[1:])
    out = np.zeros(flat_shape, dtype=dtype) if not fill else np.full(flat_shape, fill, dtype=dtype)
    out[flat] = values
    return out.reshape(shape)


def to_offline_data(raw: RawLog, cols: Columns) -> OfflineData:
    meta = raw.meta
    n_ep, n_agents, steps = len(cols.episode_ids), len(meta.agent_ids), int(cols.lengths.max())
    flat = (cols.episode * steps + cols.t) * n_agents + cols.agent
    grid = (n_ep, steps, n_agents)
    terminated = _scatter(grid, flat, cols.terminated, False, bool)
    truncated = _scatter(grid, flat, cols.truncated, False, bool)
    filled = np.arange(steps)[None, :] < cols.lengths[:, None]
    rewards = _scatter(grid, flat, cols.rewards, 0.0, np.float32)
    obs = _scatter((*grid, meta.obs_dim), flat, cols.obs, 0.0, np.float32)
    if cols.states is not None:
        env_flat = cols.env_episode * steps + cols.env_t
        states = _scatter((n_ep, steps, meta.state_dim), env_flat, cols.states, 0.0, np.float32)
        team = _scatter((n_ep, steps), env_flat, cols.team_rewards, 0.0, np.float32)
    else:  # no env_steps: the state is every agent's observation, the team reward their mean
        states = obs.reshape(n_ep, steps, n_agents * meta.obs_dim).copy()
        team = rewards.mean(axis=2, dtype=np.float32)
    all_terminated = terminated.all(axis=2) & filled
    ts = None
    if cols.ts is not None:  # every agent row of a step carries the step's time (an agent may be missing)
        ts = np.fmax.reduce(_scatter(grid, flat, cols.ts, np.nan, np.float64), axis=2)
    return OfflineData(
        env_id=meta.env_id,
        agent_ids=list(meta.agent_ids),
        obs=obs,
        actions=_scatter(grid, flat, cols.actions, 0, np.int64),
        masks=_scatter((*grid, meta.n_actions), flat, cols.masks, False, bool),
        rewards=rewards,
        team_rewards=team,
        states=states,
        terminated=all_terminated,
        truncated=truncated.any(axis=2) & filled & ~all_terminated,
        behavior_prob=_scatter(grid, flat, cols.behavior_prob, np.nan, np.float32),
        filled=filled,
        episode_ids=list(cols.episode_ids),
        fingerprint=raw.fingerprint,
        ts=ts,
        site_spec=meta.site_spec,
    )


@dataclass
class LoadedLog:
    """A validated log: the training arrays plus what the dataset card needs beyond them."""

    data: OfflineData
    raw: RawLog
    columns: Columns


def open_log(path: str | os.PathLike) -> LoadedLog:
    """Read, validate and convert a log; raises LogValidationError naming file, column and row."""
    raw = read_log(path)
    columns = validate(raw)
    data = to_offline_data(raw, columns)
    if Path(path).is_dir():
        data.exogenous = read_exogenous(path, data.episode_ids)
    return LoadedLog(data, raw, columns)


def load_log(path: str | os.PathLike) -> OfflineData:
    """The padded training arrays of a log (validated)."""
    return open_log(path).data
