"""The observation-drift gauge and its alert (issue 20, item 8; docs/operations.md "Observation drift").

A down-peak elevator model is served on a real loopback server; real simulator observations are driven
through it: a normal down-peak run (other seeds, another controller) must keep the alert condition of
deploy/prometheus/alerts.yml quiet, and the same model served at lunch must fire it.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from serving_helpers import ServerThread, config

from contract.obs_reference import build_reference
from envs.controllers import build_controller
from envs.registry import make_env
from runtime.client import PolicyClient
from runtime.drift import DriftReference
from runtime.model import ModelLoadError, load_version
from trainer.rollout import action_rng

ROOT = Path(__file__).resolve().parents[1]
HOURS = 0.25  # short episodes: the profile's whole shape in ~600 decisions


def observations(env_id: str, seeds, controller: str) -> list[np.ndarray]:
    """Every step's ``[cars, obs_dim]`` observations of real episodes (what a site sends each step)."""
    steps = []
    for seed in seeds:
        env = make_env(env_id, hours=HOURS)
        ctrl = build_controller(env_id, controller)
        obs, infos = env.reset(seed=seed)
        ctrl.reset(env, seed)
        rng = action_rng(seed)
        while True:
            steps.append(np.stack([obs[a] for a in env.possible_agents]))
            actions, _ = ctrl.act(env, obs, infos, rng)
            obs, rewards, terms, truncs, infos = env.step(actions)
            ctrl.observe(env, rewards, terms, truncs)
            if not env.agents or all(terms.get(a) or truncs.get(a) for a in env.possible_agents):
                break
    return steps


def alert_threshold() -> float:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"][0]["rules"]
    expr = next(r["expr"] for r in rules if r["alert"] == "InspoRuntimeObservationDrift")
    match = re.fullmatch(
        r"\s*max by \(instance, model\) \(inspo_runtime_obs_drift_psi\) > ([0-9.]+)\s*", expr
    )
    assert match, f"the drift alert changed shape: {expr!r}"
    return float(match.group(1))


def drift_gauges(port: int, model: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    found = re.findall(rf'inspo_runtime_obs_drift_psi\{{group="(\w+)",model="{model}"\}} (\S+)', text)
    return {group: float(value) for group, value in found}


@pytest.fixture(scope="module")
def downpeak_model(tmp_path_factory):
    """A model repository with a down-peak elevator policy whose policy.json carries the training reference."""
    import torch

    from trainer.export import export_policy
    from trainer.nets import PolicyNet

    env_id = "elevator:cb10x4:downpeak"
    train = []
    for seed, ctrl in [(0, "etd@eps=0.2"), (1, "etd@eps=0.2"), (2, "sector@eps=0.2"), (3, "random")]:
        train += observations(env_id, [seed], ctrl)
    env = make_env(env_id, hours=HOURS)
    groups, clock = env.obs_groups()
    flat = np.concatenate(train)
    reference = build_reference(flat, groups, clock, episode_rows=len(flat) // 4)
    torch.manual_seed(0)
    policy = PolicyNet(env.obs_dim, len(env.possible_agents), env.n_actions, hidden=(16,))
    meta = {"env_id": env_id, "agent_ids": list(env.possible_agents), "obs_reference": reference}
    repo = tmp_path_factory.mktemp("drift") / "models"
    export_policy(policy, meta, repo, "elevator", parity_samples=64)
    return repo, list(env.possible_agents), reference


def drive(client: PolicyClient, steps: list[np.ndarray], agents: list[str]) -> None:
    for obs in steps:
        client.act("elevator", obs.astype(np.float32), agents, packed=True)


def test_drift_alert_quiet_on_a_normal_run_and_firing_at_lunch(downpeak_model):
    repo, agents, reference = downpeak_model
    threshold = alert_threshold()
    window = reference["episode_rows"]
    normal = observations("elevator:cb10x4:downpeak", [100, 101], "nearest-car")  # unseen seeds, other rule
    lunch = observations("elevator:cb10x4:lunch", [100, 101, 102], "etd")
    assert len(normal) * len(agents) > window and len(lunch) * len(agents) > window
    with ServerThread(config(repo), metrics=True) as s, PolicyClient(s.target) as c:
        port = s.server.metrics_port
        full = window // len(agents) + 1
        drive(c, normal[: full - 10], agents)
        assert drift_gauges(port, "elevator") == {}, "no PSI before the window is full"
        quiet = []  # scraped every 100 steps of the normal run once the window is full
        for start in range(full - 10, len(normal), 100):
            drive(c, normal[start : start + 100], agents)
            quiet.append(drift_gauges(port, "elevator"))
        drive(c, lunch, agents)
        fired = drift_gauges(port, "elevator")
    assert set(quiet[-1]) == {"car", "hall_calls", "other_cars", "context", "assignment"}
    worst = max(max(q.values()) for q in quiet)
    assert worst < threshold, f"a normal down-peak run fires the drift alert: {quiet}"
    assert max(fired.values()) > threshold, f"a down-peak model served at lunch does not fire: {fired}"
    print(f"normal run: worst group PSI {worst:.3f} over {len(quiet)} scrapes; lunch: {fired}")


def test_reference_bins_flags_per_value_and_psi_is_zero_on_the_training_data():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=5000), rng.random(5000) < 0.05, np.zeros(5000)])
    ref = build_reference(x, episode_rows=100)
    assert ref["edges"][1] == [0.5] and ref["expected"][1][1] == pytest.approx(0.05, abs=0.01)
    parsed = DriftReference.from_meta({"obs_reference": ref}, 3)
    assert parsed.feature_psi(x.astype(np.float32)).max() < 1e-3
    assert parsed.window_rows() == 1024  # at least MIN_WINDOW rows, however short the episodes
    shifted = x.copy()
    shifted[:, 1] = rng.random(5000) < 0.3  # the flag is set six times as often
    assert parsed.feature_psi(shifted.astype(np.float32))[1] > 0.4  # 0.25 ln 6 + 0.25 ln(0.95/0.7) = 0.52


def test_a_malformed_reference_rejects_the_version_and_an_old_model_loads(downpeak_model, tmp_path):
    import shutil

    repo, _, _ = downpeak_model
    src = repo / "elevator" / "1"
    old, bad = tmp_path / "elevator" / "1", tmp_path / "elevator" / "2"
    shutil.copytree(src, old)
    shutil.copytree(src, bad)
    meta = json.loads((src / "policy.json").read_text())
    (old / "policy.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "obs_reference"}))
    assert load_version(old, "elevator", config(tmp_path).model("elevator")).drift_reference is None
    meta["version"] = 2
    meta["obs_reference"]["expected"][3] = [1.0]  # fewer shares than bins
    (bad / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"policy.json: obs_reference: feature 3"):
        load_version(bad, "elevator", config(tmp_path).model("elevator"))
