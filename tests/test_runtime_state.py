"""Durable, explicit deployment state: a restart serves what was served (after a RollBack, a promotion,
with auto_serve = false), canary / shadow assignments come back, and promotion promotes exactly the
version the canary ran."""

import json

import grpc
import numpy as np
import pytest
from deployment_helpers import ADMIN
from serving_helpers import AGENTS, OBS_DIM, ServerThread, config, copy_version, export, make_run

from runtime.client import AdminClient, PolicyClient, build_request
from runtime.config import ModelConfig

OBS = {a: np.zeros(OBS_DIM) for a in AGENTS}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    export(make_run(root / "run"), root / "src", version=1)
    return root / "src"


def _repo(source, path, versions=(1, 2, 3)):
    for v in versions:
        copy_version(source, "grid", 1, v, to_repo=path)
    return path


def _server(repo, state, **kw):
    cfg = config(repo, state_file=str(state), **kw)
    cfg.auth.admin_tokens = [ADMIN]
    return ServerThread(cfg)


def _served(s) -> str:
    with PolicyClient(s.target, token=ADMIN) as c:
        return c.act("grid", OBS).model_version


def test_restart_after_a_rollback_serves_the_rolled_back_to_version(source, tmp_path):
    repo, state = _repo(source, tmp_path / "models"), tmp_path / "state" / "runtime-state.json"
    with _server(repo, state) as s:
        assert _served(s) == "3"
        with AdminClient(s.target, token=ADMIN) as admin:
            assert admin.rollback("grid", "1").model.version == "1"
    saved = json.loads(state.read_text())
    assert saved["models"]["grid"] == {"serving": "1", "blocked": ["3"]}
    with _server(repo, state) as s:  # auto_serve is on: still 1, and 3 stays rolled back
        assert _served(s) == "1"
        assert s.server.repo.entries["grid"].blocked == {"3"}


def test_auto_serve_off_holds_across_restarts_and_new_versions_wait(source, tmp_path):
    repo, state = _repo(source, tmp_path / "models", (1,)), tmp_path / "state.json"
    models = {"grid": ModelConfig(auto_serve=False)}
    with _server(repo, state, models=models) as s:
        assert _served(s) == "1"
    copy_version(source, "grid", 1, 2, to_repo=repo)
    with _server(repo, state, models=models) as s:
        assert _served(s) == "1"  # nothing is promoted without an admin call, a restart included
        with AdminClient(s.target, token=ADMIN) as admin:
            assert admin.load("grid", "2").model.version == "2"
    with _server(repo, state, models=models) as s:
        assert _served(s) == "2"


def test_promotion_promotes_the_canaried_version_and_deployments_survive_restarts(source, tmp_path, caplog):
    repo, state = _repo(source, tmp_path / "models"), tmp_path / "state.json"
    models = {"grid": ModelConfig(auto_serve=False)}
    with _server(repo, state, models=models) as s, AdminClient(s.target, token=ADMIN) as admin:
        assert admin.rollback("grid", "1").model.version == "1"  # 3 is blocked, 2 and 3 on disk
        # an unversioned candidate canaries the served version (1): promoting it keeps 1, not the newest
        admin.set_deployment("grid", candidate="grid", canary_share=0.5)
        with caplog.at_level("INFO", logger="inspo.runtime.deployment"):
            promoted = admin.promote("grid")
        assert promoted.incumbent_version == "1" and _served(s) == "1"
        assert any("grid version 1 now answers every agent" in r.message for r in caplog.records)
        # a versioned candidate: its version is what serves after the promotion
        dep = admin.set_deployment("grid", candidate="grid:2", canary_share=1.0, shadow="grid:3")
        assert dep.candidate_version == "2" and dep.shadow_version == "3"
        with PolicyClient(s.target, token=ADMIN) as c:
            assert (
                c.act_raw(build_request("grid", np.zeros((1, OBS_DIM)), AGENTS[:1])).candidate_version == "2"
            )
    with _server(repo, state, models=models) as s, AdminClient(s.target, token=ADMIN) as admin:
        dep = admin.deployment("grid")  # the canary and shadow assignment came back
        assert (dep.candidate, dep.canary_share, dep.shadow) == ("grid:2", 1.0, "grid:3")
        assert _served(s) == "1"
        assert admin.promote("grid").incumbent_version == "2"
        assert _served(s) == "2"
    with _server(repo, state, models=models) as s, AdminClient(s.target, token=ADMIN) as admin:
        assert _served(s) == "2" and admin.deployment("grid").candidate == ""


def test_an_unreadable_state_file_is_a_clear_error(source, tmp_path):
    repo, state = _repo(source, tmp_path / "models", (1,)), tmp_path / "state.json"
    state.write_text("{not json")
    with pytest.raises(ValueError, match="state_file .*state.json: cannot read it"):
        _server(repo, state)


def test_canary_by_agent_list_survives_a_restart_and_unknown_agents_are_invalid(source, tmp_path):
    repo, state = _repo(source, tmp_path / "models", (1, 2)), tmp_path / "state.json"
    models = {"grid": ModelConfig(auto_serve=False)}
    copy_version(source, "grid", 1, 1, to_repo=tmp_path / "only1")
    with _server(tmp_path / "only1", state, models=models):
        pass  # the state now says version 1 serves; with 2 on disk too, 2 waits (auto_serve = false)
    with _server(repo, state, models=models) as s, AdminClient(s.target, token=ADMIN) as admin:
        with pytest.raises(grpc.RpcError) as err:
            admin.set_deployment("grid", candidate="grid:2", canary_agents=["tl_1", "ghost"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "canary_agents: unknown agents ['ghost']" in err.value.details()
        dep = admin.set_deployment("grid", candidate="grid:2", canary_agents=["tl_1"])
        assert list(dep.candidate_agents) == ["tl_1"] and list(dep.canary_agents) == ["tl_1"]
    with _server(repo, state, models=models) as s, AdminClient(s.target, token=ADMIN) as admin:
        with PolicyClient(s.target, token=ADMIN) as c:
            result = c.act("grid", OBS)
        assert result.arms == ["incumbent", "candidate", "incumbent"] and result.model_version == "1"
        assert admin.promote("grid").incumbent_version == "2"
        assert list(admin.deployment("grid").canary_agents) == []
