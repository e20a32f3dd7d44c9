"""``inspo data combine``: a collected log plus a real runtime's decision log with a gap -> one trainable log."""

from __future__ import annotations

import time

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from serving_helpers import ServerThread, config

from contract.logformat import LogMeta, LogWriter, sim_timestamp
from envs.registry import make_env
from runtime.config import DecisionLogConfig
from trainer.cli import main
from trainer.logs import LogValidationError, load_log
from trainer.logs.combine import combine_logs

torch.set_num_threads(1)

ENV_ID = "bridge"  # 2 agents, obs_dim 8, state_dim 8 (the decision log's joint observation: 16)
SKIPPED_T = 3  # the client never reports this step's outcome


def skipping_controller(url: str, env):
    """The closed-loop gRPC client, except that it forgets one mid-episode ReportOutcome."""
    from trainer.served_policies import GrpcController

    class Skipping(GrpcController):
        skip = True

        def observe(self, env, rewards, terminations, truncations):
            if self.skip and self.t - 1 == SKIPPED_T:
                return
            super().observe(env, rewards, terminations, truncations)

    return Skipping(url, env, deterministic=False, report_outcomes=True)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """A small collected log and a decision log written by a real runtime on loopback."""
    from trainer.collect import collect
    from trainer.export import export_policy
    from trainer.nets import PolicyNet
    from trainer.rollout import run_episode

    tmp = tmp_path_factory.mktemp("combine")
    collect(ENV_ID, tmp / "collected", controller="random", episodes=4, progress=False)

    env = make_env(ENV_ID)
    torch.manual_seed(0)
    policy = PolicyNet(env.obs_dim, len(env.possible_agents), env.n_actions, hidden=(16, 16))
    meta = {
        "env_id": ENV_ID,
        "agent_ids": list(env.possible_agents),
        "action_names": env.action_names,
        "obs_low": None,
        "obs_high": None,
        "algorithm": "untrained",
        "config": {},
        "dataset_fingerprint": "",
        "metrics": {},
    }
    export_policy(policy, meta, tmp / "models", "bridge", parity_samples=64)
    log_cfg = DecisionLogConfig(dir=str(tmp / "decisions"), outcome_timeout_s=1.0, flush_interval_s=0.2)
    server = ServerThread(config(tmp / "models", decision_log=log_cfg))
    try:
        controller = skipping_controller(f"grpc://{server.target}/bridge", env)
        gapped = run_episode(env, controller, seed=0)
        gapped_id = controller.episode_id
        controller.skip = False
        whole = run_episode(env, controller, seed=1)
        whole_id = controller.episode_id
        controller.close()
        parked = tmp / "decisions" / "bridge" / "no-outcome" / "agent_steps"
        deadline = time.monotonic() + 20
        while not list(parked.rglob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.1)  # after outcome_timeout_s the runtime writes the unreported step there
    finally:
        server.stop()
    assert gapped.length > SKIPPED_T + 2, "the gap must lie inside the episode"
    return {
        "collected": tmp / "collected",
        "decisions": tmp / "decisions" / "bridge",
        "gapped": (gapped_id, gapped.length),
        "whole": (whole_id, whole.length),
        "tmp": tmp,
    }


def count_rows(log) -> int:
    return ds.dataset(log / "agent_steps", format="parquet").count_rows()


def test_decision_log_with_a_gap_combines_with_a_collected_log_and_trains(logs, capsys):
    collected, decisions, tmp = logs["collected"], logs["decisions"], logs["tmp"]
    gapped_id, gapped_len = logs["gapped"]
    whole_id, whole_len = logs["whole"]
    n_agents = 2
    # the runtime parked the unreported step in no-outcome/, and the gap makes the decision log unloadable
    parked = ds.dataset(decisions / "no-outcome" / "agent_steps", format="parquet").to_table().to_pandas()
    assert parked.t.tolist() == [SKIPPED_T] * n_agents and (parked.reward == 0).all()
    with pytest.raises(LogValidationError, match=f"gap in t: no step t={SKIPPED_T}"):
        load_log(decisions)
    rows_in = count_rows(collected) + count_rows(decisions)
    assert count_rows(decisions) == (gapped_len - 1 + whole_len) * n_agents  # the missing step

    out = tmp / "combined"
    capsys.readouterr()
    assert main(["data", "combine", "--out", str(out), str(collected), str(decisions)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the terminal width
    assert "joint observation" in printed and "episodes split" in printed

    data = load_log(out)
    collected_data = load_log(collected)
    assert data.n_steps * n_agents == rows_in == count_rows(out)
    assert data.n_episodes == collected_data.n_episodes + 3  # the gapped episode is now two
    lengths = dict(zip(data.episode_ids, data.filled.sum(axis=1).tolist(), strict=True))
    assert lengths[f"{gapped_id}~0"] == SKIPPED_T
    assert lengths[f"{gapped_id}~1"] == gapped_len - SKIPPED_T - 1
    assert lengths[whole_id] == whole_len and gapped_id not in lengths
    # the cut run ends truncated, never terminated: training does not bootstrap across the gap
    cut = data.episode_ids.index(f"{gapped_id}~0")
    assert data.truncated[cut, SKIPPED_T - 1] and not data.terminated[cut].any()
    # the second run starts at the step after the gap, with t renumbered from 0
    decision_rows = ds.dataset(decisions / "agent_steps", format="parquet").to_table().to_pandas()
    after_gap = decision_rows[(decision_rows.episode_id == gapped_id) & (decision_rows.t == SKIPPED_T + 1)]
    second = data.episode_ids.index(f"{gapped_id}~1")
    assert np.allclose(data.obs[second, 0], np.stack(after_gap.sort_values("agent_id").obs.tolist()))
    # state_dim differed (8 vs 16): every episode's state is now the joint observation
    assert data.state_dim == n_agents * data.obs_dim == 16
    filled = data.filled
    assert np.array_equal(data.states[filled], data.obs[filled].reshape(-1, 16))
    # the collected episodes keep their actions, rewards and probabilities exactly
    same = [data.episode_ids.index(e) for e in collected_data.episode_ids]
    assert np.array_equal(data.actions[same], collected_data.actions)
    assert np.array_equal(data.team_rewards[same], collected_data.team_rewards)
    assert np.array_equal(data.behavior_prob[same], collected_data.behavior_prob, equal_nan=True)

    run = tmp / "run"
    args = ["train", "--algo", "bc", "--data", str(out), "--out", str(run), "--seed", "0"]
    assert main([*args, "--set", "iterations=3", "--set", "hidden=16,16"]) == 0
    assert (run / "policy" / "policy.json").exists()


# -- small hand-made logs -------------------------------------------------------------------------------


def write_log(path, episodes, n_actions=3, obs_dim=2, state_dim=5, env_id="toy", agents=("a0", "a1")):
    """``episodes``: {episode_id: [(t, agents present at t) or t, ...]}; returns the path."""
    meta = LogMeta(env_id, obs_dim, n_actions, list(agents), state_dim)
    rng = np.random.default_rng(len(str(path)))
    with LogWriter(path, meta) as writer:
        for episode_id, steps in episodes.items():
            for i, step in enumerate(steps):
                t, present = step if isinstance(step, tuple) else (step, list(agents))
                n = len(present)
                writer.add_step(
                    episode_id=episode_id,
                    t=t,
                    obs=rng.normal(size=(n, obs_dim)).astype(np.float32),
                    actions=np.zeros(n, np.int32),
                    masks=np.ones((n, n_actions), bool),
                    rewards=np.full(n, float(t), np.float32),
                    terminated=np.full(n, i == len(steps) - 1),
                    truncated=np.zeros(n, bool),
                    behavior_probs=np.full(n, 0.5, np.float32),
                    controller="rule",
                    model_version=None,
                    ts=sim_timestamp(t),
                    state=rng.normal(size=state_dim).astype(np.float32),
                    team_reward=float(t),
                    agent_ids=list(present),
                )
    return path


def test_mismatched_n_actions_is_an_error_naming_the_log(tmp_path, capsys):
    a = write_log(tmp_path / "a", {"e0": [0, 1]}, n_actions=3)
    b = write_log(tmp_path / "b", {"e1": [0, 1]}, n_actions=4)
    with pytest.raises(ValueError, match=r"b: n_actions=4 differs from n_actions=3 of .*a"):
        combine_logs(tmp_path / "out", [a, b])
    assert main(["data", "combine", "--out", str(tmp_path / "out"), str(a), str(b)]) == 2
    assert f"{b}: n_actions=4" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    c = write_log(tmp_path / "c", {"e2": [0]}, agents=("a0", "a9"))
    with pytest.raises(ValueError, match=r"c: agent_ids \['a0', 'a9'\] differ"):
        combine_logs(tmp_path / "out", [a, c])
    d = write_log(tmp_path / "d", {"e3": [0]}, env_id="other")
    with pytest.raises(ValueError, match=r"d: env_id 'other' differs.*--env-id"):
        combine_logs(tmp_path / "out", [a, d])
    assert combine_logs(tmp_path / "out", [a, d], env_id="toy").meta.env_id == "toy"


def test_state_auto_rebuilds_the_joint_observation_when_state_dims_differ(tmp_path):
    a = write_log(tmp_path / "a", {"e0": [0, 1, 2]}, state_dim=5)
    b = write_log(tmp_path / "b", {"e1": [0, 1]}, state_dim=4)  # 2 agents x obs_dim 2
    result = combine_logs(tmp_path / "auto", [a, b])
    assert result.state == "joint-obs" and "state_dim differ" in result.notes[0]
    data = load_log(tmp_path / "auto")
    assert data.state_dim == 4
    assert np.array_equal(data.states[data.filled], data.obs[data.filled].reshape(-1, 4))
    assert data.team_rewards[data.filled].tolist() == [0, 1, 2, 0, 1]  # env team rewards are kept
    with pytest.raises(ValueError, match="state_dim differ"):
        combine_logs(tmp_path / "env", [a, b], state="env")
    # equal state_dims: each log keeps its own state, unchanged
    c = write_log(tmp_path / "c", {"e2": [0, 1]}, state_dim=5)
    assert combine_logs(tmp_path / "same", [a, c]).state == "env"
    same, original = load_log(tmp_path / "same"), load_log(a)
    assert np.array_equal(same.states[0], original.states[0])
    assert combine_logs(tmp_path / "joint", [a, c], state="joint-obs").meta.state_dim == 4


def test_partial_steps_are_dropped_and_short_runs_left_out(tmp_path):
    # e0: agent a1 missing at t=2, no t=5 at all; e1: complete; e2: only t=1.. (no t=0)
    log = write_log(
        tmp_path / "log",
        {"e0": [0, 1, (2, ["a0"]), 3, 4, 6], "e1": [0, 1], "e2": [1, 2]},
    )
    result = combine_logs(tmp_path / "out", [log], min_length=2)
    (summary,) = result.inputs
    assert (summary.episodes_in, summary.steps_in, summary.steps_incomplete) == (3, 10, 1)
    assert (summary.episodes_split, summary.runs_short, summary.steps_short) == (1, 1, 1)
    data = load_log(tmp_path / "out")
    lengths = dict(zip(data.episode_ids, data.filled.sum(axis=1).tolist(), strict=True))
    assert lengths == {"e0~0": 2, "e0~1": 2, "e1": 2, "e2": 2}  # e0~2 (t=6 alone) is too short
    e0 = data.episode_ids.index("e0~1")  # t=3, 4 -> 0, 1; cut before t=6: truncated, not terminated
    assert data.rewards[e0, :2, 0].tolist() == [3.0, 4.0]
    assert data.truncated[e0, 1] and not data.terminated[e0, 1]
    assert data.terminated[data.episode_ids.index("e1"), 1]  # an uncut episode keeps its flags
    assert summary.rows_out == 16 and result.rows == 16


def test_colliding_episode_ids_and_an_existing_out_are_refused(tmp_path):
    a = write_log(tmp_path / "a", {"e0": [0, 1]})
    b = write_log(tmp_path / "b", {"e0": [0]})
    with pytest.raises(ValueError, match=r"episode_id 'e0' would appear also in"):
        combine_logs(tmp_path / "out", [a, b])
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(ValueError, match="already exists"):
        combine_logs(tmp_path / "a", [b])
