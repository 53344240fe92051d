#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh installs on the GPU machine (no package index there), in two sets:
#
#   scripts/pack-gpu-check.sh DEST [core|dali|all]     (default all)
#
#   DEST/core.tar            one file (< 60 MiB): what the GPU tests, kernels_bench and gpu_vs_cpu import that the
#                            machine lacks — pyvips (built from its sdist: pure Python), pyvips-binary, cffi + pycparser,
#                            pydantic + pydantic-core + annotated-types + typing-inspection + typing-extensions,
#                            pydantic-settings + python-dotenv, redis, ecs-logging (the JSON log lines of render
#                            processes whose stderr is not a terminal)
#   DEST/dali.tar.NN         DALI for CUDA 13 (nvidia-dali-cuda130, nvidia-nvimgcodec-cu13, nvidia-nvjpeg) and its
#                            pure-Python needs, split into parts of at most MAX_MIB (60): each travels in one call
#   DEST/SHA256SUMS          every part's checksum (each set's lines are rewritten when that set is packed)
#
# For GPU_CHECK_PY (3.12: the GPU machine's python3) on x86-64 manylinux; versions as installed in PYTHON's
# environment (the repo's .venv where it exists: what the tests ran with), else the newest. Left out because the
# machine has them: numpy, CuPy, Pillow, pytest and its plugins, httpx, rich, typer, psutil, prometheus-client,
# packaging. DALI is slimmed: its compiled bindings for other Pythons go, and so do nvImageCodec's nvTIFF and
# nvJPEG2000 extensions with the nvcomp/nvjpeg2k/nvtiff wheels they load (DALI needs none of them to decode JPEG,
# PNG and WebP); the wheels' RECORD files follow. `benchmarks/gpu_check.sh rehearse-dali` proves a CPU DALI pipeline
# still runs with the slimmed set.
set -euo pipefail
dest=${1:?usage: scripts/pack-gpu-check.sh DEST [core|dali|all]}
which=${2:-all}
max=${MAX_MIB:-60}
pyver=${GPU_CHECK_PY:-3.12}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-$([[ -x $repo/.venv/bin/python ]] && echo "$repo/.venv/bin/python" || echo python3)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
touch "$dest/SHA256SUMS"

core=(pyvips-binary cffi pycparser pydantic pydantic-core annotated-types typing-inspection typing-extensions
    pydantic-settings python-dotenv redis ecs-logging)
dali=(nvidia-dali-cuda130 nvidia-nvimgcodec-cu13 nvidia-nvjpeg astunparse gast six optree nvtx makefun libcst pyyaml)

# name==version as installed where PYTHON has it (name alone where not)
pinned() {
    "$python" - "$@" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name)
EOF
}

download() {  # download DIR NAME...: binary wheels for the target Python, no dependencies (every one is named)
    local dir=$1
    shift
    mapfile -t specs < <(pinned "$@")
    "$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version "$pyver" --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" "${specs[@]}"
}

# slim WHEEL PATTERN...: delete the members matching any PATTERN (zip -d, nothing recompressed) and their RECORD lines
slim() {
    local wheel=$1 record
    shift
    record=$(unzip -Z1 "$wheel" | grep '\.dist-info/RECORD$')
    mapfile -t gone < <(unzip -Z1 "$wheel" | grep -E "$(IFS='|'; echo "$*")" || true)
    ((${#gone[@]})) || return 0
    zip -q -d "$wheel" "${gone[@]}"
    mkdir -p "$work/record/$(dirname "$record")"
    unzip -p "$wheel" "$record" | grep -v -F -f <(printf '%s,\n' "${gone[@]}") >"$work/record/$record" || true
    (cd "$work/record" && zip -q "$wheel" "$record")
    echo "slimmed $(basename "$wheel"): ${#gone[@]} members dropped"
}

sums() {  # sums SET FILE...: SHA256SUMS with SET's lines replaced
    grep -v -E "  $1\.tar(\.[0-9]+)?$" "$dest/SHA256SUMS" >"$work/sums" || true
    shift
    (cd "$dest" && sha256sum "${@##*/}") >>"$work/sums"
    sort -k2 "$work/sums" >"$dest/SHA256SUMS"
}

if [[ $which == core || $which == all ]]; then
    mkdir -p "$work/core"
    download "$work/core" "${core[@]}"
    # pyvips is published as a source archive only (pure Python, ABI mode): built into a wheel here.
    "$python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/core" "$(pinned pyvips)"
    tar -C "$work/core" -cf "$dest/core.tar" .
    size=$(stat -c %s "$dest/core.tar")
    ((size < 60 * 2 ** 20)) || { echo "core.tar is $((size >> 20)) MiB: over 60 MiB" >&2; exit 1; }
    sums core "$dest/core.tar"
    echo "core: $(find "$work/core" -name '*.whl' | wc -l) wheels, $((size >> 20)) MiB in core.tar (python $pyver)"
fi

if [[ $which == dali || $which == all ]]; then
    mkdir -p "$work/dali"
    download "$work/dali" "${dali[@]}"
    tag=${pyver/./}
    # Bindings for every other CPython (and free-threaded builds): DALI and nvImageCodec ship one per version.
    others="cpython-(3[0-9]+t|3([0-9]|1[0-9])t?)-x86_64"
    keep="cpython-$tag-x86_64"
    for wheel in "$work"/dali/nvidia_dali_cuda130-*.whl "$work"/dali/nvidia_nvimgcodec_cu13-*.whl; do
        mapfile -t other < <(unzip -Z1 "$wheel" | grep -E "$others" | grep -v -F "$keep" || true)
        slim "$wheel" "extensions/libnv(tiff|jpeg2k)_ext" "${other[@]/#/^}"
    done
    rm -f "$dest"/dali.tar.*
    tar -C "$work/dali" -cf - . | split -b "${max}m" -d -a 2 - "$dest/dali.tar."
    parts=("$dest"/dali.tar.*)
    sums dali "${parts[@]}"
    echo "dali: $(find "$work/dali" -name '*.whl' | wc -l) wheels, $(du -sm "$work/dali" | cut -f1) MiB" \
        "in ${#parts[@]} part(s) of at most $max MiB (python $pyver)"
fi
ls -l "$dest"
