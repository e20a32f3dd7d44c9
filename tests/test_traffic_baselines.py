"""Baseline reproduction (docs/traffic.md): fixed-time and max-pressure delay within ±15 % of the reference.

Long: 3 nets x 2 controllers x 3 seeds of 3600 simulated s (about 3-6 min on 2 free cores).
Run with ``pytest -m sumo_long tests/test_traffic_baselines.py``.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

if not all(importlib.util.find_spec(m) for m in ("sumo_rl", "libsumo", "sumo")):
    pytest.skip("SUMO (traffic extra) not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


@pytest.mark.sumo
@pytest.mark.sumo_long
@pytest.mark.parametrize("net", ["grid4x4", "cologne8", "ingolstadt21"])
def test_baselines_within_15_percent(net, tmp_path):
    from traffic_baselines import REFERENCE

    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "traffic_baselines.py"),
            "--nets",
            net,
            "--no-native",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    delays = defaultdict(list)
    with open(tmp_path / "results.csv") as f:
        for row in csv.DictReader(f):
            delays[row["controller"]].append(float(row["delay"]))
    for controller in ("fixed", "max-pressure"):
        assert len(delays[controller]) == 3
        mean, ref = np.mean(delays[controller]), REFERENCE[(net, controller)]
        assert abs(mean / ref - 1) <= 0.15, f"{net} {controller}: {mean:.1f} s vs reference {ref} s"
    assert np.mean(delays["max-pressure"]) < np.mean(delays["fixed"])
    assert (tmp_path / net / "delay_per_controller.png").stat().st_size > 0
