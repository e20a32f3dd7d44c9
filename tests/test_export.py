"""inspo export: ONNX parity with torch, the artifact's metadata, versioning, and refusing bad exports."""

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from serving_helpers import AGENTS, N_ACTIONS, OBS_DIM, export, make_run

from trainer.cli import main as cli
from trainer.export import ParityError, export_policy
from trainer.nets import ExportedPolicy, InferenceGraph, PolicyNet
from trainer.run_dir import load_policy

REQUIRED = [
    "schema_version", "name", "version", "env_id", "agent_ids", "obs_dim", "n_actions", "action_names",
    "obs_low", "obs_high", "obs_reference", "algorithm", "config", "dataset_fingerprint", "training_metrics",
    "evaluation_metrics", "onnx_sha256", "created_at", "package_version",
]  # fmt: skip


@pytest.mark.parametrize("shared", [True, False])
def test_onnx_matches_torch_at_several_batch_sizes(tmp_path, shared):
    run = make_run(tmp_path / "run", seed=3, shared=shared)
    folder = export(run, tmp_path / "models")
    policy, _ = load_policy(run)
    session = ort.InferenceSession(str(folder / "policy.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for batch in (1, 7, 64):
        obs = (rng.standard_normal((batch, OBS_DIM)) * 3).astype(np.float32)
        agent = rng.integers(0, len(AGENTS), batch).astype(np.int64)
        mask = rng.random((batch, N_ACTIONS)) < 0.6
        mask[:, 0] = True
        probs, action = session.run(["probs", "action"], {"obs": obs, "agent": agent, "action_mask": mask})
        with torch.no_grad():
            t_probs, t_action = ExportedPolicy(policy)(
                torch.from_numpy(obs), torch.from_numpy(agent), torch.from_numpy(mask)
            )
        assert np.abs(probs - t_probs.numpy()).max() < 1e-5
        assert (action == t_action.numpy()).all()
        assert probs[~mask].max(initial=0) == 0.0  # illegal actions: exactly zero, never NaN
        assert np.isfinite(probs).all()


def test_artifact_metadata_versioning_and_single_file(tmp_path):
    run = make_run(tmp_path / "run")
    v1 = export(run, tmp_path / "models")
    v2 = export(run, tmp_path / "models")
    assert (v1.name, v2.name) == ("1", "2")
    assert sorted(p.name for p in v1.iterdir()) == ["policy.json", "policy.onnx"]  # no external data
    meta = json.loads((v2 / "policy.json").read_text())
    assert [k for k in REQUIRED if k not in meta] == []
    assert meta["version"] == 2 and meta["name"] == "grid" and meta["agent_ids"] == AGENTS
    assert meta["onnx_sha256"] == hashlib.sha256((v2 / "policy.onnx").read_bytes()).hexdigest()
    assert meta["parity"]["max_abs_diff"] < 1e-5 and meta["parity"]["argmax_mismatches"] == 0
    with pytest.raises(FileExistsError):
        export(run, tmp_path / "models", version=2)
    assert sorted(p.name for p in (tmp_path / "models" / "grid").iterdir()) == ["1", "2"]  # no temp leftovers


class _DivergingGraph(InferenceGraph):
    """An export graph that differs from the policy (the bug parity checks exist to catch)."""

    def forward(self, obs, agent, action_mask):
        probs, _ = super().forward(obs, agent, action_mask)
        shifted = probs + torch.arange(probs.shape[-1], dtype=probs.dtype) * 0.5
        probs = shifted / shifted.sum(-1, keepdim=True)
        return probs, probs.argmax(-1)


def test_failed_parity_writes_nothing(tmp_path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr("trainer.export.InferenceGraph", _DivergingGraph)
    policy = PolicyNet(OBS_DIM, len(AGENTS), N_ACTIONS, hidden=(16,))
    with pytest.raises(ParityError, match="parity failed"):
        export_policy(policy, {"agent_ids": AGENTS}, tmp_path / "models", "grid", exporter="torchscript")
    assert list((tmp_path / "models" / "grid").iterdir()) == []


def test_cli_export(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert cli(["export", str(run), "--models", str(tmp_path / "m"), "--name", "lift", "--version", "7"]) == 0
    assert "exported lift version 7" in capsys.readouterr().out
    assert (tmp_path / "m" / "lift" / "7" / "policy.onnx").is_file()
    assert cli(["export", str(tmp_path / "nope"), "--models", str(tmp_path / "m"), "--name", "x"]) == 2


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("hidden", [(), (16,), (8, 8)])
def test_inference_graph_computes_the_policy(shared, hidden):
    """The rewritten export graph (row lookup for the agent one-hot, scalar mask) is the same function."""
    torch.manual_seed(1)
    policy = PolicyNet(
        OBS_DIM, len(AGENTS), N_ACTIONS, hidden=hidden, shared=shared,
        obs_mean=torch.randn(OBS_DIM), obs_std=torch.rand(OBS_DIM) + 0.1,
    ).eval()  # fmt: skip
    obs = torch.randn(64, OBS_DIM) * 3
    agent = torch.arange(64) % len(AGENTS)
    mask = torch.rand(64, N_ACTIONS) < 0.6
    mask[:, 1] = True
    with torch.no_grad():
        ref_probs, ref_action = ExportedPolicy(policy)(obs, agent, mask)
        probs, action = InferenceGraph(policy)(obs, agent, mask)
    assert torch.allclose(probs, ref_probs, atol=1e-6)
    assert torch.equal(action, ref_action) and (probs[~mask] < 1e-6).all()
