"""Every kind of bad log fails with a message naming the file, the column, the row and the expectation.

Each case writes real Parquet files with plain pyarrow (not our writer), breaks one thing, and
loads the directory.
"""

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from contract.logformat import AGENT_STEPS_FIELDS, ENV_STEPS_FIELDS, LogMeta
from trainer.logs import LogValidationError, load_log

META = LogMeta("test", obs_dim=2, n_actions=3, agent_ids=["a", "b"], state_dim=1)
TYPES = {f.name: f.type for f in AGENT_STEPS_FIELDS + ENV_STEPS_FIELDS}


def agent_rows(episodes=("e0", "e1"), steps=3) -> dict[str, list]:
    """Valid agent_steps columns: every episode has ``steps`` steps of both agents."""
    cols: dict[str, list] = {f.name: [] for f in AGENT_STEPS_FIELDS}
    for e, episode in enumerate(episodes):
        for t in range(steps):
            for i, agent in enumerate(META.agent_ids):
                values = {
                    "episode_id": episode,
                    "t": t,
                    "agent_id": agent,
                    "obs": [float(e), float(t + i)],
                    "action": (t + i) % 2,
                    "action_mask": [True, True, False],
                    "reward": -1.0,
                    "terminated": t == steps - 1,
                    "truncated": False,
                    "behavior_prob": 0.5,
                    "controller": "rule",
                    "model_version": None,
                    "ts": dt.datetime(2026, 1, 1, 0, 0, t),
                }
                for k, v in values.items():
                    cols[k].append(v)
    return cols


def env_rows(episodes=("e0", "e1"), steps=3) -> dict[str, list]:
    cols: dict[str, list] = {"episode_id": [], "t": [], "state": [], "team_reward": []}
    for episode in episodes:
        for t in range(steps):
            cols["episode_id"].append(episode)
            cols["t"].append(t)
            cols["state"].append([float(t)])
            cols["team_reward"].append(-1.0)
    return cols


def write(root: Path, kind: str, cols: dict, name="part-0.parquet", meta: dict | None = None) -> Path:
    """Write columns with the documented types, except columns given as ready pyarrow arrays."""
    arrays = {k: v if isinstance(v, pa.Array) else pa.array(v, type=TYPES[k]) for k, v in cols.items()}
    table = pa.table(arrays).replace_schema_metadata(meta if meta is not None else META.to_metadata())
    folder = root / kind / "site=s" / "date=2026-01-01"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)
    return folder / name


def write_log(root: Path, agents: dict | None = None, envs: dict | None = None) -> Path:
    """A log directory; returns the agent_steps file."""
    path = write(root, "agent_steps", agents if agents is not None else agent_rows())
    write(root, "env_steps", envs if envs is not None else env_rows())
    return path


def expect_error(root: Path, file: Path, column: str | None, row: int | None, *phrases: str) -> str:
    with pytest.raises(LogValidationError) as info:
        load_log(root)
    err = info.value
    message = str(err)
    assert err.file == str(file) and str(file) in message
    assert err.column == column and err.row == row
    if column is not None:
        assert f"column {column!r}" in message
    if row is not None:
        assert f"row {row}" in message
    for phrase in phrases:
        assert re.search(phrase, message), f"{phrase!r} not in {message!r}"
    return message


def test_the_valid_log_loads(tmp_path):
    write_log(tmp_path)
    data = load_log(tmp_path)
    assert data.obs.shape == (2, 3, 2, 2) and data.filled.all()
    assert data.states[1, 2].tolist() == [2.0] and data.terminated[:, 2].all()


def test_missing_column(tmp_path):
    cols = agent_rows()
    del cols["reward"]
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "reward", None, "missing column", "expected type float")


def test_missing_optional_columns_is_fine_and_means_unknown_probabilities(tmp_path):
    cols = agent_rows()
    for name in ("behavior_prob", "controller", "model_version", "ts"):
        del cols[name]
    write_log(tmp_path, cols)
    assert np.isnan(load_log(tmp_path).behavior_prob).all()


def test_wrong_dtype(tmp_path):
    cols = agent_rows()
    cols["action"] = pa.array(np.asarray(cols["action"], dtype=np.float64))
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "action", None, "wrong dtype double", "expected int32")


def test_int64_t_beyond_int32_range(tmp_path):
    cols = agent_rows()
    cols["t"] = pa.array([2**40] + cols["t"][1:], type=pa.int64())
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "t", None, "cannot convert int64 to int32")


def test_obs_length_differs_from_obs_dim(tmp_path):
    cols = agent_rows()
    cols["obs"][4] = [1.0, 2.0, 3.0]
    path = write_log(tmp_path, cols)
    message = expect_error(tmp_path, path, "obs", 4, "length 3", "obs_dim=2")
    assert "episode='e0', t=2, agent='a'" in message


def test_action_mask_length_differs_from_n_actions(tmp_path):
    cols = agent_rows()
    cols["action_mask"][7] = [True]
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "action_mask", 7, "length 1", "n_actions=3")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_obs(tmp_path, bad):
    cols = agent_rows()
    cols["obs"][5] = [0.0, bad]
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "obs", 5, "NaN or Inf")


def test_nan_reward_and_counts_other_bad_rows(tmp_path):
    cols = agent_rows()
    cols["reward"][2] = cols["reward"][9] = float("nan")
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "reward", 2, "NaN or Inf", "1 more rows")


def test_null_in_a_required_column(tmp_path):
    cols = agent_rows()
    cols["terminated"][3] = None
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "terminated", 3, "null value")


def test_action_outside_its_mask(tmp_path):
    cols = agent_rows()
    cols["action"][3] = 2  # mask is [T, T, F]
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "action", 3, r"action 2 is not allowed by its action_mask \[1, 1, 0\]")


def test_action_outside_the_action_range(tmp_path):
    cols = agent_rows()
    cols["action"][6] = 7
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "action", 6, r"action 7 outside 0\.\.2")


def test_negative_t(tmp_path):
    cols = agent_rows()
    cols["t"][1] = -1
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "t", 1, "negative t=-1")


def test_repeated_t_is_a_duplicate_key(tmp_path):
    cols = agent_rows()
    cols["t"][2], cols["t"][3] = 0, 0  # step 1 of e0 claims to be step 0 again
    path = write_log(tmp_path, cols)
    expect_error(
        tmp_path, path, "t", 2, "repeated t", "duplicate", f"first seen at {re.escape(str(path))} row 0"
    )


def test_duplicate_key_across_files_names_both(tmp_path):
    first = write_log(tmp_path)
    dup = {k: v[:2] for k, v in agent_rows().items()}  # e0, t=0 again
    second = write(tmp_path, "agent_steps", dup, name="part-1.parquet")
    expect_error(tmp_path, second, "t", 0, "duplicate", re.escape(f"{first} row 0"))


def test_gap_in_t(tmp_path):
    cols = {k: v[:2] + v[4:] for k, v in agent_rows().items()}  # e0 loses t=1
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "t", 2, "gap in t: no step t=1", r"0\.\.2")


def test_t_not_starting_at_zero_is_a_gap(tmp_path):
    cols = {k: v[2:] for k, v in agent_rows().items()}  # e0 starts at t=1
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "t", 0, "no step t=0")


def test_an_agent_missing_at_a_step(tmp_path):
    cols = {k: v[:3] + v[4:] for k, v in agent_rows().items()}  # agent b of e0, t=1 gone
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "agent_id", 3, "agent 'b' has no row at t=1")


def test_unknown_agent(tmp_path):
    cols = agent_rows()
    cols["agent_id"][8] = "c"
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "agent_id", 8, "not in the metadata's agent_ids")


@pytest.mark.parametrize("bad", [0.0, 1.5, float("nan")])
def test_behavior_prob_must_be_a_probability_or_null(tmp_path, bad):
    cols = agent_rows()
    cols["behavior_prob"][4] = bad
    path = write_log(tmp_path, cols)
    expect_error(tmp_path, path, "behavior_prob", 4, r"not a probability in \(0, 1\]")


def test_truncated_file(tmp_path):
    path = write_log(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(tmp_path, path, None, None, "not a readable Parquet file", "truncated")


def test_non_parquet_file(tmp_path):
    path = write_log(tmp_path)
    path.write_text("episode_id,t\ne0,0\n")
    expect_error(tmp_path, path, None, None, "not a readable Parquet file")


def test_hidden_temp_files_of_a_crashed_writer_are_skipped(tmp_path):
    path = write_log(tmp_path)
    (path.parent / ".part-1.parquet.tmp").write_bytes(path.read_bytes()[:100])
    (path.parent / "_part-2.parquet").write_bytes(b"half")
    assert load_log(tmp_path).n_episodes == 2


def test_schema_version_from_the_future(tmp_path):
    meta = META.to_metadata() | {b"schema_version": b"2"}
    path = write(tmp_path, "agent_steps", agent_rows(), meta=meta)
    expect_error(tmp_path, path, None, None, "schema_version 2 is newer", "upgrade")


def test_missing_metadata(tmp_path):
    meta = {k: v for k, v in META.to_metadata().items() if k != b"obs_dim"}
    path = write(tmp_path, "agent_steps", agent_rows(), meta=meta)
    expect_error(tmp_path, path, None, None, "no 'obs_dim'")


def test_files_that_disagree_on_metadata(tmp_path):
    write_log(tmp_path)
    other = META.to_metadata() | {b"n_actions": b"4"}
    rows = agent_rows(episodes=("e2",))
    rows["action_mask"] = [[True, True, False, False]] * len(rows["t"])
    second = write(tmp_path, "agent_steps", rows, name="part-1.parquet", meta=other)
    expect_error(tmp_path, second, None, None, "n_actions=4 differs from n_actions=3")


def test_env_steps_state_length(tmp_path):
    envs = env_rows()
    envs["state"][4] = [1.0, 2.0]
    write_log(tmp_path, envs=envs)
    env_file = tmp_path / "env_steps" / "site=s" / "date=2026-01-01" / "part-0.parquet"
    expect_error(tmp_path, env_file, "state", 4, "state_dim=1")


def test_env_steps_missing_a_step(tmp_path):
    envs = {k: v[:4] + v[5:] for k, v in env_rows().items()}  # e1, t=1 gone
    write_log(tmp_path, envs=envs)
    expect_error(tmp_path, tmp_path / "env_steps", "t", None, "no env_steps row for episode 'e1' t=1")


def test_env_steps_for_an_unknown_episode(tmp_path):
    envs = env_rows()
    envs["episode_id"][0] = "zz"
    write_log(tmp_path, envs=envs)
    env_file = tmp_path / "env_steps" / "site=s" / "date=2026-01-01" / "part-0.parquet"
    expect_error(tmp_path, env_file, "episode_id", 0, "no agent_steps rows")


def test_empty_or_missing_log(tmp_path):
    with pytest.raises(LogValidationError, match="no agent_steps part files"):
        load_log(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_log(tmp_path / "nope")
