#!/usr/bin/env bash
# Create .venv-atspm: the separate, pinned environment `inspo report atspm` runs the `atspm` package in
# (docs/traffic.md, "Performance measures"). atspm 2.6.1 needs pandas < 3 (through ibis-framework 11) and
# fails on duckdb 2, while the project's .venv pins pandas 3 and duckdb 2, so it cannot live there.
# Every version is in requirements/atspm-lock.txt; nothing is downloaded when the report runs.
# Idempotent: a second run only checks the pins. `--lock` re-resolves the pins into the lock file instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements/atspm-lock.txt
if [ "${1:-}" = "--lock" ]; then
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  "$PY" -m venv "$TMP/venv"
  "$TMP/venv/bin/python" -m pip install --quiet "atspm==2.6.1" "duckdb<2"
  {
    echo "# Exact versions scripts/setup-atspm.sh installs into .venv-atspm. Refresh: bash scripts/setup-atspm.sh --lock"
    echo "# atspm==2.6.1 with duckdb<2 (atspm's SQL calls break on duckdb 2). Resolved on $(date -u +%Y-%m-%d) with $("$TMP/venv/bin/python" --version)."
    "$TMP/venv/bin/python" -m pip freeze
  } > "$LOCK"
  echo "wrote $LOCK ($(grep -c '==' "$LOCK") pins)"
  exit 0
fi
if [ ! -x .venv-atspm/bin/python ]; then
  "$PY" -m venv .venv-atspm
fi
.venv-atspm/bin/python -m pip install --quiet --no-deps -r "$LOCK"
.venv-atspm/bin/python -m pip check >/dev/null
echo "setup-atspm: ok ($(.venv-atspm/bin/python -c 'from importlib.metadata import version; print("atspm", version("atspm"), "| duckdb", version("duckdb"), "| pandas", version("pandas"))'))"
