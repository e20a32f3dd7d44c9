"""Time per InSPO iteration vs one BC step on the same batch, for N = 2, 4, 16 agents.

    .venv/bin/python bench/train_speed.py [--agents 2,4,16] [--batch 256] [--repeats 30]

InSPO iteration = 1 critic step (with its resampling pool) + a random permutation + per agent
1 local-Q step + 1 actor step + ratio refresh (``critic_steps = local_q_steps = actor_steps = 1``,
the per-minibatch sequential granularity). BC step = one cross-entropy step on all N agents' rows
of the same batch of transitions. Synthetic data (obs 32, 5 actions, state 16 + 8 N), CPU, one
torch thread. Prints the medians and the ratio against the goal ``(N + 3) x``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.algos import make_algorithm  # noqa: E402
from trainer.logs.dataset import OfflineData  # noqa: E402


def synthetic(
    n_agents: int, episodes: int = 40, length: int = 50, obs_dim: int = 32, n_actions: int = 5
) -> OfflineData:
    rng = np.random.default_rng(0)
    e, t, n = episodes, length, n_agents
    masks = rng.random((e, t, n, n_actions)) < 0.8
    masks[..., 0] = True
    logits = rng.normal(size=(e, t, n, n_actions)) + np.where(masks, 0, -1e9)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    actions = (probs.cumsum(-1) > rng.random((e, t, n, 1))).argmax(-1)
    terminated = np.zeros((e, t), bool)
    terminated[:, -1] = True
    return OfflineData(
        env_id="",
        agent_ids=[f"a{i}" for i in range(n)],
        obs=rng.normal(size=(e, t, n, obs_dim)).astype(np.float32),
        actions=actions.astype(np.int64),
        masks=masks,
        rewards=rng.normal(size=(e, t, n)).astype(np.float32),
        team_rewards=-rng.random((e, t)).astype(np.float32),
        states=rng.normal(size=(e, t, 16 + 8 * n)).astype(np.float32),
        terminated=terminated,
        truncated=np.zeros((e, t), bool),
        behavior_prob=np.full((e, t, n), np.nan, np.float32),
        filled=np.ones((e, t), bool),
    )


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", default="2,4,16")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--shared", choices=["false", "true"], default="false")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| N | BC step (ms) | InSPO iteration (ms) | ratio | goal (N+3) | shared |")
    print("|---|---|---|---|---|---|")
    for n in [int(x) for x in args.agents.split(",")]:
        data = synthetic(n)
        common = {"batch_size": args.batch, "hidden": [256, 256], "shared": args.shared}
        bc = make_algorithm("bc", overrides=common)
        bc.setup(data)
        rows = bc.sample_rows(args.batch)
        t_bc = median_time(lambda bc=bc, rows=rows: bc.bc_step(rows), args.repeats)
        inspo = make_algorithm("inspo", overrides={**common, "mu_steps": 1, "critic_warmup": 0})
        inspo.setup(data)
        inspo.train_iteration()  # fits mu (1 step) and precomputes log mu
        t_it = median_time(inspo.train_iteration, args.repeats)
        print(
            f"| {n} | {1e3 * t_bc:.2f} | {1e3 * t_it:.2f} | {t_it / t_bc:.1f}x | {n + 3}x | {args.shared} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
