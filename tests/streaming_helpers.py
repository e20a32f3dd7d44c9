"""A synthetic log of a chosen size for streaming tests: wide observations, few distinct values (so the
Parquet stays small while the padded array form is large), random legal actions and known behaviour
probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.logformat import LogMeta, LogWriter, sim_timestamp


def write_wide_log(
    root: Path, episodes: int, steps: int, obs_dim: int, n_agents: int = 2, n_actions: int = 3, seed: int = 0
) -> None:
    rng = np.random.default_rng(seed)
    meta = LogMeta("wide-synthetic", obs_dim, n_actions, [f"a{i}" for i in range(n_agents)], 4)
    patterns = rng.integers(0, 4, size=(16, n_agents, obs_dim)).astype(np.float32)  # 16 distinct obs
    masks = np.ones((n_agents, n_actions), dtype=bool)
    with LogWriter(root, meta, rows_per_file=2_000) as writer:
        for e in range(episodes):
            actions = rng.integers(0, n_actions, size=(steps, n_agents))
            rewards = rng.normal(size=steps).astype(np.float32)
            for t in range(steps):
                writer.add_step(
                    episode_id=f"ep-{e:04d}",
                    t=t,
                    obs=patterns[(e + t) % 16],
                    actions=actions[t],
                    masks=masks,
                    rewards=np.full(n_agents, rewards[t], dtype=np.float32),
                    terminated=np.full(n_agents, t == steps - 1),
                    truncated=np.zeros(n_agents, dtype=bool),
                    behavior_probs=np.full(n_agents, 1.0 / n_actions, dtype=np.float32),
                    controller="uniform",
                    model_version=None,
                    ts=sim_timestamp(float(t)),
                    state=np.array([t % 7, e % 5, actions[t, 0], 1.0], dtype=np.float32),
                    team_reward=float(rewards[t]),
                )
            writer.end_episode()
