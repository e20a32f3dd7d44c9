"""Small in-memory datasets for the algorithm tests (no files): one-step matrix games as OfflineData."""

from __future__ import annotations

import numpy as np

from trainer.logs.dataset import OfflineData

XOR = np.array([[0.0, 1.0], [1.0, -2.0]])
MNE = np.diag([2.0, 1.0, 1.0])
XOR_BALANCED = np.array([[0.0, 0.5], [0.5, 0.0]])
XOR_UNIFORM = np.full((2, 2), 0.25)
MNE_IMBALANCED = np.diag([0.1, 0.45, 0.45])


def matrix_dataset(
    payoff: np.ndarray, joint: np.ndarray, episodes: int, seed: int, shift: float = 0.0
) -> OfflineData:
    """``episodes`` one-step episodes whose joint actions are drawn from ``joint`` (a table over A x A)."""
    rng = np.random.default_rng(seed)
    n_actions = payoff.shape[0]
    flat = rng.choice(n_actions * n_actions, size=episodes, p=joint.ravel() / joint.sum())
    actions = np.stack([flat // n_actions, flat % n_actions], axis=-1)  # [E, 2]
    reward = payoff[actions[:, 0], actions[:, 1]] + shift
    e = episodes
    marg = [joint.sum(1), joint.sum(0)]
    return OfflineData(
        env_id="",
        agent_ids=["agent_0", "agent_1"],
        obs=np.ones((e, 1, 2, 1), np.float32),
        actions=actions[:, None, :].astype(np.int64),
        masks=np.ones((e, 1, 2, n_actions), bool),
        rewards=np.repeat(reward[:, None, None], 2, axis=2).astype(np.float32),
        team_rewards=reward[:, None].astype(np.float32),
        states=np.ones((e, 1, 1), np.float32),
        terminated=np.ones((e, 1), bool),
        truncated=np.zeros((e, 1), bool),
        behavior_prob=np.stack([marg[0][actions[:, 0]], marg[1][actions[:, 1]]], -1)[:, None].astype(
            np.float32
        ),
        filled=np.ones((e, 1), bool),
        episode_ids=[f"ep{k}" for k in range(e)],
        fingerprint=f"matrix-{seed}",
    )


def joint_policy(algo, n_actions: int) -> np.ndarray:
    """The learned product policy of a 2-agent one-step game as an A x A table."""
    p = algo.action_probs(np.ones((2, 1), np.float32), np.ones((2, n_actions), bool))
    return np.outer(p[0], p[1])


def frozen_residual(**overrides):
    """InSPO's residual estimator with the actor frozen at mu (so its heads estimate A^mu), sized for the
    small matrix-game datasets above; ``overrides`` on top (e.g. ``adv_heads="linear"``)."""
    from trainer.algos import make_algorithm

    return make_algorithm(
        "inspo",
        overrides={
            "estimator": "residual",
            "exact_propensity": True,
            "actor_init": "mu",
            "actor_lr": 0.0,
            "iterations": 50,
            "adv_warmup": 600,
            "value_steps": 300,
            "mu_steps": 300,
            "hidden": [32, 32],
            "critic_hidden": [32, 32],
            "reward_scale": 1.0,
            "kappa": 0.0,
            **overrides,
        },
    )
