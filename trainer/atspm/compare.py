"""Side by side: each atspm measure of the logged and the learned controller, per phase and in total.

Every figure sums (or pools) over all devices, episodes and 15-min bins of an event set, the way atspm's
documentation says to aggregate its binned columns: arrivals on green pool the advance actuations, the
platoon ratio divides the pooled share on green by the pooled green ratio, split failures are counted
cycles. The ratio column is learned / logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

BIN_SECONDS = 15 * 60  # measures_script.py's bin size


@dataclass(frozen=True)
class Measure:
    key: str
    title: str
    better: str  # "higher", "lower" or "-" (demand, not control quality)


MEASURES = [
    Measure("actuations", "detector actuations (count)", "-"),
    Measure("aog", "arrivals on green (%)", "higher"),
    Measure("platoon_ratio", "platoon ratio", "higher"),
    Measure("split_failures", "split failures (cycles)", "lower"),
    Measure("green_time", "green time per cycle (s)", "-"),
    Measure("yellow_actuations", "actuations on yellow (Yellow_Red loops)", "lower"),
    Measure("red_actuations", "actuations on red (Yellow_Red loops)", "lower"),
    Measure("terminations", "gap-outs + max-outs + force-offs", "-"),
]


def read_measures(directory: Path) -> dict[str, pd.DataFrame]:
    """measures_script.py's output (``<measure>.parquet``). Numbers become float64 (atspm's int16
    counts overflow when summed and scaled) and rows are sorted: DuckDB returns groups in any order, and
    float sums in another order differ in the last bits (the same events would not compare equal)."""
    out = {}
    for path in sorted(directory.glob("*.parquet")):
        frame = pd.read_parquet(path)
        frame = frame.sort_values(list(frame.columns), ignore_index=True)
        ids = ("Phase", "Detector")
        numbers = [c for c in frame.columns if c not in ids and pd.api.types.is_numeric_dtype(frame[c])]
        frame = frame.astype(dict.fromkeys(numbers, "float64"))
        out[path.stem] = frame
    return out


def _phase_of_detector(frame: pd.DataFrame, config: pd.DataFrame) -> pd.DataFrame:
    phases = config[["DeviceId", "Parameter", "Phase"]].drop_duplicates(["DeviceId", "Parameter"])
    phases = phases.assign(DeviceId=phases["DeviceId"].astype(str))
    merged = frame.assign(DeviceId=frame["DeviceId"].astype(str)).merge(
        phases, left_on=["DeviceId", "Detector"], right_on=["DeviceId", "Parameter"], how="left"
    )
    return merged


def per_phase(measures: dict[str, pd.DataFrame], config: pd.DataFrame) -> dict[str, dict]:
    """measure key -> {phase or "all": value}. Phases are the configuration's ``Phase`` numbers."""
    result: dict[str, dict] = {m.key: {} for m in MEASURES}

    def fill(key: str, grouped: dict, total: float) -> None:
        result[key] = {**{int(p): float(v) for p, v in grouped.items()}, "all": float(total)}

    act = _phase_of_detector(measures["actuations"], config).dropna(subset=["Phase"])  # configured only
    fill("actuations", act.groupby("Phase")["Total"].sum(), act["Total"].sum())

    pr = measures["platoon_ratio"]
    share = pr.groupby("Phase")[["Green_Actuations", "Total_Actuations"]].sum()
    fill("aog", 100 * share["Green_Actuations"] / share["Total_Actuations"],
         100 * pr["Green_Actuations"].sum() / max(pr["Total_Actuations"].sum(), 1))  # fmt: skip

    def platoon(frame: pd.DataFrame) -> float:
        green_ratio = frame["Green_Seconds"].sum() / (len(frame) * BIN_SECONDS)
        return frame["Green_Actuations"].sum() / max(frame["Total_Actuations"].sum(), 1) / green_ratio

    fill("platoon_ratio", pr.groupby("Phase").apply(platoon), platoon(pr) if len(pr) else np.nan)

    sf = measures["split_failures"]
    fill("split_failures", sf.groupby("Phase")["Split_Failure"].sum(), sf["Split_Failure"].sum())
    fill("green_time", sf.groupby("Phase")["Green_Time"].mean(), sf["Green_Time"].mean())

    yr = measures["yellow_red"]
    for key, state in (("yellow_actuations", 8), ("red_actuations", 10)):
        rows = yr[yr["Signal_State"] == state]
        fill(key, rows.groupby("Phase")["Count"].sum(), rows["Count"].sum())

    term = measures["terminations"]
    fill("terminations", term.groupby("Phase")["Total"].sum(), term["Total"].sum())
    return result


def side_by_side(logged: dict[str, dict], learned: dict[str, dict]) -> list[dict]:
    """Rows ``measure, phase, logged, learned, ratio`` (phase ``all`` first, then each phase)."""
    rows = []
    for m in MEASURES:
        a, b = logged[m.key], learned[m.key]
        phases = ["all", *sorted({p for p in (*a, *b) if p != "all"})]
        for phase in phases:
            x, y = a.get(phase, np.nan), b.get(phase, np.nan)
            rows.append(
                {
                    "measure": m.title,
                    "better": m.better,
                    "phase": phase,
                    "logged": x,
                    "learned": y,
                    "ratio": y / x if x and np.isfinite(x) and np.isfinite(y) else np.nan,
                }
            )
    return rows


def format_rows(rows: list[dict], phases: bool) -> list[dict]:
    """Table cells as text; only the totals unless ``phases``."""

    def num(v: float) -> str:
        return "-" if not np.isfinite(v) else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"

    shown = []
    for row in rows:
        if row["phase"] != "all" and not phases:
            continue
        shown.append(
            {
                "measure": row["measure"] if row["phase"] == "all" else "",
                "phase": row["phase"],
                "logged": num(row["logged"]),
                "learned": num(row["learned"]),
                "learned/logged": "-" if not np.isfinite(row["ratio"]) else f"{row['ratio']:.3f}",
                "better": row["better"] if row["phase"] == "all" else "",
            }
        )
    return shown
