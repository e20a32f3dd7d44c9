"""Terminal tables and small summaries shared by the CLI commands."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from trainer.rollout import EpisodeResult

console = Console()


# two-sided 97.5% quantiles of Student's t by degrees of freedom (1.96 beyond the table)
T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Student-t 95% interval of the mean (NaN for fewer than two values)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return float("nan"), float("nan")
    m, s = mean_and_std(arr)
    half = T975.get(arr.size - 1, 1.96) * s / math.sqrt(arr.size)
    return m - half, m + half


def jackknife_se(leave_one_out) -> np.ndarray:
    """Jackknife standard error from the ``k`` leave-one-out estimates along axis 0 (one per fold or unit
    left out): ``sqrt((k - 1) / k * sum((est - mean)^2))``, elementwise over the other axes."""
    est = np.asarray(leave_one_out, dtype=float)
    k = len(est)
    return np.sqrt((k - 1) / k * ((est - est.mean(0)) ** 2).sum(0))


def mean_std(values: Sequence[float]) -> str:
    """``mean ± std`` for a table cell."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return "-"
    if arr.size == 1:
        return f"{arr[0]:.4g}"
    m, s = mean_and_std(arr)
    return f"{m:.4g} ± {s:.2g}"


def summarize_results(results: Iterable[EpisodeResult]) -> list[dict[str, str | int]]:
    """One row per controller: episodes and mean ± std of the return and every env metric."""
    groups: dict[str, list[EpisodeResult]] = defaultdict(list)
    for r in results:
        groups[r.controller].append(r)
    rows = []
    for name, rs in groups.items():
        row: dict[str, str | int] = {
            "controller": name,
            "episodes": len(rs),
            "return": mean_std([r.episode_return for r in rs]),
            "length": mean_std([r.length for r in rs]),
        }
        for key in rs[0].metrics:
            row[key] = mean_std([r.metrics.get(key, np.nan) for r in rs])
        rows.append(row)
    return rows


def transpose(rows: Sequence[dict]) -> list[dict]:
    """Rows become columns: one row per field, one column per original row (named by its first field)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    key = columns[0]
    return [
        {key: c, **{str(row.get(key, i)): row.get(c, "") for i, row in enumerate(rows)}} for c in columns[1:]
    ]


def markdown_table(rows: Sequence[dict]) -> str:
    """The rows as a markdown table (what docs paste; a terminal gets :func:`print_table`)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows: Sequence[dict], title: str | None = None, max_columns: int = 8) -> None:
    """A rich table; with more than ``max_columns`` fields and few rows it is printed transposed."""
    if not rows:
        console.print(f"{title}: (no rows)" if title else "(no rows)")
        return
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if len(columns) > max_columns and len(rows) < len(columns):
        rows = transpose(rows)
        columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title)
    for c in columns:
        table.add_column(str(c), justify="left" if c == columns[0] else "right")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    console.print(table)
