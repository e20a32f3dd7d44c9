"""The committed generated code equals a fresh grpcio-tools generation, and imports as a package."""

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_regenerating_gives_identical_files(tmp_path):
    from protos.generate import generate

    written = generate(tmp_path)
    assert len(written) == 4
    for path in written:
        committed = ROOT / "protos" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is not committed; run python -m protos.generate"
        assert filecmp.cmp(path, committed, shallow=False), (
            f"{committed} is stale; run python -m protos.generate"
        )


def test_generated_code_imports_without_protos_on_sys_path():
    code = (
        "import sys; from protos.inspo.runtime.v1 import admin_pb2_grpc, policy_pb2_grpc, admin_pb2;"
        "assert 'inspo' not in sys.modules;"
        "print(admin_pb2.DESCRIPTOR.services_by_name['ModelAdmin'].full_name)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "inspo.runtime.v1.ModelAdmin"
