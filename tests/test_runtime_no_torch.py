"""docs/architecture.md: the runtime never imports torch or trainer (a deployment image has neither)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_runtime_imports_without_torch_or_trainer():
    code = (
        "import sys, runtime.server, runtime.client, runtime.service, runtime.decision_log, runtime.batching;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'trainer'));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime imported {out.stdout.strip()}"


def test_runtime_sources_never_mention_torch_imports():
    for path in (ROOT / "runtime").glob("*.py"):
        text = path.read_text()
        for bad in ("import torch", "from torch", "import trainer", "from trainer", "import pickle"):
            assert bad not in text, f"{path.name} contains {bad!r}"
