#!/usr/bin/env bash
# One command: install what is needed, then run API + worker + embedded Redis on 127.0.0.1:8000 (data in ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/thumbify serve "$@"
