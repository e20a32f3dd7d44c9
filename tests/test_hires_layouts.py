"""The hi-res import gives one log whatever the row layout: devices grouped or interleaved, integer or
string device ids, detector channels within 16 bits or beyond (each takes its own path through
trainer/hires/events.py and importer.py: slices or a radix sort, a byte table or a binary search)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from trainer.hires.importer import ImportOptions, import_hires
from trainer.hires.sample import atspm_sample


@pytest.fixture(scope="module")
def two_devices() -> tuple[pa.Table, pa.Table]:
    """The real sample as two devices (ids 1 and 2) with the same events, grouped by device."""
    files = atspm_sample()
    if files is None:
        pytest.skip("the atspm wheel (its sample event log) is not installed: bash scripts/setup.sh")
    events, config = pq.read_table(files[0]), pq.read_table(files[1])

    def as_device(table: pa.Table, device: int) -> pa.Table:
        column = table.schema.get_field_index("DeviceId")
        return table.set_column(column, "DeviceId", pa.array(np.full(table.num_rows, device)))

    return (
        pa.concat_tables([as_device(events, 1), as_device(events, 2)]),
        pa.concat_tables([as_device(config, 1), as_device(config, 2)]),
    )


def imported(tmp_path: Path, name: str, events: pa.Table, config: pa.Table) -> tuple[pa.Table, dict]:
    folder = tmp_path / name
    folder.mkdir()
    pq.write_table(events, folder / "events.parquet")
    pq.write_table(config, folder / "config.parquet")
    card = import_hires(
        [folder / "events.parquet"], folder / "config.parquet", None, folder / "log", ImportOptions()
    )
    table = pq.read_table(folder / "log" / "agent_steps").drop_columns(["site", "date"])
    return table, json.loads(json.dumps(card.to_dict()).replace(str(folder), "<dir>"))


def test_interleaved_string_ids_and_wide_channels_import_like_the_grouped_file(tmp_path, two_devices):
    events, config = two_devices
    grouped, card = imported(tmp_path, "grouped", events, config)
    assert grouped.num_rows > 0 and card["detector_coverage"]["1"] == card["detector_coverage"]["2"]

    by_time = events.take(pc.sort_indices(events, [("TimeStamp", "ascending")]))
    assert by_time.column("DeviceId").to_numpy()[:100].tolist() != [1] * 100  # rows now interleave
    table, interleaved_card = imported(tmp_path, "interleaved", by_time, config)
    assert table.equals(grouped) and interleaved_card == card

    def named(table: pa.Table) -> pa.Table:
        column = table.schema.get_field_index("DeviceId")
        return table.set_column(column, "DeviceId", pc.cast(table["DeviceId"], pa.string()))

    table, named_card = imported(tmp_path, "strings", named(by_time), named(config))
    assert table.equals(grouped) and named_card == card  # "1" and "2" either way

    shift = 70_000  # beyond the 16-bit lookup table: channels are found by binary search
    detector = pc.is_in(events["EventId"], pa.array([81, 82]))
    channel = pc.if_else(detector, pc.add(events["Parameter"], shift), events["Parameter"])
    wide = events.set_column(events.schema.get_field_index("Parameter"), "Parameter", channel)
    column = config.schema.get_field_index("Parameter")
    wide_config = config.set_column(column, "Parameter", pc.add(config["Parameter"], shift))
    table, wide_card = imported(tmp_path, "wide", wide, wide_config)
    assert table.equals(grouped)
    missing = [e["detector"] for e in card["findings"]["detectors_missing_from_config"]]
    assert [e["detector"] - shift for e in wide_card["findings"]["detectors_missing_from_config"]] == missing


def test_devices_on_two_threads_write_the_same_bytes_as_one_after_another(tmp_path, two_devices, monkeypatch):
    """importer.py imports devices on up to two threads, each writing its own part file and recording its
    card entries for replay in device order: the log's files and the card must be those of the sequential
    import.
    The devices differ (device 2 misses one detector channel and a stretch of its events), so their card
    entries differ too."""
    from trainer.hires import threads as hires_threads

    events, config = two_devices
    device, param = events.column("DeviceId").to_numpy(), events.column("Parameter").to_numpy()
    code = events.column("EventId").to_numpy()
    channel = int(config.column("Parameter").to_numpy()[0])
    drop = (device == 2) & ((code == 81) | (code == 82)) & (param == channel)
    drop |= (device == 2) & (np.arange(len(device)) % 9 == 0)
    events = events.filter(pa.array(~drop))
    outputs = {}
    for threads in (1, 2):
        monkeypatch.setattr(hires_threads, "MAX_THREADS", threads)
        monkeypatch.setattr(hires_threads.os, "cpu_count", lambda: 2)
        folder = tmp_path / f"threads{threads}"
        folder.mkdir()
        pq.write_table(events, folder / "events.parquet")
        pq.write_table(config, folder / "config.parquet")
        card = import_hires(
            [folder / "events.parquet"], folder / "config.parquet", None, folder / "log", ImportOptions()
        )
        parts = sorted((folder / "log" / "agent_steps").rglob("*.parquet"))
        files = {str(p.relative_to(folder)): p.read_bytes() for p in parts}
        text = (folder / "log" / "hires_card.json").read_text().replace(str(folder), "<dir>")
        outputs[threads] = files, text, [w.replace(str(folder), "<dir>") for w in card.warnings()]
    assert len(outputs[1][0]) == 2  # a part file per device, named by the device's index
    assert outputs[1] == outputs[2]
    assert any("device=2" in w for w in outputs[2][2])  # device 2's own findings are in the card


def test_a_forked_child_starts_its_own_thread_pool():
    """The import keeps one pool for the process (trainer/hires/threads.py); a forked child has none of
    its threads, so it must not reuse it (its tasks would never run)."""
    import os

    from trainer.hires import threads

    assert threads.pool() is threads.pool()
    pid = os.fork()
    if pid == 0:  # the child: a fresh pool that runs tasks
        os._exit(
            0 if threads._pool is None and threads.pool().submit(int, "7").result(timeout=10) == 7 else 1
        )
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
