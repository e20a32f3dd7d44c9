"""Read hi-res event logs, detector configurations and phase maps (CSV or Parquet, ATSPM column layout).

Columns are checked by name and cast to one type each; a file that cannot be read (truncated, not
CSV/Parquet) or lacks a column is a ``ValueError`` naming the file and the column or row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

EVENT_COLUMNS = ("TimeStamp", "DeviceId", "EventId", "Parameter")
DETECTOR_COLUMNS = ("DeviceId", "Phase", "Parameter", "Function")
PHASE_MAP_COLUMNS = ("DeviceId", "Phase", "Action")


def read_table(path: str | os.PathLike, columns: tuple[str, ...], what: str) -> pa.Table:
    """The named columns of a CSV or Parquet file (by extension; ``.csv.gz`` too)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    try:
        if path.suffix == ".parquet" or path.suffixes[-2:-1] == [".parquet"]:
            table = _read_parquet(path, columns, what)
        else:
            options = pcsv.ConvertOptions(include_columns=list(columns), strings_can_be_null=True)
            table = pcsv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, pa.ArrowKeyError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        message = str(err).splitlines()[0]
        missing = [c for c in columns if f"'{c}'" in message or f'"{c}"' in message]
        if missing:
            _require(path, [], missing, what)
        raise ValueError(f"{path}: cannot read the {what} ({message})") from None
    _require(path, table.column_names, columns, what)
    for name in columns:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(
                f"{path}: row {row + 1}: column {name} is empty ({column.null_count} empty in all)"
            )
    return table.select(list(columns))


def _read_parquet(path: Path, columns: tuple[str, ...], what: str) -> pa.Table:
    """The named columns of a Parquet file, opened once (footer, schema check and read), memory-mapped:
    a few ms less CPU than ``pq.read_schema`` then ``pq.read_table``'s dataset layer (bench/hires_import.py)."""
    with pq.ParquetFile(path, memory_map=True) as file:
        _require(path, file.schema_arrow.names, columns, what)
        return file.read(columns=list(columns))


def _require(path: Path, names, columns, what: str) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(
            f"{path}: the {what} lacks column(s) {', '.join(missing)} (expected {', '.join(columns)})"
        )


def as_int(table: pa.Table, name: str, path: Path) -> np.ndarray:
    column = table.column(name)
    try:
        return pc.cast(column, pa.int64()).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = column.to_pylist()
        for row, value in enumerate(values):
            try:
                int(str(value))
            except ValueError:
                raise ValueError(
                    f"{path}: row {row + 1}: column {name} is not an integer: {value!r}"
                ) from None
        raise


def as_micros(table: pa.Table, path: Path) -> tuple[int, np.ndarray]:
    """``TimeStamp`` (timestamps, or ISO strings in a CSV) as int64 microseconds since 1970 (the file's
    own buffer, no copy, where the column is one chunk) and the first of them. The import's times are
    seconds since that first one, ``(micros - origin) / 1e6`` (exact in float64 for spans up to 285
    years; distinct microseconds stay distinct and in order), computed only for the events that need
    them (trainer/hires/kernels.py): converting every event first was a whole pass over the file."""
    column = table.column("TimeStamp")
    if not pa.types.is_timestamp(column.type):
        try:
            column = pc.cast(column, pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = column.to_pylist()
            for row, value in enumerate(values):
                try:
                    np.datetime64(str(value).replace(" ", "T"))
                except ValueError:
                    raise ValueError(
                        f"{path}: row {row + 1}: column TimeStamp is not a date and time: {value!r}"
                    ) from None
            column = pa.chunked_array(
                [np.array([str(v).replace(" ", "T") for v in values], dtype="datetime64[us]")]
            )
    micros = pc.cast(column, pa.timestamp("us")).cast(pa.int64())
    if not len(micros):
        return 0, np.zeros(0, np.int64)
    return pc.min(micros).as_py(), micros.to_numpy()


def device_ids(table: pa.Table) -> np.ndarray:
    """``DeviceId`` as strings (ATSPM writes integers, our SUMO writer the traffic light ids)."""
    return np.array(pc.cast(table.column("DeviceId"), pa.string()).to_pylist(), dtype=object)
