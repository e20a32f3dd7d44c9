"""Compile the hi-res import's numba kernels before the first import (scripts/setup.sh runs this).

numba compiles each kernel (trainer/hires/kernels.py) for the argument types it is first called with
and, with ``cache=True``, keeps the machine code in ``trainer/hires/__pycache__``. A fresh checkout has
none, so its first import would spend about 5 s compiling (docs/benchmarks.md, "Hi-res event import").
This imports the real atspm sample into a temporary directory three ways (the Parquet file as shipped,
the same rows as CSV, and two devices with their rows interleaved), which calls every kernel with the
argument types a Parquet or CSV import passes. Later processes load the cached code (a few hundred ms).

    .venv/bin/python -m trainer.hires.warmup
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from trainer.hires.importer import ImportOptions, import_hires
from trainer.hires.sample import atspm_sample


def warm_up() -> float | None:
    """Import the sample three ways; the seconds it took, or None where the atspm wheel is missing."""
    files = atspm_sample()
    if files is None:
        return None
    start = time.perf_counter()
    events, config = pq.read_table(files[0]), pq.read_table(files[1])
    with tempfile.TemporaryDirectory(prefix="hires-warmup-") as tmp:
        root = Path(tmp)
        csv = root / "sample.csv"
        pcsv.write_csv(events, csv)
        two = pa.concat_tables([_as_device(events, 1), _as_device(events, 2)])
        interleaved = two.take(np.argsort(np.arange(two.num_rows) % events.num_rows, kind="stable"))
        pq.write_table(interleaved, root / "two.parquet")
        pq.write_table(
            pa.concat_tables([_as_device(config, 1), _as_device(config, 2)]), root / "two-config.parquet"
        )
        runs = [(files[0], files[1]), (csv, files[1]), (root / "two.parquet", root / "two-config.parquet")]
        for i, (path, detectors) in enumerate(runs):
            import_hires([path], detectors, None, root / f"log{i}", ImportOptions())
    return time.perf_counter() - start


def _as_device(table: pa.Table, device: int) -> pa.Table:
    column = table.schema.get_field_index("DeviceId")
    return table.set_column(column, "DeviceId", pa.array(np.full(table.num_rows, device)))


if __name__ == "__main__":
    took = warm_up()
    if took is None:
        print("hires warm-up: skipped (the atspm wheel is not installed)")
    else:
        print(f"hires warm-up: the import's kernels compiled or loaded in {took:.1f} s")
