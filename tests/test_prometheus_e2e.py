"""Monitoring end to end (issue 8): the real Prometheus server scrapes the real ``inspo-runtime`` process,
counts exactly the Act calls a client made, and loads and evaluates deploy/prometheus/alerts.yml.

Needs the ``prometheus`` binary (Debian: ``apt-get install -y prometheus``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from serving_helpers import AGENTS, N_ACTIONS, OBS_DIM, export, make_run

from runtime.client import PolicyClient
from runtime.launch import free_port
from trainer.demo import start_runtime

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS = shutil.which("prometheus")
N_REQUESTS = 7
TIMEOUT_S = 30.0

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus server binary is not installed (Debian: apt-get install -y prometheus)",
)


class Prometheus:
    """A ``prometheus`` server process on loopback with a throw-away TSDB."""

    def __init__(self, folder: Path, metrics_port: int):
        self.log_path = folder / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": "inspo-runtime", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
            ],
        }
        config_file = folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={folder / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=5) as response:
            body = json.loads(response.read().decode())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> float | None:
        """The value of a single-series instant query, None while it has no result."""
        result = self.get("/api/v1/query", query=expr)["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_ready(self, timeout: float = TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def poll(check, what: str, prom: Prometheus, timeout: float = TIMEOUT_S):
    """Call ``check()`` until it returns something truthy; fail with the last value and prometheus's log."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"{what}: not reached within {timeout:.0f} s (last: {last!r})\n{prom.log_tail()}")


@pytest.fixture
def monitored(tmp_path):
    """A model served by the real runtime process, scraped every second by a real Prometheus."""
    models = tmp_path / "models"
    export(make_run(tmp_path / "run"), models, "grid")
    runtime = start_runtime(models, tmp_path / "decision-log", tmp_path)
    prom = None
    try:
        prom = Prometheus(tmp_path, runtime.metrics_port)
        prom.wait_ready()
        yield runtime, prom
    finally:
        if prom is not None:
            prom.stop()
        runtime.stop()


def test_prometheus_scrapes_the_runtime_and_loads_the_alert_rules(monitored):
    runtime, prom = monitored
    rng = np.random.default_rng(0)
    with PolicyClient(f"127.0.0.1:{runtime.port}", timeout=10) as client:
        for t in range(N_REQUESTS):
            obs = rng.normal(size=(len(AGENTS), OBS_DIM)).astype(np.float32)
            masks = np.ones((len(AGENTS), N_ACTIONS), dtype=bool)
            result = client.act("grid", obs, AGENTS, masks, episode_id="e2e", t=t)
            assert len(result.actions) == len(AGENTS) and not result.fallback.any()

    # the target is scraped and healthy
    def target_up():
        targets = prom.get("/api/v1/targets")["activeTargets"]
        ours = [t for t in targets if t["labels"].get("job") == "inspo-runtime"]
        return ours if ours and all(t["health"] == "up" for t in ours) else None

    (target,) = poll(target_up, "scrape target inspo-runtime up", prom)
    assert target["scrapeUrl"] == f"http://127.0.0.1:{runtime.metrics_port}/metrics"
    assert target["lastError"] == ""

    # every Act call is counted, once, as OK, and its decisions and latencies with it
    poll(
        lambda: prom.query('sum(inspo_runtime_requests_total{method="Act"})') == N_REQUESTS,
        f"sum(inspo_runtime_requests_total{{method='Act'}}) == {N_REQUESTS}",
        prom,
    )
    assert prom.query('inspo_runtime_requests_total{method="Act", model="grid", code="OK"}') == N_REQUESTS
    assert prom.query('sum(inspo_runtime_request_duration_seconds_count{method="Act"})') == N_REQUESTS
    assert prom.query('sum(inspo_runtime_agent_decisions_total{model="grid"})') == N_REQUESTS * len(AGENTS)
    assert prom.query("sum(inspo_runtime_fallbacks_total)") in (None, 0.0)
    assert prom.query("inspo_runtime_ready") == 1
    assert prom.query('inspo_runtime_model_info{model="grid", version="1"}') == 1
    # the dashboard's p99 panel query evaluates to a latency (finite, within the histogram's range)
    p99 = prom.query(
        'histogram_quantile(0.99, sum by (le) (inspo_runtime_request_duration_seconds_bucket{method="Act"}))'
    )
    assert p99 is not None and math.isfinite(p99) and 0 < p99 <= 0.1

    # the alert rules of deploy/prometheus/alerts.yml are loaded and evaluate without error
    wanted = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}

    def rules_evaluated():
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = poll(rules_evaluated, "alert rules loaded and evaluated", prom)
    assert {r["name"] for r in rules} == wanted
    assert all(r["type"] == "alerting" for r in rules)
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert broken == {}
    state = {r["name"]: r["state"] for r in rules}
    assert state["InspoRuntimeNotReady"] == "inactive"
    assert state["InspoRuntimeErrorRate"] == "inactive"
