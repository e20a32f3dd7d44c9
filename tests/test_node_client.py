"""The Node.js example (clients/node/act.js, docs/serving.md) calls a live runtime with @grpc/grpc-js,
loading protos/ as they are. Skipped where node or the example's npm packages are absent."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from serving_helpers import OBS_DIM, ServerThread, config, export, make_run

NODE = Path(__file__).resolve().parents[1] / "clients" / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE / "node_modules" / "@grpc" / "grpc-js").is_dir(),
    reason="node or the example's packages are missing (cd clients/node && npm install)",
)


def _node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["node", "act.js", *args], cwd=NODE, capture_output=True, text=True, timeout=60)


def test_node_client_gets_actions_and_a_named_status(tmp_path):
    export(make_run(tmp_path / "run"), tmp_path / "models")
    with ServerThread(config(tmp_path / "models", poll_interval_s=0)) as s:
        ok = _node(s.target, "grid", "tl_0", str(OBS_DIM))
        bad = _node(s.target, "grid", "ghost", str(OBS_DIM))
    assert ok.returncode == 0, ok.stderr
    response = json.loads(ok.stdout)
    assert response["model"] == "grid" and response["model_version"] == "1"
    assert [a["agent_id"] for a in response["actions"]] == ["tl_0"]
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT: agents[0].agent_id: unknown agent 'ghost'" in bad.stderr
