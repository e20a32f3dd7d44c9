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
