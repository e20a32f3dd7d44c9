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


def teammates_relative(obs: np.ndarray, n_floors: int, n_cars: int) -> np.ndarray:
    """``[n, 10]`` (:data:`TEAMMATE_FEATURES`): where the other cars are relative to the floor this car
    decides at, from rows of its observation (envs/elevator/core.py, ``observe``); zero where it decides
    nowhere. A car counts as idle when it neither moves nor has its doors open."""
    F = n_floors
    dfloor = obs[:, OWN + F : OWN + 2 * F]
    deciding = dfloor.sum(1) > 0
    floor = dfloor.argmax(1)[:, None].astype(np.float64)
    cols = OWN + 6 * F + (OTHER + F) * np.arange(n_cars - 1)
    dist = obs[:, cols] * (F - 1) - floor
    idle = (obs[:, cols + 2] < 0.5) & (obs[:, cols + 3] < 0.5)
    near = [np.abs(dist) < r for r in (0.5, 1.5, 2.5)]
    above, below = dist > 0.5, dist < -0.5
    out = [g.sum(1) for g in (*near, above, below)] + [(g & idle).sum(1) for g in (near[0], above, below)]
    out.append(np.abs(dist).min(1) / F)
    out.append(np.where(idle, np.abs(dist), F).min(1) / F)
    return np.stack(out, 1) * deciding[:, None]


__all__ = ["IDLE_ABOVE", "TEAMMATE_FEATURES", "empty_moving_up", "teammates_relative"]
