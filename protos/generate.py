"""Regenerate the Python code for the .proto files: ``python -m protos.generate [--out DIR]``.

grpcio-tools writes absolute imports (``from inspo.runtime.v1 import policy_pb2``), which only
work with ``protos/`` on ``sys.path``; this rewrites them to relative imports so the package
imports as ``protos.inspo.runtime.v1`` from an installed wheel. ``tests/test_protos.py`` checks
that the committed files equal a fresh generation.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent
PROTO_FILES = ["inspo/runtime/v1/policy.proto", "inspo/runtime/v1/admin.proto"]
_IMPORT = re.compile(r"^from inspo\.runtime\.v1 import (\w+) as (\w+)$", re.MULTILINE)


def generate(out: Path) -> list[Path]:
    """Generate ``*_pb2.py`` / ``*_pb2_grpc.py`` for every proto into ``out`` (mirroring the package path)."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{ROOT}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", *PROTO_FILES]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        written = []
        for src in sorted(Path(tmp).rglob("*.py")):
            rel = src.relative_to(tmp)
            text = _IMPORT.sub(r"from . import \1 as \2", src.read_text())
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            written.append(dest)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: protos/ itself)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
