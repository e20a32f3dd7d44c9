"""The serving image and the Kubernetes manifests match the runtime: the image installs exactly the
packages the runtime imports and serves without torch; manifests use its real ports, health service
names, config, secret and model paths. (Docker and a cluster are not available here.)"""

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from runtime.config import load_config
from runtime.server import LIVENESS, POLICY_SERVICE

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy/docker"
K8S = ROOT / "deploy/k8s"
OWN = {"contract", "runtime", "protos"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_requirements() -> set[str]:
    lines = (DOCKER / "requirements-runtime.txt").read_text().splitlines()
    return {
        _norm(re.split(r"[<>=!~ \[]", line.strip())[0])
        for line in lines
        if line.strip() and not line.startswith("#")
    }


def distributions(modules: set[str]) -> set[str]:
    """Third-party distributions providing these top-level modules (stdlib and our packages dropped)."""
    owners = importlib.metadata.packages_distributions()
    out = set()
    for module in modules - OWN - set(sys.stdlib_module_names) - {"__future__"}:
        assert module in owners, f"no installed distribution provides {module!r}"
        out |= {_norm(d) for d in owners[module]}
    return out


def closure(names: set[str]) -> set[str]:
    """The distributions pip installs for ``names``: them and their non-extra requirements, recursively."""
    todo, out = list(names), set()
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        for req in importlib.metadata.requires(name) or []:
            if "extra ==" not in req:
                todo.append(_norm(re.split(r"[<>=!~ ;\[(]", req.strip())[0]))
    return out


def image_modules() -> list[str]:
    """Top-level modules the image's distributions provide (everything else installed here is blocked)."""
    image = closure(image_requirements())
    owners = importlib.metadata.packages_distributions()
    return sorted(m for m, dists in owners.items() if {_norm(d) for d in dists} & image)


def runtime_source_imports() -> set[str]:
    """Top-level modules imported anywhere in contract/, runtime/ and protos/ (function-level imports included).
    protos/generate.py is the developers' code generator (grpc_tools), not part of the image's code path."""
    found = set()
    files = (
        list((ROOT / "contract").glob("*.py"))
        + list((ROOT / "runtime").glob("*.py"))
        + [p for p in (ROOT / "protos").rglob("*.py") if p.name != "generate.py"]
    )
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def k8s_docs() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str, name: str | None = None) -> dict:
    found = [d for d in k8s_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.fixture(scope="module")
def manifest_config(tmp_path_factory):
    """The runtime config the ConfigMap holds, loaded by the runtime's own loader."""
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "runtime.toml").write_text(_one("ConfigMap", "inspo-runtime-config")["data"]["runtime.toml"])
    (folder / "tokens").write_text("t0\n")  # the Secret's files exist only in the pod
    env = {f"INSPO_RUNTIME_{k}_TOKENS_FILE": str(folder / "tokens") for k in ("POLICY", "ADMIN")}
    return load_config(folder / "runtime.toml", env=env)


def probe_services() -> set[str]:
    container = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {
        container[p]["grpc"].get("service", "") for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }


# -- the image -------------------------------------------------------------------------------------
def test_image_installs_exactly_what_the_runtime_imports():
    assert distributions(runtime_source_imports()) == image_requirements()
    assert not {"torch", "onnx", "pandas", "ray"} & image_requirements()
    dockerfile = (DOCKER / "Dockerfile").read_text()
    runs = [line for line in dockerfile.splitlines() if line.lstrip().startswith(("RUN", "&&", "/opt"))]
    assert "requirements-runtime.txt" in dockerfile and not [r for r in runs if "torch" in r]
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M))
    assert copied == {"deploy/docker/requirements-runtime.txt", "contract/", "runtime/", "protos/"}


SERVE = r"""
import json, sys, urllib.request
PRELOADED = set(sys.modules)  # interpreter start-up (.pth hooks), not the runtime's doing
sys.path.insert(0, sys.argv[1])

import importlib.metadata
ALLOWED = set(json.loads(sys.argv[4]))
INSTALLED = set(importlib.metadata.packages_distributions())

class Block:
    # Only the image's packages: torch, trainer, simulators and every other installed distribution
    # fail to import here as they would in the image (optional imports of grpc/pyarrow included).
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ("torch", "trainer", "envs", "ray") or (top in INSTALLED and top not in ALLOWED | {"contract", "runtime", "protos"}):
            raise ImportError(f"blocked in the serving image: {name}")

sys.meta_path.insert(0, Block())
import numpy as np
from runtime.client import PolicyClient
from serving_helpers import AGENTS, OBS_DIM, ServerThread, config

services = json.loads(sys.argv[3])
with ServerThread(config(sys.argv[2]), metrics=True) as server:
    with PolicyClient(server.target) as client:
        result = client.act("grid", np.ones((len(AGENTS), OBS_DIM), np.float32), AGENTS)
        health = {s: client.health(s) for s in services}
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics").read().decode()
# Top-level packages loaded from installed distributions (site-packages), not stdlib or this repo.
site = [p for p in sys.path if p.endswith("site-packages")]
top = {m.split(".")[0] for m, mod in list(sys.modules.items())
       if m not in PRELOADED and any(str(getattr(mod, "__file__", "") or "").startswith(s) for s in site)}
print(json.dumps({"actions": result.as_dict(), "health": health, "modules": sorted(top),
                  "metrics": "inspo_runtime_requests_total" in metrics}))
"""


def test_the_runtime_serves_a_request_with_torch_blocked(tmp_path):
    from serving_helpers import AGENTS, export, make_run

    export(make_run(tmp_path / "run"), tmp_path / "models", name="grid")
    services = sorted(probe_services())
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE,
            str(ROOT / "tests"),
            str(tmp_path / "models"),
            json.dumps(services),
            json.dumps(image_modules()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(report["actions"]) == AGENTS and all(0 <= a < 4 for a in report["actions"].values())
    assert report["health"] == dict.fromkeys(services, "SERVING")  # every probed name is served
    assert report["metrics"]
    loaded = {m for m in report["modules"] if not m.startswith("__editable__")}  # the dev install hook
    assert "torch" not in loaded and "trainer" not in loaded
    assert distributions(loaded) <= closure(image_requirements())
    assert {"onnxruntime", "grpcio", "grpcio-health-checking", "numpy"} <= distributions(loaded)


# -- the manifests ---------------------------------------------------------------------------------
def test_manifests_use_the_runtime_ports_and_health_service(manifest_config):
    cfg = manifest_config
    assert cfg.host == "0.0.0.0" and cfg.metrics_host == "0.0.0.0"  # reachable from the pod network
    pod = _one("Deployment")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": cfg.port, "metrics": cfg.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == cfg.port
    assert probe_services() <= {
        "",
        POLICY_SERVICE,
        LIVENESS,
    }  # the names RuntimeServer sets on grpc.health.v1
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and int(notes["prometheus.io/port"]) == cfg.metrics_port
    for service in (d for d in k8s_docs() if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
    assert pod["spec"]["terminationGracePeriodSeconds"] > cfg.grace_period_s


def test_manifests_mount_the_config_tokens_and_models_the_runtime_reads(manifest_config):
    cfg = manifest_config
    spec = _one("Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_arg = container["args"][container["args"].index("--config") + 1]
    assert Path(config_arg).parent == Path(mounts["config"])
    assert volumes["config"]["configMap"]["name"] == "inspo-runtime-config"
    assert Path(config_arg).name in _one("ConfigMap")["data"]
    assert cfg.model_repository == mounts["models"]
    secret = _one("Secret", volumes["tokens"]["secret"]["secretName"])
    assert Path(cfg.state_file).parent == Path(mounts["state"]) and "emptyDir" in volumes["state"]
    for token_file in (cfg.auth.policy_tokens_file, cfg.auth.admin_tokens_file):
        assert Path(token_file).parent == Path(mounts["tokens"])
        assert Path(token_file).name in secret["stringData"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]  # real tokens are created out of band
    assert set(kustomization["resources"]) | {"secret.example.yaml"} == {
        p.name for p in K8S.glob("*.yaml")
    } - {"kustomization.yaml"}


def test_the_image_defaults_serve_on_the_exposed_ports():
    dockerfile = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"(INSPO_RUNTIME_\w+)=(\S+)", dockerfile))
    cmd = json.loads(re.search(r"^CMD (\[.*\])", dockerfile, re.M).group(1))
    cfg = load_config(None, env=env)
    assert cfg.host == cfg.metrics_host == "0.0.0.0" and cfg.model_repository == "/models"
    port, metrics = int(cmd[cmd.index("--port") + 1]), int(cmd[cmd.index("--metrics-port") + 1])
    exposed = {int(p) for p in re.search(r"^EXPOSE (.*)$", dockerfile, re.M).group(1).split()}
    assert exposed == {port, metrics} == {cfg.port, cfg.metrics_port}
    assert json.loads(re.search(r"^ENTRYPOINT (\[.*\])", dockerfile, re.M).group(1)) == [
        "python",
        "-m",
        "runtime.server",
    ]
    assert (
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["inspo-runtime"]
        == "runtime.server:main"
    )
