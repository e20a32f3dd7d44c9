"""argparse ``type=`` checks shared by the subcommands: a bad value stops at parsing with argparse's own
one-line ``inspo <cmd>: error: argument --x: ...`` and exit status 2, before anything runs or is written."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from pathlib import Path


def _number(kind: type, text: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(  # noqa: B904 (argparse prints only the message)
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """An integer >= ``low`` (counts: episodes, seeds, iterations, workers)."""

    def check(text: str) -> int:
        value = _number(int, text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return check


def int_between(low: int, high: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        value = _number(int, text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {value}")
        return value

    return check


def float_range(low: float, high: float = math.inf, low_open: bool = False) -> Callable[[str], float]:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""

    def check(text: str) -> float:
        value = float(_number(float, text))
        if value < low or (low_open and value == low) or value > high:
            left = "(" if low_open else "["
            right = "]" if math.isfinite(high) else ")"
            raise argparse.ArgumentTypeError(f"must be in {left}{low:g}, {high:g}{right}, got {value:g}")
        return value

    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_range(0.0, low_open=True)


def existing_path(text: str) -> str:
    """A file or directory that exists (logs, run directories, config files)."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return text


def existing_dir(text: str) -> str:
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(
            f"{text}: no such directory" if not Path(text).exists() else f"{text}: not a directory"
        )
    return text


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(
            f"{text}: no such file" if not Path(text).exists() else f"{text}: not a file"
        )
    return text


def partition_name(text: str) -> str:
    """A name that becomes one folder of a log (``site=<name>``): letters, digits, '.', '_' and '-'."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text) or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"expected letters, digits, '.', '_' or '-' only, got {text!r}")
    return text
