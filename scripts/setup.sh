#!/usr/bin/env bash
# Set up a fresh machine: .venv with torch==2.13.0 (pip, CPU wheel) and the project with every extra,
# every dependency at the exact version in requirements/lock.txt (refresh it with scripts/lock.sh).
# Idempotent: a second run only checks that everything is installed at its pinned version.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPIP=".venv/bin/python -m pip"
$VPIP install --quiet --upgrade pip
# torch first, pinned to the version whose CPU wheel this machine class has locally (other versions pull CUDA).
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  $VPIP install --quiet "torch==2.13.0"
fi
$VPIP install --quiet -c requirements/lock.txt -e ".[train,traffic,ray,dev]"
# atspm's wheel only for the real hi-res event log it ships (tests/test_hires.py): without its dependencies
# (ibis-framework, traffic-anomaly, and pandas<3, which would move our pandas pin).
$VPIP install --quiet --no-deps "atspm==$(sed -n 's/^atspm==//p' requirements/lock.txt)"
# The hi-res import's numba kernels, compiled once into trainer/hires/__pycache__ (about 7 s on a fresh
# clone; 0.6 s once cached), so the first `inspo data import hires` does not pay for it.
.venv/bin/python -m trainer.hires.warmup
# .venv-atspm: the atspm package's own pinned environment for `inspo report atspm` and its tests (about 15 s).
bash scripts/setup-atspm.sh
echo "setup: ok ($(.venv/bin/python -c 'import torch, onnxruntime, grpc; print("torch", torch.__version__, "| onnxruntime", onnxruntime.__version__, "| grpcio", grpc.__version__)'))"
