"""``inspo demo --domain traffic --fast`` end to end: collect, train, evaluate, export, serve, drive over gRPC.

libsumo runs one simulation per process, so the demo runs in a fresh interpreter (as a user runs it);
the test process never imports libsumo. About 40 s on the shared 2-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

if not all(importlib.util.find_spec(m) for m in ("sumo_rl", "libsumo", "sumo")):
    pytest.skip("SUMO extra not installed (pip install 'inspo-control[traffic]')", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.sumo]

ROOT = Path(__file__).resolve().parents[1]


def test_fast_traffic_demo(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-c", "import sys; from trainer.cli import main; sys.exit(main())"]
    cmd += ["demo", "--domain", "traffic", "--fast", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    result = json.loads((out / "demo.json").read_text())
    assert result["runtime_exit_code"] == 0
    assert result["grpc"] and all(row["identical"] == "yes" for row in result["grpc"])
    assert set(result["stage_seconds"]) == {"collect", "card", "train", "evaluate", "export", "serve"}

    # the evaluation ran the short scenario on the held-out seeds, with the runs shown by algorithm name
    summary = {row["controller"]: row for row in result["summary"]}
    assert {"max-pressure", "inspo", "bc"} <= set(summary)
    assert all(row["length_mean"] == 180 for row in summary.values())  # 900 s / 5 s per decision
    episodes = (out / "eval" / "episodes.csv").read_text().splitlines()
    assert episodes[0].startswith("controller,")
    assert {line.split(",")[0] for line in episodes[1:]} == {"max-pressure", "inspo", "bc"}
    assert {line.split(",")[2] for line in episodes[1:]} == {"10000", "10001"}  # envs.seeds evaluation

    assert (out / "models" / "grid4x4" / "1" / "policy.onnx").exists()
    for table in ("env_steps", "agent_steps"):  # the runtime's decision log, with outcomes
        assert list((out / "decision-log" / "grid4x4" / table).rglob("*.parquet")), table
