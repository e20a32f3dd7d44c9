#!/usr/bin/env bash
# Refresh requirements/lock.txt: resolve the project's extras from scratch in a throw-away venv and
# record every installed distribution at its exact version. Run it when you mean to move the pins
# (a new release you want, a security fix), then run both README commands and commit the lock with
# the regenerated protos (python -m protos.generate) if grpcio-tools moved.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
VPIP="$TMP/venv/bin/python -m pip"
$VPIP install --quiet --upgrade pip
$VPIP install --quiet "torch==2.13.0"
$VPIP install --quiet ".[train,traffic,ray,dev]"
$VPIP install --quiet --no-deps atspm  # its sample data only (scripts/setup.sh says why)
{
  echo "# Exact versions scripts/setup.sh installs (pip constraints). Refresh: bash scripts/lock.sh"
  echo "# Resolved on $(date -u +%Y-%m-%d) with $("$TMP/venv/bin/python" --version) on $(uname -m)."
  # torch's local label (+cpu) names this machine class's wheel; the plain version pins the same file here
  # and lets users elsewhere take their platform's build of that release.
  $VPIP freeze --exclude-editable | grep -v '^inspo-control' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > requirements/lock.txt
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pins)"
