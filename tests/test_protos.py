"""The committed generated code equals a fresh grpcio-tools generation, and imports as a package.

The generators stamp their own version into the files (``GRPC_GENERATED_VERSION``, the protobuf
runtime check). Those stamps are the *minimum* runtime the files need, not part of what the .proto
files mean, so the comparison ignores them and a separate test checks the installed runtime meets them.
"""

import re
import subprocess
import sys
from pathlib import Path

import grpc
from google.protobuf import __version__ as protobuf_version

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "protos" / "inspo" / "runtime" / "v1"

_GRPC_STAMP = re.compile(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'$", re.MULTILINE)
_PB_COMMENT = re.compile(r"^# Protobuf Python Version: ([0-9.]+)$", re.MULTILINE)
_PB_CHECK = re.compile(r"(_runtime_version\.Domain\.PUBLIC,\n)\s*(\d+),\n\s*(\d+),\n\s*(\d+),\n")


def _without_version_stamps(text: str) -> str:
    text = _GRPC_STAMP.sub("GRPC_GENERATED_VERSION = '<stamp>'", text)
    text = _PB_COMMENT.sub("# Protobuf Python Version: <stamp>", text)
    return _PB_CHECK.sub(r"\1<stamp>\n", text)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def test_regenerating_gives_identical_files(tmp_path):
    from protos.generate import generate

    written = generate(tmp_path)
    assert len(written) == 4
    for path in written:
        committed = ROOT / "protos" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is not committed; run python -m protos.generate"
        assert _without_version_stamps(path.read_text()) == _without_version_stamps(committed.read_text()), (
            f"{committed} is stale; run python -m protos.generate"
        )


def test_version_stamps_are_ignored_but_content_is_not():
    text = (GENERATED / "admin_pb2_grpc.py").read_text()
    restamped = _GRPC_STAMP.sub("GRPC_GENERATED_VERSION = '9.99.9'", text)
    assert restamped != text and _without_version_stamps(restamped) == _without_version_stamps(text)
    edited = text.replace("ModelAdminStub", "ModelAdminStubX", 1)
    assert _without_version_stamps(edited) != _without_version_stamps(text)


def test_installed_runtimes_meet_the_committed_stamps():
    for path in sorted(GENERATED.glob("*_pb2_grpc.py")):
        stamp = _GRPC_STAMP.search(path.read_text())
        assert stamp, f"{path.name} has no GRPC_GENERATED_VERSION"
        assert _version(grpc.__version__) >= _version(stamp.group(1)), (path.name, grpc.__version__)
    for path in sorted(GENERATED.glob("*_pb2.py")):
        stamp = _PB_COMMENT.search(path.read_text())
        assert stamp, f"{path.name} has no protobuf version comment"
        assert _version(protobuf_version) >= _version(stamp.group(1)), (path.name, protobuf_version)


def test_generated_code_imports_without_protos_on_sys_path():
    code = (
        "import sys; from protos.inspo.runtime.v1 import admin_pb2_grpc, policy_pb2_grpc, admin_pb2;"
        "assert 'inspo' not in sys.modules;"
        "print(admin_pb2.DESCRIPTOR.services_by_name['ModelAdmin'].full_name)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "inspo.runtime.v1.ModelAdmin"
