"""Summaries of a car's own observation for the learner's linear advantage heads (``adv_teammates``).

A linear model of the observation cannot express "another idle car already waits above the floor I decide
at": the other cars enter as positions in a fixed slot order, and the relation to the deciding floor is not
linear in them. Where an idle car should park depends on exactly that (bench/parking_truth.py: the best
floor is farther from the nearest idle teammate than a random one), so the heads get it as features. They
are computed from the car's own observation only, so the controller that is learned stays decentralised.
"""

from __future__ import annotations

import numpy as np

OWN = 8  # pos, direction (3), mode (3), load; then car calls (F) and the decision floor (F)
OTHER = 5  # per other car: pos, direction, moving, doors, load; then its car calls (F)
TEAMMATE_FEATURES = (
    "cars at the floor",
    "cars within 1 floor",
    "cars within 2 floors",
    "cars above",
    "cars below",
    "idle cars at the floor",
    "idle cars above",
    "idle cars below",
    "nearest car (floors / F)",
    "nearest idle car (floors / F)",
)


IDLE_ABOVE = TEAMMATE_FEATURES.index("idle cars above")


def empty_moving_up(obs: np.ndarray, n_floors: int) -> tuple[np.ndarray, np.ndarray]:
    """Observation rows (any leading shape) of an empty car moving up that decides at a floor, and that
    floor: where an idle car's parking is decided, one floor at a time (stop or go on)."""
    dfloor = obs[..., OWN + n_floors : OWN + 2 * n_floors]
    sel = (obs[..., 3] > 0.5) & (obs[..., 5] > 0.5) & (obs[..., 7] == 0) & (dfloor.sum(-1) > 0)
    return sel, dfloor.argmax(-1)


def teammate_floors(obs: np.ndarray, n_floors: int, n_cars: int) -> tuple[np.ndarray, np.ndarray]:
    """``[n, C-1]`` each other car's floor (a float between floors while it moves) and whether it is idle
    (neither moving nor with its doors open), from rows of a car's observation (envs/elevator/core.py,
    ``observe``)."""
    cols = OWN + 6 * n_floors + (OTHER + n_floors) * np.arange(n_cars - 1)
    idle = (obs[:, cols + 2] < 0.5) & (obs[:, cols + 3] < 0.5)
    return obs[:, cols] * (n_floors - 1), idle


def teammates_relative(obs: np.ndarray, n_floors: int, n_cars: int) -> np.ndarray:
    """``[n, 10]`` (:data:`TEAMMATE_FEATURES`): where the other cars are relative to the floor this car
    decides at, from rows of its observation; zero where it decides nowhere (:func:`teammate_floors`)."""
    F = n_floors
    dfloor = obs[:, OWN + F : OWN + 2 * F]
    deciding = dfloor.sum(1) > 0
    floor = dfloor.argmax(1)[:, None].astype(np.float64)
    floors, idle = teammate_floors(obs, F, n_cars)
    dist = floors - floor
    near = [np.abs(dist) < r for r in (0.5, 1.5, 2.5)]
    above, below = dist > 0.5, dist < -0.5
    out = [g.sum(1) for g in (*near, above, below)] + [(g & idle).sum(1) for g in (near[0], above, below)]
    out.append(np.abs(dist).min(1) / F)
    out.append(np.where(idle, np.abs(dist), F).min(1) / F)
    return np.stack(out, 1) * deciding[:, None]


__all__ = ["IDLE_ABOVE", "TEAMMATE_FEATURES", "empty_moving_up", "teammate_floors", "teammates_relative"]
