"""Hot reload under load: version swaps with zero failed requests, right versions, bad versions rejected."""

import hashlib
import json
import re
import shutil
import threading
import time

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from serving_helpers import N_ACTIONS, OBS_DIM, ServerThread, config, copy_version, export, make_run

from runtime.client import AdminClient, PolicyClient

SWAPS = 50


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Versions 1 (seed 5) and 2 (seed 6) of one model, and a probe observation on which they differ."""
    root = tmp_path_factory.mktemp("reload")
    for v, seed in ((1, 5), (2, 6)):
        export(make_run(root / f"run{seed}", seed=seed), root / "src", version=v)
    rng = np.random.default_rng(0)
    obs = (rng.standard_normal((256, OBS_DIM)) * 3).astype(np.float32)
    feeds = {"obs": obs, "agent": np.zeros(256, np.int64), "action_mask": np.ones((256, N_ACTIONS), bool)}
    acts = [
        ort.InferenceSession(str(root / "src" / "grid" / str(v) / "policy.onnx")).run(["action"], feeds)[0]
        for v in (1, 2)
    ]
    i = int(np.flatnonzero(acts[0] != acts[1])[0])
    return root, obs[i], {1: int(acts[0][i]), 0: int(acts[1][i])}  # keyed by version parity


def _corrupt(repo, version):
    """A version whose checksum matches but whose graph ONNX Runtime cannot load."""
    folder = copy_version(repo, "grid", 1, version)
    blob = b"not an onnx graph" * 10
    (folder / "policy.onnx").write_bytes(blob)
    meta = json.loads((folder / "policy.json").read_text())
    meta["onnx_sha256"] = hashlib.sha256(blob).hexdigest()
    (folder / "policy.json").write_text(json.dumps(meta))


def test_fifty_swaps_under_load_fail_no_request(two_models, tmp_path):
    src, probe, expected = two_models
    repo = tmp_path / "models"
    copy_version(src / "src", "grid", 1, 1, to_repo=repo)
    stop = threading.Event()
    stats = {"ok": 0, "errors": [], "wrong": [], "versions": set()}
    lock = threading.Lock()

    with ServerThread(config(repo, poll_interval_s=0.01)) as s:

        def worker():
            with PolicyClient(s.target) as c:
                while not stop.is_set():
                    try:
                        r = c.act("grid", {"tl_0": probe})
                    except grpc.RpcError as err:
                        with lock:
                            stats["errors"].append(err.code())
                        continue
                    v = int(r.model_version)
                    with lock:
                        stats["ok"] += 1
                        stats["versions"].add(v)
                        if r.actions[0] != expected[v % 2] or r.fallback[0]:
                            stats["wrong"].append((v, int(r.actions[0])))

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        admin_free = PolicyClient(s.target)
        corrupt_at = SWAPS // 2
        version = 1
        swaps = 0
        while swaps < SWAPS:
            version += 1
            if version == corrupt_at:
                _corrupt(repo, version)
                time.sleep(0.1)  # several polls: it must be rejected, the old version keeps serving
                assert admin_free.act("grid", {"tl_0": probe}).model_version == str(version - 1)
                continue
            source = 1 if version % 2 else 2
            copy_version(src / "src", "grid", source, version, to_repo=repo)
            deadline = time.monotonic() + 10
            while admin_free.act("grid", {"tl_0": probe}).model_version != str(version):
                assert time.monotonic() < deadline, f"version {version} was never served"
                time.sleep(0.005)
            swaps += 1
        stop.set()
        for t in threads:
            t.join()
        rejected = set(s.server.repo.rejected)
        kept = sorted(s.server.repo.entries["grid"].versions)
        info_series = {x.labels["version"] for x in s.server.metrics.model_info.collect()[0].samples}
    assert info_series == set(
        kept
    )  # released versions' model_info series go with them stats["errors"] == [] and stats["wrong"] == []
    assert stats["ok"] > SWAPS and len(stats["versions"]) > 10
    assert ("grid", str(corrupt_at)) in rejected
    assert len(kept) <= 3  # old versions are released


def test_rollback_and_admin_load_of_a_bad_version(two_models, tmp_path):
    src, probe, expected = two_models
    shutil.copytree(src / "src", tmp_path / "models")
    cfg = config(tmp_path / "models", poll_interval_s=0.02)
    cfg.auth.admin_tokens = ["admin-secret"]
    with ServerThread(cfg) as s, PolicyClient(s.target, token="admin-secret") as c:
        admin = AdminClient(s.target, token="admin-secret")
        assert c.act("grid", {"tl_0": probe}).model_version == "2"
        back = admin.rollback("grid")
        assert (back.model.version, back.previous_version) == ("1", "2")
        time.sleep(0.1)  # polling must not bring the rolled-back version back
        r = c.act("grid", {"tl_0": probe})
        assert r.model_version == "1" and r.actions[0] == expected[1]
        assert c.act("grid", {"tl_0": probe}, version="2").model_version == "2"  # still loaded, pinnable
        _corrupt(tmp_path / "models", 3)
        with pytest.raises(grpc.RpcError) as err:
            admin.load("grid", "3")
        assert (
            err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            and "old version keeps serving" in err.value.details()
        )
        assert c.act("grid", {"tl_0": probe}).model_version == "1"
        listed = admin.list()
        assert [(r.model, r.version) for r in listed.rejected] == [("grid", "3")]
        assert admin.load("grid", "2").model.version == "2"
        with pytest.raises(grpc.RpcError) as err:
            admin.load("grid", "99")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_guardrail_and_canary_settings_must_name_the_models_agents_and_actions(tmp_path):
    """A misspelt agent or an action outside the model's range in the model's config is a rejection that
    names the key, never a constraint that silently applies to nothing."""
    from serving_helpers import AGENTS

    from runtime.config import DeploymentConfig, GuardrailConfig, ModelConfig
    from runtime.model import ModelLoadError, load_version

    folder = export(make_run(tmp_path / "run", seed=1), tmp_path / "models")
    ok = ModelConfig(guardrails=GuardrailConfig(forbidden={"*": [0], AGENTS[0]: [N_ACTIONS - 1]}))
    assert load_version(folder, "grid", ok).agent_ids == list(AGENTS)
    cases = {
        "guardrails.forbidden names agent 'tl_99'": ModelConfig(
            guardrails=GuardrailConfig(forbidden={"tl_99": [0]})
        ),
        f"guardrails.forbidden.{AGENTS[0]} names actions [{N_ACTIONS}]": ModelConfig(
            guardrails=GuardrailConfig(forbidden={AGENTS[0]: [N_ACTIONS]})
        ),
        "deployment.canary_agents names ['nope']": ModelConfig(
            deployment=DeploymentConfig(canary_agents=["nope"])
        ),
    }
    for message, cfg in cases.items():
        with pytest.raises(ModelLoadError, match=re.escape(message)):
            load_version(folder, "grid", cfg)
