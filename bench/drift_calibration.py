"""Where the drift alert's threshold comes from (docs/operations.md, "Observation drift").

``python bench/drift_calibration.py [--hours 0.25] [--serve-hours H]``: builds the drift reference of a down-peak elevator
model from an 8-episode training mix (the demo's `small` controllers), then slides a window of one
training episode's rows (the runtime's default) over six unseen-seed episodes of each scenario, a
quarter window at a time, and prints the range of each feature group's PSI (runtime/drift.py). Normal
down-peak runs (other controllers) must stay below the alert's 0.5; other demand profiles must exceed it.
``--serve-hours`` serves episodes of another length than the training ones (the profile compressed or
stretched). About 10 s on one core at 0.25 h, a minute at 1 h.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from contract.obs_reference import build_reference
from envs.controllers import build_controller
from envs.registry import make_env
from runtime.drift import DriftReference
from trainer.rollout import action_rng

MODEL_ENV = "elevator:cb10x4:downpeak"
TRAINING = [(0, "etd@eps=0.2"), (1, "etd@eps=0.2"), (2, "etd@eps=0.2"), (3, "etd@eps=0.2")]
TRAINING += [(4, "sector@eps=0.2"), (5, "sector@eps=0.2"), (6, "random"), (7, "random")]
SCENARIOS = [
    ("normal: etd", MODEL_ENV, "etd"),
    ("normal: sector@eps=0.1", MODEL_ENV, "sector@eps=0.1"),
    ("normal: nearest-car", MODEL_ENV, "nearest-car"),
    ("down-peak x0.7", "elevator:cb10x4:downpeak:0.7", "etd"),
    ("down-peak x1.3", "elevator:cb10x4:downpeak:1.3", "etd"),
    ("lunch", "elevator:cb10x4:lunch", "etd"),
    ("up-peak", "elevator:cb10x4:uppeak", "etd"),
    ("interfloor", "elevator:cb10x4:interfloor", "etd"),
]


def episode_obs(env_id: str, seed: int, controller: str, hours: float) -> np.ndarray:
    """``[steps * cars, obs_dim]``: every car's observation at every step (what a site sends)."""
    env = make_env(env_id, hours=hours)
    ctrl = build_controller(env_id, controller)
    obs, infos = env.reset(seed=seed)
    ctrl.reset(env, seed)
    rng, rows = action_rng(seed), []
    while True:
        rows.append(np.stack([obs[a] for a in env.possible_agents]))
        actions, _ = ctrl.act(env, obs, infos, rng)
        obs, rewards, terms, truncs, infos = env.step(actions)
        ctrl.observe(env, rewards, terms, truncs)
        if not env.agents or all(terms.get(a) or truncs.get(a) for a in env.possible_agents):
            return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=0.25, help="profile length per episode")
    parser.add_argument(
        "--serve-hours", type=float, help="profile length of the served episodes (default: --hours)"
    )
    args = parser.parse_args()
    serve_hours = args.serve_hours or args.hours
    started = time.time()
    train = [episode_obs(MODEL_ENV, seed, ctrl, args.hours) for seed, ctrl in TRAINING]
    flat = np.concatenate(train)
    groups, clock = make_env(MODEL_ENV, hours=args.hours).obs_groups()
    meta = {"obs_reference": build_reference(flat, groups, clock, episode_rows=len(flat) // len(train))}
    ref = DriftReference.from_meta(meta, flat.shape[1])
    window = ref.window_rows()
    print(f"reference: {len(flat)} rows of {len(train)} episodes of {args.hours} h; window {window} rows")
    print(f"served: episodes of {serve_hours} h")
    for name, env_id, ctrl in SCENARIOS:
        episodes = [episode_obs(env_id, 100, ctrl, serve_hours)]
        while sum(map(len, episodes)) < 2 * window and len(episodes) < 48:  # at least two windows
            episodes.append(episode_obs(env_id, 100 + len(episodes), ctrl, serve_hours))
        rows = np.concatenate(
            episodes + [episode_obs(env_id, 100 + len(episodes) + i, ctrl, serve_hours) for i in range(2)]
        )
        psi = [ref.group_psi(rows[end - window : end]) for end in range(window, len(rows) + 1, window // 4)]
        ranges = "  ".join(f"{g} {min(p[g] for p in psi):.2f}-{max(p[g] for p in psi):.2f}" for g in psi[0])
        worst = [max(p.values()) for p in psi]
        print(f"{name:<24} max group {min(worst):.2f}-{max(worst):.2f}  ({len(psi)} windows)  {ranges}")
    print(f"wall time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
