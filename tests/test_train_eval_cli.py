"""``inspo train`` / ``inspo eval`` through the real log path, and ``load_controller``'s dispatch."""

import json

import numpy as np
import pytest
import torch

from trainer.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def xor_log(tmp_path_factory):
    from trainer.collect import collect

    path = tmp_path_factory.mktemp("logs") / "xor-balanced"
    collect("xor", path, controller="balanced", episodes=200, progress=False)
    return path


def _train_bc(log, out, seed):
    args = ["train", "--algo", "bc", "--data", str(log), "--out", str(out), "--seed", str(seed)]
    args += ["--set", "iterations=5", "--set", "hidden=16,16", "--eval-every", "5", "--eval-episodes", "2"]
    assert main(args) == 0


def test_train_writes_a_run_directory_with_policy_metrics_and_checkpoint(xor_log, tmp_path):
    _train_bc(xor_log, tmp_path / "run", seed=0)
    meta = json.loads((tmp_path / "run" / "policy" / "policy.json").read_text())
    assert meta["env_id"] == "xor" and meta["agent_ids"] == ["agent_0", "agent_1"]
    assert meta["algorithm"] == "bc" and meta["obs_low"] == [1.0] and meta["obs_high"] == [1.0]
    assert meta["dataset_fingerprint"]
    # the drift reference: xor's one constant feature is one bin holding every training row
    ref = meta["obs_reference"]
    assert ref["edges"] == [[]] and ref["expected"] == [[1.0]] and ref["groups"] == {"all": [0, 1]}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["iteration"] == 5 and "eval/return" in rows[-1] and "bc_loss" in rows[-1]
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    # a second train into the same run without --resume is refused
    assert main(["train", "--algo", "bc", "--data", str(xor_log), "--out", str(tmp_path / "run")]) != 0


def test_load_controller_resolves_rule_specs_and_run_directories(xor_log, tmp_path):
    from envs.registry import make_env
    from trainer.policies import TorchPolicyController, load_controller
    from trainer.rollout import run_episode

    _train_bc(xor_log, tmp_path / "run", seed=0)
    rule = load_controller("balanced", "xor")
    assert not isinstance(rule, TorchPolicyController)
    learned = load_controller(str(tmp_path / "run"), "xor")
    assert isinstance(learned, TorchPolicyController) and learned.deterministic
    sampled = load_controller(f"{tmp_path / 'run'}:sample", "xor")
    assert not sampled.deterministic
    env = make_env("xor")
    dist = sampled.distribution(env, *env.reset(seed=1))
    assert all(np.isclose(p.sum(), 1.0) and (p > 0).all() for p in dist.values())
    assert run_episode(env, rule, 10_000).episode_return == 1.0  # (A,B) or (B,A) only
    with pytest.raises(ValueError, match="trained on env"):
        load_controller(str(tmp_path / "run"), "mne")
    # a run whose observation width differs from the env's (an env's observation changed since) fails
    # with a message naming both widths, not inside torch
    env.obs_dim += 1
    with pytest.raises(
        ValueError, match=f"observations of {env.obs_dim - 1} values, env xor gives {env.obs_dim}"
    ):
        learned.distribution(env, *env.reset(seed=1))


def test_eval_writes_table_csv_json_and_plots_with_seed_groups(xor_log, tmp_path):
    for seed in (0, 1):
        _train_bc(xor_log, tmp_path / f"bc-s{seed}", seed=seed)
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--env",
            "xor",
            "--seeds",
            "4",
            "--out",
            str(out),
            "--controller",
            "balanced",
            "--controller",
            str(tmp_path / "bc-s*"),
            "--stochastic",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())["summary"]
    by_name = {row["controller"]: row for row in summary}
    assert by_name["balanced"]["return_mean"] == 1.0 and by_name["balanced"]["episodes"] == 4
    group = by_name[str(tmp_path / "bc-s*")]
    assert group["runs"] == 2 and group["episodes"] == 8 and "return_std_seeds" in group
    assert (out / "returns.png").stat().st_size > 1000
    lines = (out / "episodes.csv").read_text().splitlines()
    assert len(lines) == 1 + 4 + 8
    seeds = {line.split(",")[2] for line in lines[1:]}
    assert seeds == {"10000", "10001", "10002", "10003"}  # evaluation seeds, the same for everyone
