"""The Grafana dashboard and Prometheus alert rules use exactly the metric names the runtime exports."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from runtime.config import load_config
from runtime.metrics import metric_names

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"\binspo_runtime_[a-z0-9_]+")


def _dashboard_exprs():
    dash = json.loads((ROOT / "deploy/grafana/inspo-runtime.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v.get("query", "") for v in dash["templating"]["list"]]
    return exprs


def _alert_exprs():
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_referenced_metric_is_exported(source):
    exprs = _dashboard_exprs() if source == "dashboard" else _alert_exprs()
    used = {m for e in exprs for m in NAME.findall(e)}
    exported = metric_names()
    assert used, "no metric referenced"
    assert sorted(used - exported) == []


def test_dashboard_covers_every_metric_family():
    used = {m for e in _dashboard_exprs() for m in NAME.findall(e)}
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in metric_names()}
    covered = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in used}
    assert sorted(families - covered) == []


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install -y prometheus)"
)
def test_promtool_accepts_the_rules():
    out = subprocess.run(
        ["promtool", "check", "rules", str(ROOT / "deploy/prometheus/alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_example_config_loads(tmp_path):
    (tmp_path / "p").write_text("tok-p\n")
    (tmp_path / "a").write_text("tok-a\n")
    env = {
        "INSPO_RUNTIME_POLICY_TOKENS_FILE": str(tmp_path / "p"),
        "INSPO_RUNTIME_ADMIN_TOKENS_FILE": str(tmp_path / "a"),
    }
    cfg = load_config(ROOT / "deploy/runtime.example.toml", env=env)
    assert (cfg.auth.policy_tokens, cfg.auth.admin_tokens) == (["tok-p"], ["tok-a"])
    assert cfg.model("grid4x4").fallback.rule == "obs_index" and cfg.model("other").fallback.rule == "fixed"


def test_kubernetes_shutdown_fits_the_grace_period_and_liveness_checks_the_process():
    """preStop + drain delay + in-flight grace fit terminationGracePeriodSeconds; liveness asks the
    process ("liveness"), never model readiness (an empty model store must not restart replicas)."""
    import tomllib

    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/deployment.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    runtime = tomllib.loads(
        yaml.safe_load((ROOT / "deploy/k8s/configmap.yaml").read_text())["data"]["runtime.toml"]
    )
    (container,) = pod["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    pre_stop = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", command[-1]).group(1))
    needed = pre_stop + runtime["drain_delay_s"] + runtime["grace_period_s"]
    assert pre_stop > 0 and runtime["drain_delay_s"] > 0
    assert needed < pod["terminationGracePeriodSeconds"]
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    assert container["readinessProbe"]["grpc"]["service"] == "inspo.runtime.v1.PolicyService"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
