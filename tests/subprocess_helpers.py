"""Code in a fresh interpreter: libsumo allows one simulation per process, so SUMO tests run there."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_python(
    code: str, timeout: float = 120, cwd: Path | None = None, extra_paths: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) from the repo root with the repo (and ``extra_paths``) importable; a hang
    fails the test at ``timeout``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, *extra_paths))}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
