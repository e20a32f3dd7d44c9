"""Typed env options: each family declares its options once, and every value given to ``make_env``
(from Python, a site file or ``--env-arg KEY=VALUE``) is checked against them before the env is built.

A bad value is a one-line ``ValueError`` naming the option and what it expects
(``elevator option n_cars expects an integer, got 'abc'``); an unknown name lists the known ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """One option: ``kind`` is how its value is checked, ``help`` what it means (shown in errors and docs)."""

    name: str
    kind: str  # int | float | float? | bool | str | ints | strs | choice | table (kind-specific check)
    help: str = ""
    choices: tuple[str, ...] = ()
    check: Callable[[Any], Any] | None = None  # for kind "table": returns the normalised value or raises
    minimum: float | None = None

    def expects(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return {
            "int": "an integer",
            "float": "a number",
            "float?": "a number or null",
            "bool": "true or false",
            "str": "a string",
            "ints": "a list of integers, e.g. [0, 1]",
            "strs": 'a list of strings, e.g. ["A", "B"]',
        }.get(self.kind, self.help)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def coerce(family: str, option: Option, value: Any) -> Any:
    """``value`` as the option's type, or a ``ValueError`` naming the option and what it expects."""

    def bad(detail: str = "") -> ValueError:
        got = f"got {value!r}" + (f" ({detail})" if detail else "")
        return ValueError(f"{family} option {option.name} expects {option.expects()}, {got}")

    kind = option.kind
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        out: Any = int(value)
    elif kind in ("float", "float?"):
        if value is None and kind == "float?":
            return None
        if not _is_number(value):
            raise bad()
        out = float(value)
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise bad()
    elif kind == "str":
        if not isinstance(value, str):
            raise bad()
        return value
    elif kind == "choice":
        if value not in option.choices:
            raise bad()
        return value
    elif kind == "ints":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise bad()
        return tuple(int(v) for v in value)
    elif kind == "strs":
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
            raise bad()
        return [str(v) for v in value]
    elif kind == "table":
        assert option.check is not None
        try:
            return option.check(value)
        except (ValueError, TypeError) as err:
            raise bad(str(err)) from None
    else:  # pragma: no cover - a family declared an unknown kind
        raise AssertionError(f"unknown option kind {kind!r}")
    if option.minimum is not None and out < option.minimum:
        raise bad(f"must be >= {option.minimum:g}")
    return out


def check_options(family: str, options: Mapping[str, Option], values: Mapping[str, Any]) -> dict[str, Any]:
    """Every value checked and converted; unknown names are one error listing the known options."""
    unknown = sorted(set(values) - set(options))
    if unknown:
        known = ", ".join(sorted(options)) or "none"
        raise ValueError(f"unknown {family} options {', '.join(unknown)}; known: {known}")
    return {name: coerce(family, options[name], value) for name, value in values.items()}
