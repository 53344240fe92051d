#!/usr/bin/env bash
# One command: install what running needs (not the test extras), then run API + worker + embedded Redis on
# 127.0.0.1:8000 (data in ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh run
exec .venv/bin/thumbify serve "$@"
