#!/usr/bin/env bash
# Refreshes the lock files the images install from (requirements/*.txt: every package pinned, with its hashes), for
# every platform and Python 3.11+: runtime.txt (Dockerfile, with the otel extra: tracing is then a variable away,
# and faces: OpenCV for crop=faces), gpu.txt (Dockerfile.gpu, with the otel, faces and gpu extras), build.txt (the
# wheel build). Run it after changing pyproject.toml's dependencies, and commit the result. Needs uv
# (`pip install uv`). Release step, needs network: `pip-audit --require-hashes -r requirements/runtime.txt` (and gpu.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
compile() { "$UV" pip compile --quiet --universal --python-version 3.11 --generate-hashes "$@"; }
compile pyproject.toml --extra otel --extra faces -o requirements/runtime.txt
compile pyproject.toml --extra otel --extra faces --extra gpu -o requirements/gpu.txt
compile requirements/build.in -o requirements/build.txt
