#!/usr/bin/env bash
# Run the default test suite (fast tests; slow/SUMO-long/e2e suites are opt-in markers, see docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
