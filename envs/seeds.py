"""The one place seeds are split: collection, tuning and evaluation never overlap."""

from __future__ import annotations

COLLECTION_SEEDS = range(0, 10_000)
EVALUATION_SEEDS = range(10_000, 10_032)
TUNING_SEEDS = range(20_000, 21_000)
TRAINING_SEEDS = (0, 1, 2, 3, 4)  # seeds of the learner itself (network init, minibatches)


def evaluation_seeds(n: int = 32) -> list[int]:
    """The first ``n`` evaluation seeds (always the same list, so comparisons are paired)."""
    if not 1 <= n <= len(EVALUATION_SEEDS):
        raise ValueError(f"n must be in 1..{len(EVALUATION_SEEDS)}")
    return list(EVALUATION_SEEDS[:n])


def collection_seeds(n: int, start: int = 0) -> list[int]:
    """``n`` consecutive collection seeds starting at ``start``."""
    if start < 0 or start + n > len(COLLECTION_SEEDS):
        raise ValueError(f"collection seeds must lie in [0, {len(COLLECTION_SEEDS)})")
    return list(range(start, start + n))


def tuning_seeds(n: int = 8) -> list[int]:
    return list(TUNING_SEEDS[:n])
