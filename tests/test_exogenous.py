"""Exogenous input events: logged beside the steps, read back whole, summarised for the state baseline."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainer.algos import make_algorithm
from trainer.algos.exogenous import WINDOWS, discounted_future_counts, hindsight_features
from trainer.collect import collect
from trainer.logs import load_log
from trainer.logs.errors import LogValidationError
from trainer.logs.exogenous import ExogenousEvents

ENV = "elevator:cb10x4:downpeak"


def test_discounted_future_counts_match_the_sum_they_stand_for_on_an_absolute_clock():
    rng = np.random.default_rng(0)
    start = 1.7672256e9  # seconds since 1970: exp(t / H) of such a time overflows, the recursion does not
    events = np.sort(start + rng.uniform(0, 4000, 300))
    times = start + rng.uniform(-50, 4100, 40)
    got = discounted_future_counts(events, times, 120.0)
    want = [np.exp(-(events[events > t] - t) / 120.0).sum() for t in times]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert discounted_future_counts(events[:0], times, 120.0).tolist() == [0.0] * len(times)


def test_hindsight_features_count_each_channel_and_window_after_the_row_only():
    events = ExogenousEvents(
        channels=["floor 0", "floor 1"],
        times={"a": np.array([10.0, 20.0, 200.0]), "b": np.array([5.0])},
        channel={"a": np.array([0, 1, 1]), "b": np.array([1])},
    )
    ts = np.array([0.0, 10.0, 5.0])
    out = hindsight_features(ts, np.array([0, 0, 1]), ["a", "b"], events, horizon_s=120.0)
    assert out.shape == (3, 2 + len(WINDOWS))
    # row 0 (t = 0, episode a): one event on channel 0 at 10 s, two on channel 1 at 20 s and 200 s
    assert out[0, 0] == pytest.approx(np.exp(-10 / 120))
    assert out[0, 1] == pytest.approx(np.exp(-20 / 120) + np.exp(-200 / 120))
    assert out[0, 2:].tolist() == [1, 2, 2, 2, 3, 3]  # windows 10, 30, 60, 120, 240, 600 s
    # row 1 (t = 10): the event *at* t is not after it
    assert out[1, 0] == 0.0 and out[1, 2:].tolist() == [1, 1, 1, 1, 2, 2]
    # row 2 (episode b at its only event's time): nothing after it
    assert out[2].tolist() == [0.0] * (2 + len(WINDOWS))


@pytest.fixture(scope="module")
def elevator_log(tmp_path_factory):
    out = tmp_path_factory.mktemp("exo") / "log"
    collect(ENV, out, controller="etd@exp=0.2", episodes=2, start_seed=6200, workers=1)
    return out


def test_collection_logs_every_passenger_arrival_by_floor_and_training_reads_them(elevator_log):
    from envs.elevator.traffic import generate
    from envs.registry import make_env

    data = load_log(elevator_log)
    assert data.exogenous is not None
    assert data.exogenous.channels == [f"arrivals at floor {f}" for f in range(10)]
    env = make_env(ENV)
    for episode in data.episode_ids:
        seed = int(episode.split("-")[1])
        p = generate(env.building, env.traffic, seed)
        times = data.exogenous.times[episode] - 1767225600.0  # the log's clock starts at 2026-01-01
        end = np.nanmax(data.ts[data.episode_ids.index(episode)]) - 1767225600.0
        kept = p.arrival <= end + 1e-6
        assert len(times) >= kept.sum()  # everyone who arrived before the last decision, at least
        n = len(times)
        assert times == pytest.approx(p.arrival[:n], abs=1e-6)
        assert data.exogenous.channel[episode].tolist() == p.origin[:n].tolist()


def test_a_broken_exogenous_file_is_named_with_its_column_and_row(elevator_log, tmp_path):
    import shutil

    broken = tmp_path / "log"
    shutil.copytree(elevator_log, broken)
    part = sorted((broken / "exogenous").rglob("*.parquet"))[0]
    table = pq.read_table(part)
    channel = table.column("channel").to_numpy().copy()
    channel[7] = 10  # floors are 0..9
    table = table.set_column(2, "channel", pa.array(channel, pa.int32()))
    pq.write_table(table, part)
    with pytest.raises(LogValidationError) as err:
        load_log(broken)
    text = str(err.value)
    assert part.name in text and "'channel'" in text and "row 7" in text and "outside 0..9" in text


def test_the_exogenous_baseline_needs_the_events_and_the_residual_estimator(elevator_log, tmp_path):
    import shutil

    settings = {"estimator": "residual", "discount": "time", "horizon_s": 120.0}
    with pytest.raises(ValueError, match="baseline_inputs"):
        make_algorithm("inspo", overrides={"baseline_inputs": "state+exogenous"})  # local_q, step discount
    bare = tmp_path / "bare"
    shutil.copytree(elevator_log, bare)
    shutil.rmtree(bare / "exogenous")
    algo = make_algorithm("inspo", overrides={**settings, "baseline_inputs": "state+exogenous"})
    with pytest.raises(ValueError, match="exogenous input events"):
        algo.setup(load_log(bare))
    algo.setup(load_log(elevator_log))
    assert algo.data.exogenous is not None and algo.data.exogenous.shape == (
        algo.data.size,
        10 + len(WINDOWS),
    )


def test_training_from_the_stored_rows_sees_the_same_exogenous_features_as_from_memory(elevator_log):
    from trainer.algos.data import build_transitions
    from trainer.algos.store import ShardCycle, open_stored_log

    memory = build_transitions(load_log(elevator_log), 0.99, discount="time", horizon_s=120.0, exogenous=True)
    stored = open_stored_log(elevator_log, 0.99, "time", 120.0, budget_mb=512, exogenous=True)
    shard = ShardCycle(stored, None).load(0)
    assert shard.exogenous is not None and memory.exogenous is not None
    assert np.array_equal(shard.exogenous.numpy(), memory.exogenous.numpy())
    assert open_stored_log(elevator_log, 0.99, "time", 120.0, budget_mb=512).store.exogenous_file is None


def test_the_dataset_card_counts_the_exogenous_events_per_channel(elevator_log):
    from trainer.logs import stream_card

    card = stream_card(elevator_log)
    data = load_log(elevator_log)
    assert card.exogenous is not None and sum(card.exogenous.values()) == data.exogenous.n_events
    assert list(card.exogenous) == data.exogenous.channels


def test_combining_logs_keeps_their_exogenous_events_per_episode(elevator_log, tmp_path):
    from trainer.logs.combine import combine_logs

    other = tmp_path / "other"
    collect(ENV, other, controller="etd@exp=0.2", episodes=1, start_seed=6300, workers=1)
    result = combine_logs(tmp_path / "both", [elevator_log, other])
    both = load_log(tmp_path / "both")
    assert both.exogenous is not None and not any("exogenous" in n for n in result.notes)
    for source in (elevator_log, other):
        data = load_log(source)
        for episode in data.episode_ids:
            assert np.array_equal(both.exogenous.times[episode], data.exogenous.times[episode])
            assert np.array_equal(both.exogenous.channel[episode], data.exogenous.channel[episode])


def test_combining_with_a_log_without_exogenous_events_drops_them_and_says_so(elevator_log, tmp_path):
    import shutil

    from trainer.logs.combine import combine_logs

    bare = tmp_path / "bare"
    collect(ENV, bare, controller="etd", episodes=1, start_seed=6300, workers=1)
    shutil.rmtree(bare / "exogenous")
    result = combine_logs(tmp_path / "both", [elevator_log, bare])
    assert load_log(tmp_path / "both").exogenous is None
    assert any("exogenous events dropped" in n and str(elevator_log) in n for n in result.notes)
