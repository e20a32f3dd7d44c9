"""Logs end to end: round trip, foreign readers/writers, and `inspo collect` + `inspo data inspect`."""

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract.logformat import LogMeta, LogWriter, sim_timestamp
from envs.games.bridge import optimal_return
from trainer.cli import main
from trainer.logs import load_log

GAME_DATASETS = [
    ("xor", "balanced"),
    ("xor", "uniform"),
    ("mne", "balanced"),
    ("mne", "imbalanced"),
    ("bridge", "optimal"),
    ("bridge", "mixed"),
]


# -- round trip -----------------------------------------------------------------------------------


def random_log(rng: np.random.Generator, n_agents: int, obs_dim: int, n_actions: int, state_dim: int):
    """Episodes of random lengths with random legal actions; returns the expected padded arrays."""
    n_ep = int(rng.integers(1, 6))
    lengths = rng.integers(1, 7, size=n_ep)
    steps = int(lengths.max())
    shape = (n_ep, steps, n_agents)
    masks = rng.random((*shape, n_actions)) < 0.6
    masks[..., int(rng.integers(n_actions))] = True
    actions = np.zeros(shape, dtype=np.int64)
    for idx in np.ndindex(shape):
        actions[idx] = rng.choice(np.flatnonzero(masks[idx]))
    filled = np.arange(steps)[None, :] < lengths[:, None]
    known = rng.random(n_ep) < 0.7  # some episodes log no behaviour probabilities
    expected = {
        "obs": rng.normal(size=(*shape, obs_dim)).astype(np.float32),
        "actions": actions,
        "masks": masks,
        "rewards": rng.normal(size=shape).astype(np.float32),
        "team_rewards": rng.normal(size=(n_ep, steps)).astype(np.float32),
        "states": rng.normal(size=(n_ep, steps, state_dim)).astype(np.float32),
        "behavior_prob": np.where(known[:, None, None], rng.uniform(0.01, 1.0, size=shape), np.nan).astype(
            np.float32
        ),
        "term_agent": rng.random(shape) < 0.3,
        "trunc_agent": rng.random(shape) < 0.2,
        "filled": filled,
    }
    for key in ("obs", "actions", "masks", "rewards", "team_rewards", "states", "behavior_prob"):
        value = expected[key]
        pad = ~filled.reshape(filled.shape + (1,) * (value.ndim - 2))
        expected[key] = np.where(pad, np.nan if key == "behavior_prob" else 0, value).astype(value.dtype)
    for key in ("term_agent", "trunc_agent"):
        expected[key] &= filled[..., None]
    return expected, lengths


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_agents=st.integers(1, 4),
    obs_dim=st.integers(1, 5),
    n_actions=st.integers(1, 5),
    state_dim=st.integers(0, 3),
    rows_per_file=st.integers(3, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_write_then_read_gives_identical_arrays(
    tmp_path_factory, n_agents, obs_dim, n_actions, state_dim, rows_per_file, seed
):
    rng = np.random.default_rng(seed)
    want, lengths = random_log(rng, n_agents, obs_dim, n_actions, state_dim)
    agent_ids = [f"a{i}" for i in range(n_agents)]
    meta = LogMeta("roundtrip", obs_dim, n_actions, agent_ids, state_dim)
    root = tmp_path_factory.mktemp("log")
    with LogWriter(root, meta, rows_per_file=rows_per_file) as writer:
        for e in rng.permutation(len(lengths)):  # file order must not matter
            for t in range(lengths[e]):
                probs = want["behavior_prob"][e, t]
                writer.add_step(
                    episode_id=f"ep-{e:03d}",
                    t=t,
                    obs=want["obs"][e, t],
                    actions=want["actions"][e, t],
                    masks=want["masks"][e, t],
                    rewards=want["rewards"][e, t],
                    terminated=want["term_agent"][e, t],
                    truncated=want["trunc_agent"][e, t],
                    behavior_probs=None if np.isnan(probs).all() else probs,
                    controller="c",
                    model_version=None,
                    ts=sim_timestamp(t * 6 * 3600.0),  # crosses midnight: episodes split over files
                    state=want["states"][e, t],
                    team_reward=float(want["team_rewards"][e, t]),
                )
            writer.end_episode()
    got = load_log(root)
    assert got.episode_ids == [f"ep-{e:03d}" for e in range(len(lengths))]
    assert got.agent_ids == agent_ids
    for key in ("obs", "actions", "masks", "rewards", "team_rewards", "states", "behavior_prob", "filled"):
        np.testing.assert_array_equal(getattr(got, key), want[key], err_msg=key)
    all_term = want["term_agent"].all(axis=2) & want["filled"]
    np.testing.assert_array_equal(got.terminated, all_term)
    np.testing.assert_array_equal(got.truncated, want["trunc_agent"].any(axis=2) & ~all_term)
    assert got.obs.dtype == np.float32 and got.actions.dtype == np.int64 and got.masks.dtype == bool


def test_bulk_tables_without_env_steps_load_with_the_derived_state_and_a_writer_does_not_mix(tmp_path):
    n, obs_dim, k = 3, 2, 4
    rng = np.random.default_rng(0)
    obs = rng.random((k, n, obs_dim), dtype=np.float32)
    rewards = rng.random((k, n), dtype=np.float32)
    agents = pa.table(
        {
            "episode_id": ["e"] * (k * n),
            "t": np.repeat(np.arange(k), n),
            "agent_id": [f"a{i}" for i in range(n)] * k,
            "obs": list(obs.reshape(k * n, obs_dim)),
            "action": np.zeros(k * n, np.int32),
            "action_mask": [[True, True]] * (k * n),
            "reward": rewards.reshape(-1),
            "terminated": np.zeros(k * n, bool),
            "truncated": np.repeat(np.arange(k) == k - 1, n),
            "behavior_prob": pa.nulls(k * n, pa.float32()),
            "controller": ["c"] * (k * n),
            "model_version": pa.nulls(k * n, pa.string()),
            "ts": [sim_timestamp(5.0 * t) for t in np.repeat(np.arange(k), n)],
        }
    )
    meta = LogMeta("bulk", obs_dim, 2, [f"a{i}" for i in range(n)], n * obs_dim)
    writer = LogWriter(tmp_path / "log", meta)
    writer.add_tables(agents, None)
    envs = pa.table({"episode_id": ["f"], "t": [0], "state": [[0.0] * (n * obs_dim)], "team_reward": [0.0]})
    with pytest.raises(ValueError, match="env_steps for every step or for none"):
        writer.add_tables(agents.set_column(0, "episode_id", pa.array(["f"] * (k * n))), envs)
    writer.close()
    assert not (tmp_path / "log" / "env_steps").exists()
    got = load_log(tmp_path / "log")
    np.testing.assert_array_equal(got.states[0], obs.reshape(k, n * obs_dim))
    np.testing.assert_array_equal(got.team_rewards[0], rewards.mean(axis=1, dtype=np.float32))


# -- foreign readers and writers ------------------------------------------------------------------


def test_a_log_written_by_plain_pandas_loads(tmp_path):
    """Documented schema, default pandas dtypes (int64, float64, timestamp[ns], list<double>)."""
    rows = []
    for ep, reward in (("b", 1.0), ("a", -2.0)):
        for agent, action in (("agent_0", 0), ("agent_1", 1)):
            rows.append(
                {
                    "episode_id": ep,
                    "t": 0,
                    "agent_id": agent,
                    "obs": [1.0],
                    "action": action,
                    "action_mask": [True, True],
                    "reward": reward,
                    "terminated": True,
                    "truncated": False,
                    "behavior_prob": 0.5 if ep == "a" else None,
                    "controller": "site-rule",
                    "model_version": None,
                    "ts": pd.Timestamp("2026-03-01 08:00"),
                }
            )
    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    meta = LogMeta("xor", obs_dim=1, n_actions=2, agent_ids=["agent_0", "agent_1"], state_dim=1)
    folder = tmp_path / "agent_steps" / "site=plant" / "date=2026-03-01"
    folder.mkdir(parents=True)
    pq.write_table(table.replace_schema_metadata(meta.to_metadata()), folder / "part-0.parquet")

    data = load_log(tmp_path)
    assert data.episode_ids == ["a", "b"]
    assert data.actions[:, 0].tolist() == [[0, 1], [0, 1]]
    assert data.team_rewards[:, 0].tolist() == [-2.0, 1.0]  # no env_steps: mean of agent rewards
    assert data.behavior_prob[0, 0].tolist() == [0.5, 0.5]
    assert np.isnan(data.behavior_prob[1, 0]).all()
    assert data.states.shape == (2, 1, 2)  # derived state: both agents' observations


@pytest.fixture(scope="module")
def game_logs(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """Every paper-game dataset, collected once through the CLI."""
    root = tmp_path_factory.mktemp("games")
    out = {}
    for env_id, dataset in GAME_DATASETS:
        path = root / f"{env_id}-{dataset}"
        assert main(["collect", "--env", env_id, "--dataset", dataset, "--out", str(path)]) == 0
        out[(env_id, dataset)] = path
    return out


def test_duckdb_reads_our_log_without_our_code(game_logs):
    log = game_logs[("bridge", "mixed")]
    con = duckdb.connect()
    n, sites, probs = con.execute(
        f"select count(*), count(distinct site), min(behavior_prob) "
        f"from read_parquet('{log}/agent_steps/**/*.parquet', hive_partitioning = true)"
    ).fetchone()
    episodes, total = con.execute(
        f"select count(distinct episode_id), sum(team_reward) from read_parquet('{log}/env_steps/**/*.parquet')"
    ).fetchone()
    data = load_log(log)
    assert (n, sites, episodes) == (data.n_steps * 2, 1, 1000)
    assert probs == pytest.approx(0.2)  # uniform random over 5 actions
    assert total == pytest.approx(float(data.episode_returns().sum()), rel=1e-5)


def test_part_files_keep_statistics_on_flat_columns_only(game_logs):
    """Readers filter on ids, steps and ``ts`` (row-group statistics); the obs/state list elements' ranges
    serve no query and are left out because computing them slows every write."""
    log = game_logs[("bridge", "mixed")]
    for kind, lists in (("agent_steps", ("obs", "action_mask")), ("env_steps", ("state",))):
        part = next((log / kind).rglob("*.parquet"))
        group = pq.ParquetFile(part).metadata.row_group(0)
        stats = {
            group.column(i).path_in_schema: group.column(i).is_stats_set for i in range(group.num_columns)
        }
        assert all(stats[f"{name}.list.element"] is False for name in lists), stats
        assert stats["episode_id"] and stats["t"], stats
        assert kind == "env_steps" or stats["ts"], stats


def inspect_json(capsys, log: Path) -> dict:
    capsys.readouterr()
    assert main(["data", "inspect", str(log), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("env_id", "dataset"), GAME_DATASETS)
def test_collect_then_inspect_every_game_dataset(game_logs, capsys, env_id, dataset):
    card = inspect_json(capsys, game_logs[(env_id, dataset)])
    assert card["env_id"] == env_id
    assert card["behavior_prob_known"] == 1.0
    assert not any("deterministic" in w for w in card["warnings"])
    if env_id != "bridge":
        assert card["episodes"] == card["steps"] == 1000
        assert card["joint_actions"] == card["n_actions"] ** 2
    if (env_id, dataset) == ("xor", "balanced"):
        assert card["returns"]["min"] == card["returns"]["max"] == 1.0
        assert card["joint_coverage"] == 0.5  # only (A,B) and (B,A)
    if (env_id, dataset) == ("xor", "uniform"):
        assert card["joint_coverage"] == 1.0
    if env_id == "mne":
        assert card["joint_coverage"] == pytest.approx(3 / 9)
        best = card["action_histogram"]["agent_0"][0] / 1000
        assert best == pytest.approx(1 / 3 if dataset == "balanced" else 0.1, abs=0.04)


def test_bridge_cards_report_the_optimal_return_and_a_lower_mixed_one(game_logs, capsys):
    optimal = inspect_json(capsys, game_logs[("bridge", "optimal")])
    mixed = inspect_json(capsys, game_logs[("bridge", "mixed")])
    assert optimal["episodes"] == 500 and mixed["episodes"] == 1000
    assert optimal["returns"]["mean"] == pytest.approx(optimal_return(), abs=1e-5)
    assert optimal["returns"]["min"] == pytest.approx(optimal_return(), abs=1e-5)
    assert mixed["returns"]["mean"] < optimal["returns"]["mean"] - 1.0
    assert {c["controller"]: c["episodes"] for c in mixed["controllers"]} == {"optimal": 500, "random": 500}


def test_inspect_prints_tables_and_the_deterministic_warning(tmp_path, capsys):
    log = tmp_path / "det"
    main(
        [
            "collect",
            "--env",
            "bridge",
            "--controller",
            "optimal-agent_0-first",
            "--episodes",
            "3",
            "--out",
            str(log),
        ]
    )
    capsys.readouterr()
    assert main(["data", "inspect", str(log)]) == 0
    out = capsys.readouterr().out
    assert "dataset card" in out and "agent_0" in out and "right" in out
    assert "deterministic" in out and "cloning" in out


def test_inspect_of_a_bad_log_exits_2_naming_the_file(tmp_path, capsys):
    (tmp_path / "agent_steps").mkdir()
    (tmp_path / "agent_steps" / "part-0.parquet").write_text("not parquet")
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert "part-0.parquet" in capsys.readouterr().err


def test_same_seed_gives_identical_log_bytes(tmp_path):
    def collect(name: str, seed: int) -> dict[str, bytes]:
        out = tmp_path / name
        argv = ["collect", "--env", "bridge", "--controller", "optimal,random", "--episodes", "40"]
        assert main([*argv, "--seed", str(seed), "--out", str(out)]) == 0
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}

    first, again, other = collect("a", 3), collect("b", 3), collect("c", 4)
    assert first == again
    assert len(first) == len(other) and first != other


def test_collecting_into_an_existing_log_appends_and_refuses_logged_seeds(tmp_path, capsys):
    """A second collection into the same log keeps the first one's episodes (part files are named
    after their seeds, not a per-run chunk index), and logging the same seeds twice is refused."""
    argv = ["collect", "--env", "bridge", "--episodes", "20", "--out", str(tmp_path)]
    assert main([*argv, "--controller", "optimal", "--seed", "0"]) == 0
    first = {p: p.read_bytes() for p in tmp_path.rglob("*.parquet")}
    assert main([*argv, "--controller", "random", "--seed", "20"]) == 0
    assert all(p.read_bytes() == b for p, b in first.items())  # nothing overwritten
    log = load_log(tmp_path)
    assert log.n_episodes == 40
    assert main([*argv, "--controller", "random", "--seed", "10"]) == 2
    err = capsys.readouterr().err
    assert "already holds 20 of these episodes" in err and "seeds 10..29" in err
    assert "--seed 40" in err  # past every seed the log holds (0..39), not just past the refused range
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.parquet") if p in first} == first
