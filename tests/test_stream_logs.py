"""Streaming the card and the padded arrays file group by file group gives what the in-memory path gives."""

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_logs import random_log

from contract.logformat import LogMeta, LogWriter, sim_timestamp
from trainer.collect import collect
from trainer.logs import LogValidationError, open_log
from trainer.logs.card import build_card
from trainer.logs.stream import (
    ARRAYS,
    build_array_cache,
    building_directory,
    iter_groups,
    load_log_cached,
    log_fingerprint,
    open_array_cache,
    plan_log,
    stream_card,
)


def _write(root, want, lengths, meta, rows_per_file, controllers=("c",)):
    with LogWriter(root, meta, rows_per_file=rows_per_file) as writer:
        for e in range(len(lengths)):
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
                    controller=controllers[e % len(controllers)],
                    model_version=None,
                    ts=sim_timestamp(t * 6 * 3600.0),  # crosses midnight: episodes split over files
                    state=want["states"][e, t],
                    team_reward=float(want["team_rewards"][e, t]),
                )
            writer.end_episode()


def _assert_same(log_dir, cache_dir):
    loaded = open_log(log_dir)
    assert stream_card(log_dir).to_dict() == build_card(loaded, path=str(log_dir)).to_dict()
    cache = open_array_cache(build_array_cache(log_dir, cache_dir))
    for name in ARRAYS:
        got, want = getattr(cache.data, name), getattr(loaded.data, name)
        assert isinstance(got, np.memmap), name
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert cache.data.episode_ids == loaded.data.episode_ids
    assert cache.data.fingerprint == loaded.data.fingerprint == log_fingerprint(log_dir)
    return loaded, cache


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_agents=st.integers(1, 3),
    n_actions=st.integers(1, 4),
    state_dim=st.integers(0, 2),
    rows_per_file=st.integers(2, 30),
    seed=st.integers(0, 2**31 - 1),
)
def test_streaming_equals_in_memory_on_random_logs(
    tmp_path_factory, n_agents, n_actions, state_dim, rows_per_file, seed
):
    rng = np.random.default_rng(seed)
    want, lengths = random_log(rng, n_agents, 2, n_actions, state_dim)
    root = tmp_path_factory.mktemp("log")
    meta = LogMeta("roundtrip", 2, n_actions, [f"a{i}" for i in range(n_agents)], state_dim)
    _write(root, want, lengths, meta, rows_per_file, controllers=("x", "y"))
    _assert_same(root, tmp_path_factory.mktemp("cache"))


def test_a_collected_log_streams_per_file_and_matches(tmp_path):
    log = tmp_path / "log"
    collect("bridge", log, "optimal,random", 40, progress=False)  # 3 chunks -> 3 groups of 2 files
    plan = plan_log(log)
    assert len(plan.groups) == 3 and all(len(g.agent_files) == len(g.env_files) == 1 for g in plan.groups)
    rows = [g.raw.agents.table.num_rows for g in iter_groups(plan)]
    total = open_log(log).raw.agents.table.num_rows
    assert max(rows) < total and sum(rows) == total  # no pass ever held the whole log
    loaded, cache = _assert_same(log, tmp_path / "cache")

    # Sampling reads rows of the memory maps; each draw is a real filled step and its successor.
    batch = cache.sample(64, np.random.default_rng(0))
    e, t = batch["episode"], batch["t"]
    d = loaded.data
    assert d.filled[e, t].all()
    np.testing.assert_array_equal(batch["obs"], d.obs[e, t])
    np.testing.assert_array_equal(batch["actions"], d.actions[e, t])
    np.testing.assert_array_equal(batch["state"], d.states[e, t])
    following = ~batch["done"]
    np.testing.assert_array_equal(batch["next_obs"][following], d.obs[e[following], t[following] + 1])
    last = d.filled.sum(axis=1)[e] - 1 == t
    assert batch["done"][last].all()


def test_a_log_without_env_steps_streams_the_same(tmp_path):
    log = tmp_path / "log"
    collect("bridge", log, "optimal,random", 20, progress=False)
    shutil.rmtree(log / "env_steps")
    _assert_same(log, tmp_path / "cache")


def test_the_cache_is_found_by_fingerprint_and_rebuilt_for_new_content(tmp_path):
    log = tmp_path / "log"
    collect("bridge", log, "optimal", 20, progress=False)
    first = load_log_cached(log, tmp_path / "cache")
    stamp = (first.directory / "obs.npy").stat().st_mtime_ns
    again = load_log_cached(log, tmp_path / "cache")
    assert again.directory == first.directory and (again.directory / "obs.npy").stat().st_mtime_ns == stamp
    assert again.card()["episodes"] == 20

    collect("bridge", log, "random", 20, start_seed=100, site="other", progress=False)  # new files
    grown = load_log_cached(log, tmp_path / "cache")
    assert grown.directory != first.directory and grown.data.n_episodes == 40


def test_a_bad_value_fails_naming_the_file_like_the_in_memory_path(tmp_path):
    log = tmp_path / "log"
    collect("bridge", log, "optimal,random", 40, progress=False)
    part = sorted((log / "agent_steps").rglob("*.parquet"))[1]
    table = pq.read_table(part)
    actions = table.column("action").to_pylist()
    actions[5] = 99
    pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", [actions]), part)
    with pytest.raises(LogValidationError) as in_memory:
        open_log(log)
    with pytest.raises(LogValidationError) as streamed:
        stream_card(log)
    assert str(streamed.value) == str(in_memory.value)
    assert part.name in str(streamed.value) and "action 99" in str(streamed.value)
    with pytest.raises(LogValidationError):
        build_array_cache(log, tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())  # no half-written cache is left behind


def _build_at_once(final, barrier, name, errors):
    """One builder: write its copy, wait until the other has written too, then publish."""
    try:
        with building_directory(final) as tmp:
            (tmp / "who").write_text(name)
            barrier.wait(timeout=30)
    except Exception as err:  # reported to the parent; a builder must not fail because another won
        errors.put(f"{name}: {err!r}")


def test_two_builders_publishing_at_once_both_succeed_and_one_copy_stays(tmp_path):
    """Two trainings on one log build its cache at the same moment (bench/results.py --jobs 2): the one that
    renames second must keep the first one's copy, not fail on the non-empty directory."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for attempt in range(5):  # the race is at the rename; both reach it within microseconds of each other
        final = tmp_path / f"cache-{attempt}"
        barrier, errors = ctx.Barrier(2), ctx.Queue()
        builders = [ctx.Process(target=_build_at_once, args=(final, barrier, n, errors)) for n in "ab"]
        for b in builders:
            b.start()
        for b in builders:
            b.join(timeout=60)
        assert all(b.exitcode == 0 for b in builders)
        assert errors.empty(), errors.get()
        assert (final / "who").read_text() in ("a", "b")
        assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []
