"""The real hi-res event log the ``atspm`` wheel ships (one intersection, 2 h, 16 detectors).

scripts/setup.sh installs the wheel without its dependencies, for this sample only (tests/test_hires.py,
bench/hires_import.py, bench/hires_sample.py and the worked example in docs/traffic.md read it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def atspm_sample() -> tuple[Path, Path] | None:
    """``(events, detector configuration)`` Parquet files, or None where the wheel is not installed."""
    spec = importlib.util.find_spec("atspm")
    if spec is None or not spec.submodule_search_locations:
        return None
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data / "sample_raw_data.parquet", data / "sample_config.parquet"
