"""Log I/O throughput: our writer and reader next to raw pyarrow on the same table, as ratios.

    .venv/bin/python bench/log_io.py [--episodes 2000 --steps 50 --agents 8 --obs-dim 16 --actions 8]

Measured in one run on one machine (best of ``--repeat``), agent-steps per second:
  * write, raw:        ``pq.write_table`` of the finished agent_steps + env_steps tables (zstd)
  * write, ours bulk:  ``LogWriter.add_tables`` of the same tables (cast, temp file, atomic rename)
  * write, ours steps: ``LogWriter.add_step`` once per decision step (the rollout / runtime path)
  * read, raw:         ``pq.read_table`` of both tables
  * read, ours:        ``trainer.logs.load_log``: read + full validation + padded (E, T, N, ...) arrays
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract.logformat import (  # noqa: E402
    LogMeta,
    LogWriter,
    agent_steps_schema,
    env_steps_schema,
    list_column,
    sim_timestamp,
)
from trainer.logs import load_log  # noqa: E402


def make_tables(meta: LogMeta, episodes: int, steps: int, seed: int = 0) -> tuple[pa.Table, pa.Table, dict]:
    """Random agent_steps/env_steps tables (all episodes ``steps`` long) and their step arrays."""
    rng = np.random.default_rng(seed)
    n = len(meta.agent_ids)
    rows = episodes * steps * n
    obs = rng.normal(size=(rows, meta.obs_dim)).astype(np.float32)
    masks = rng.random((rows, meta.n_actions)) < 0.7
    masks[:, 0] = True
    actions = np.argmax(masks * rng.random(masks.shape), axis=1).astype(np.int32)
    episode = np.repeat(np.arange(episodes), steps * n)
    t = np.tile(np.repeat(np.arange(steps, dtype=np.int32), n), episodes)
    ids = np.array([f"ep-{e:06d}" for e in range(episodes)], dtype=object)
    ts0 = np.datetime64(sim_timestamp(0), "us")
    agents = pa.Table.from_arrays(
        [
            pa.array(ids[episode]),
            pa.array(t),
            pa.array(np.tile(np.array(meta.agent_ids, dtype=object), episodes * steps)),
            list_column(obs, pa.float32()),
            pa.array(actions),
            list_column(masks, pa.bool_()),
            pa.array(rng.normal(size=rows).astype(np.float32)),
            pa.array(t == steps - 1),
            pa.array(np.zeros(rows, dtype=bool)),
            pa.array(rng.uniform(0.1, 1.0, size=rows).astype(np.float32)),
            pa.array(np.full(rows, "rule", dtype=object)),
            pa.nulls(rows, pa.string()),
            pa.array(ts0 + t.astype("timedelta64[s]")),
        ],
        schema=agent_steps_schema(meta),
    )
    env_ep = np.repeat(np.arange(episodes), steps)
    env_t = np.tile(np.arange(steps, dtype=np.int32), episodes)
    states = rng.normal(size=(episodes * steps, meta.state_dim)).astype(np.float32)
    team = rng.normal(size=episodes * steps).astype(np.float32)
    envs = pa.Table.from_arrays(
        [pa.array(ids[env_ep]), pa.array(env_t), list_column(states, pa.float32()), pa.array(team)],
        schema=env_steps_schema(meta),
    )
    arrays = {"obs": obs, "masks": masks, "actions": actions, "states": states, "team": team, "ids": ids}
    return agents, envs, arrays


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--obs-dim", type=int, default=16)
    parser.add_argument("--actions", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--step-episodes", type=int, default=200, help="episodes for the per-step writer")
    args = parser.parse_args()

    meta = LogMeta("bench", args.obs_dim, args.actions, [f"a{i}" for i in range(args.agents)], args.obs_dim)
    agents, envs, arrays = make_tables(meta, args.episodes, args.steps)
    rows = agents.num_rows
    tmp = Path(tempfile.mkdtemp(prefix="inspo-bench-"))
    raw_dir, ours_dir = tmp / "raw", tmp / "ours"

    def raw_write():
        shutil.rmtree(raw_dir, ignore_errors=True)
        raw_dir.mkdir()
        pq.write_table(agents, raw_dir / "agent_steps.parquet", compression="zstd")
        pq.write_table(envs, raw_dir / "env_steps.parquet", compression="zstd")

    def ours_write():
        shutil.rmtree(ours_dir, ignore_errors=True)
        with LogWriter(ours_dir, meta) as writer:
            writer.add_tables(agents, envs)

    step_dir = tmp / "steps"
    n, steps, step_eps = args.agents, args.steps, min(args.step_episodes, args.episodes)

    def ours_steps():
        shutil.rmtree(step_dir, ignore_errors=True)
        obs = arrays["obs"].reshape(args.episodes, steps, n, -1)
        masks = arrays["masks"].reshape(args.episodes, steps, n, -1)
        actions = arrays["actions"].reshape(args.episodes, steps, n)
        states = arrays["states"].reshape(args.episodes, steps, -1)
        team = arrays["team"].reshape(args.episodes, steps)
        zeros, probs = np.zeros(n, dtype=bool), np.full(n, 0.5, dtype=np.float32)
        rewards = np.zeros(n, dtype=np.float32)
        with LogWriter(step_dir, meta) as writer:
            for e in range(step_eps):
                for t in range(steps):
                    writer.add_step(
                        str(arrays["ids"][e]), t, obs[e, t], actions[e, t], masks[e, t], rewards,
                        zeros, zeros, probs, "rule", None, sim_timestamp(t), states[e, t], float(team[e, t]),
                    )  # fmt: skip
                writer.end_episode()

    def raw_read():
        pq.read_table(raw_dir / "agent_steps.parquet")
        pq.read_table(raw_dir / "env_steps.parquet")

    def ours_read():
        data = load_log(ours_dir)
        assert data.n_steps * n == rows

    results = {
        "write raw pyarrow": rows / best_of(args.repeat, raw_write),
        "write ours (add_tables)": rows / best_of(args.repeat, ours_write),
        "write ours (add_step)": step_eps * steps * n / best_of(args.repeat, ours_steps),
        "read raw pyarrow": rows / best_of(args.repeat, raw_read),
        "read ours (load_log)": rows / best_of(args.repeat, ours_read),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"log_io: {args.episodes} episodes x {steps} steps x {n} agents = {rows:,} agent-steps, "
        f"obs_dim {args.obs_dim}, {args.actions} actions, best of {args.repeat}"
    )
    print(f"{'case':28s} {'agent-steps/s':>14s} {'vs raw':>8s}")
    for name, rate in results.items():
        raw = results["write raw pyarrow" if name.startswith("write") else "read raw pyarrow"]
        print(f"{name:28s} {rate:14,.0f} {rate / raw:7.2f}x")


if __name__ == "__main__":
    main()
