"""What reaches traffic: the signature gate holds an incompatible version (0 failed requests while it
appears), and a version whose policy.json is mistyped is a listed rejection that never stops start-up or
the polling of other models."""

import json
import threading
import time

import grpc
import numpy as np
import pytest
from deployment_helpers import ADMIN, sample, scrape
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_helpers import AGENTS, N_ACTIONS, OBS_DIM, ServerThread, config, copy_version, export, make_run

from runtime.client import AdminClient, PolicyClient


def export_wide(repo, name: str, version: int, obs_dim: int) -> None:
    """A valid version of ``name`` whose graph and policy.json agree, with another obs_dim."""
    import torch

    from trainer.export import export_policy
    from trainer.nets import PolicyNet

    torch.manual_seed(1)
    policy = PolicyNet(obs_dim, len(AGENTS), N_ACTIONS, hidden=(16,))
    meta = {
        "env_id": "test:grid",
        "agent_ids": AGENTS,
        "action_names": [f"phase_{i}" for i in range(N_ACTIONS)],
    }
    export_policy(policy, meta, repo, name, version, parity_samples=16)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    export(make_run(root / "run"), root / "src", version=1)
    export_wide(root / "src", "grid", 2, OBS_DIM + 3)
    return root / "src"


def _admin_config(repo, **kw):
    cfg = config(repo, **kw)
    cfg.auth.admin_tokens = [ADMIN]
    return cfg


def test_incompatible_version_is_held_and_fails_no_request(source, tmp_path):
    repo = tmp_path / "models"
    copy_version(source, "grid", 1, 1, to_repo=repo)
    stop = threading.Event()
    stats = {"ok": 0, "errors": [], "versions": set()}

    with ServerThread(_admin_config(repo, poll_interval_s=0.01), metrics=True) as s:

        def worker():
            with PolicyClient(s.target, token=ADMIN) as c:
                while not stop.is_set():
                    try:
                        r = c.act("grid", {a: np.zeros(OBS_DIM) for a in AGENTS})
                    except grpc.RpcError as err:
                        stats["errors"].append(err.code())
                        continue
                    stats["ok"] += 1
                    stats["versions"].add(r.model_version)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        copy_version(source, "grid", 2, 2, to_repo=repo)  # obs_dim 6 -> 9 appears while serving
        deadline = time.monotonic() + 10
        while ("grid", "2") not in s.server.repo.held:
            assert time.monotonic() < deadline, "the incompatible version was never seen"
            time.sleep(0.01)
        time.sleep(0.3)  # many polls with the incompatible version on disk
        stop.set()
        for t in threads:
            t.join()
        admin = AdminClient(s.target, token=ADMIN)
        listed = admin.list()
        assert [(h.model, h.version, h.reason) for h in listed.held] == [
            ("grid", "2", f"held: signature changed (obs_dim {OBS_DIM} -> {OBS_DIM + 3})")
        ]
        text = scrape(s.server.metrics_port)
        assert sample(text, "inspo_runtime_model_held_versions", model="grid") == 1
        assert sample(text, "inspo_runtime_model_reloads_total", model="grid", result="held") == 1
        # an unnamed LoadModel does not serve it either; naming the version does
        with pytest.raises(grpc.RpcError) as err:
            admin.load("grid")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "signature changed (obs_dim 6 -> 9)" in err.value.details()
        assert admin.load("grid", "2").model.obs_dim == OBS_DIM + 3
        assert s.server.repo.held == {}
        assert sample(scrape(s.server.metrics_port), "inspo_runtime_model_held_versions", model="grid") == 0
    assert stats["errors"] == []
    assert stats["ok"] > 20 and stats["versions"] == {"1"}


def test_a_poll_overtaken_by_an_admin_load_does_not_hold_the_version_now_served(source, tmp_path):
    """The poller loads outside the lock; an operator naming the version meanwhile wins, and stays unheld."""
    repo = tmp_path / "models"
    copy_version(source, "grid", 1, 1, to_repo=repo)
    with ServerThread(_admin_config(repo, poll_interval_s=0)) as s:
        copy_version(source, "grid", 2, 2, to_repo=repo)
        models = s.server.repo
        load_version, overtaken = models._load, threading.Event()

        def load_while_an_operator_serves_it(name, version):
            model = load_version(name, version)
            if version == "2" and not overtaken.is_set():
                overtaken.set()  # the admin call below loads version 2 too: only the poll's load triggers it
                # an operator serves version 2 between the poll's load and its decision
                AdminClient(s.target, token=ADMIN).load("grid", "2")
            return model

        models._load = load_while_an_operator_serves_it
        assert models.poll() == []
        assert models.get("grid").version == "2" and models.held == {}
        assert models.poll() == [] and models.held == {}


MISTYPED = {
    "obs_low_scalar": {"obs_low": 0.0},
    "obs_dim_text": {"obs_dim": "six"},
    "n_actions_float": {"n_actions": 4.5},
    "agent_ids_unhashable": {"agent_ids": [["tl_0"], ["tl_1"], ["tl_2"]]},
    "action_names_scalar": {"action_names": 3},
}


def _publish(source, repo, name: str, version: int, change: dict | None = None):
    """Version 1 of the source model published as ``name/version``, its policy.json changed by ``change``."""
    tmp = copy_version(source, "grid", 1, version, to_repo=repo / ".staging")
    meta = json.loads((tmp / "policy.json").read_text())
    meta.update(change or {}, name=name)
    (tmp / "policy.json").write_text(json.dumps(meta))
    (repo / name).mkdir(parents=True, exist_ok=True)
    tmp.rename(repo / name / str(version))


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="")).status


@pytest.mark.parametrize("case", sorted(MISTYPED))
def test_mistyped_policy_json_at_start_up_is_a_listed_rejection(source, tmp_path, case):
    repo = tmp_path / "models"
    _publish(source, repo, "aaa", 1, MISTYPED[case])  # polled before grid
    _publish(source, repo, "grid", 1)
    with ServerThread(_admin_config(repo, poll_interval_s=0)) as s:
        assert s.server.repo.served() == ["grid"]
        reason = s.server.repo.rejected[("aaa", "1")][1]
        assert next(iter(MISTYPED[case])) in reason and "policy.json" in reason
        assert _health(s.target) == health_pb2.HealthCheckResponse.SERVING


def test_no_loadable_version_starts_not_serving_with_reasons(source, tmp_path, caplog):
    repo = tmp_path / "models"
    _publish(source, repo, "grid", 1, MISTYPED["obs_low_scalar"])
    with (
        caplog.at_level("ERROR", logger="inspo.runtime"),
        ServerThread(config(repo, poll_interval_s=0.02)) as s,
    ):
        assert _health(s.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert any("no model can be served" in r.message and "obs_low" in r.message for r in caplog.records)
        _publish(source, repo, "grid", 2)  # a good version arrives: served, health follows
        deadline = time.monotonic() + 10
        while _health(s.target) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert not any(r.exc_info for r in caplog.records)


def test_mistyped_version_while_running_is_rejected_and_other_models_still_poll(source, tmp_path, caplog):
    repo = tmp_path / "models"
    _publish(source, repo, "grid", 1)
    with (
        caplog.at_level("INFO", logger="inspo.runtime"),
        ServerThread(_admin_config(repo, poll_interval_s=0.02), metrics=True) as s,
    ):
        _publish(source, repo, "aaa", 1, MISTYPED["agent_ids_unhashable"])
        _publish(source, repo, "grid", 2, MISTYPED["obs_low_scalar"])
        _publish(source, repo, "zzz", 1)
        deadline = time.monotonic() + 10
        while "zzz" not in s.server.repo.served():
            assert time.monotonic() < deadline, "a model after the bad ones was never polled"
            time.sleep(0.02)
        time.sleep(0.1)
        listed = AdminClient(s.target, token=ADMIN).list()
        assert sorted((r.model, r.version) for r in listed.rejected) == [("aaa", "1"), ("grid", "2")]
        with PolicyClient(s.target, token=ADMIN) as c:
            assert c.act("grid", {"tl_0": np.zeros(OBS_DIM)}).model_version == "1"
        text = scrape(s.server.metrics_port)
        assert sample(text, "inspo_runtime_model_reloads_total", model="grid", result="rejected") == 1
    assert not any(r.exc_info for r in caplog.records), "a rejection must be one line, not a traceback"
