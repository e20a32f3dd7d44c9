"""Stable sorts of small integer keys (device ids of interleaved rows) in linear time.

numpy's stable sort is a radix sort for 8- and 16-bit integers and a merge sort (n log n) otherwise, so
keys whose span fits 16 bits are sorted as offsets from their smallest value: the same order, faster.
"""

from __future__ import annotations

import numpy as np


def stable_order(keys: np.ndarray) -> np.ndarray:
    """The indices that sort ``keys`` (integers), equal keys in their original order."""
    if len(keys) and keys.dtype not in (np.uint8, np.uint16):
        low, high = int(keys.min()), int(keys.max())
        if high - low < 1 << 8:
            keys = (keys - low).astype(np.uint8)
        elif high - low < 1 << 16:
            keys = (keys - low).astype(np.uint16)
    return np.argsort(keys, kind="stable")
