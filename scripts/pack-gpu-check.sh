#!/usr/bin/env bash
# Packs every wheel benchmarks/gpu_check.sh needs on a GPU host with no package index, in parts small enough to carry
# one per call:
#
#   scripts/pack-gpu-check.sh DEST [MAX_MIB]      -> DEST/part-00, part-01, ... (each <= MAX_MIB, default 60)
#                                                     + DEST/SHA256SUMS
#   (on the GPU host)  benchmarks/gpu_check.sh OUT DEST    checks, joins and installs them
#
# What it packs: the closure of Thumbify's runtime dependencies (pyproject.toml), DALI 2.4 for CUDA 13, and what the
# GPU tests import (pytest, pytest-timeout, httpx), for GPU_CHECK_PY (default 3.12, the device image's Python) on
# x86-64 manylinux. ../shared/tools/pack-gpu-wheels.sh packs only DALI and pyvips; the device image also lacks
# pydantic, redis, httpx and pytest. Left out, because the device image has them (GPU_CHECK_HOST_HAS to change):
# numpy, Pillow, prometheus-client, CuPy and the small packaging helpers.
set -euo pipefail
dest=${1:?usage: scripts/pack-gpu-check.sh DEST [MAX_MIB]}
max=${2:-60}
pyver=${GPU_CHECK_PY:-3.12}
host_has=${GPU_CHECK_HOST_HAS-numpy pillow prometheus_client cupy_cuda13x packaging typing_extensions pyyaml wheel}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# pyvips itself is published as a source archive only (pure Python; its compiled part comes in pyvips-binary), so it
# is built into a wheel here; everything else must be a binary wheel for the target Python.
"$python" - "$repo/pyproject.toml" "$work/requirements.txt" "$work/build.txt" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
name = lambda spec: re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0].lower()
build = [d for d in deps if name(d) == "pyvips"]
binary = [d for d in deps if name(d) != "pyvips"]
binary += ["cffi", "nvidia-dali-cuda130==2.4.*", "pytest>=8", "pytest-timeout>=2.3", "httpx>=0.27"]
open(sys.argv[2], "w").write("\n".join(binary) + "\n")
open(sys.argv[3], "w").write("\n".join(build) + "\n")
EOF
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
    --platform manylinux2014_x86_64)
"$python" -m pip download -q --disable-pip-version-check --only-binary=:all: --python-version "$pyver" \
    --implementation cp "${plat[@]}" -d "$work/whl" -r "$work/requirements.txt"
"$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/whl" -r "$work/build.txt"
for name in $host_has; do
    # Wheel file names normalise the project name to lower case with underscores.
    find "$work/whl" -maxdepth 1 -iname "${name}-*.whl" -print -delete | sed 's/^/left out (the host has it): /'
done
mkdir -p "$dest"
rm -f "$dest"/part-* "$dest/SHA256SUMS"
tar -C "$work/whl" -cf - . | split -b "${max}m" -d - "$dest/part-"
(cd "$dest" && sha256sum part-* >SHA256SUMS)
ls -l "$dest"
echo "python $pyver: $(find "$work/whl" -name '*.whl' | wc -l) wheels, $(du -sh "$work/whl" | cut -f1) in" \
    "$(find "$dest" -name 'part-*' | wc -l) part(s) of at most ${max} MiB"
