#!/usr/bin/env bash
# A rehearsal of a benchmarks/gpu_check.sh stage on a machine without a GPU, before GPU time is spent on it:
#
#   scripts/rehearse-gpu-check.sh core|dali OUT [WORK]
#
# WORK (a new temporary folder by default; reused when given) gets an imitation of the GPU machine's python3: a venv
# with only what that machine has that the check uses (numpy, Pillow, pytest + pytest-timeout, httpx, psutil,
# prometheus-client, rich, typer) and nothing that is packed, and the stage's sets packed for this Python by
# scripts/pack-gpu-check.sh (from pip's cache or the index; packed once per WORK). The stage then runs in a fresh
# process from the parts alone, with no index: `core` as on the GPU machine (every GPU row reported unavailable with
# the reason), `dali` as `rehearse-dali` (the slimmed DALI set installed, a CPU DALI pipeline run). A small corpus
# (GPU_CHECK_PHOTOS=3, GPU_CHECK_HUGE_SIDE=3000) keeps it short. GPU_REHEARSAL_PARTS uses another parts folder as it
# is (nothing packed). tests/test_gpu_check.py runs the `core` rehearsal in CI.
set -euo pipefail
usage="usage: scripts/rehearse-gpu-check.sh core|dali OUT [WORK]"
stage=${1:?$usage}
out=${2:?$usage}
[[ $stage == core || $stage == dali ]] || { echo "$usage" >&2; exit 64; }
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=${3:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
python=${PYTHON:-$([[ -x $repo/.venv/bin/python ]] && echo "$repo/.venv/bin/python" || echo python3)}

if [[ ! -x $work/venv/bin/python ]]; then
    "$python" -m venv "$work/venv"
    # typer as the project pins it: from 0.27 it needs pydantic, which the GPU machine lacks
    "$work/venv/bin/python" -m pip install -q --disable-pip-version-check numpy Pillow pytest pytest-timeout httpx \
        psutil prometheus-client rich "typer<0.27"
fi
"$work/venv/bin/python" - <<'EOF'
import importlib.util, sys
packed = ["pyvips", "cffi", "pydantic", "pydantic_core", "pydantic_settings", "redis", "ecs_logging", "nvidia"]
present = [name for name in packed if importlib.util.find_spec(name)]
if present:
    sys.exit(f"the imitation of the GPU machine has what is packed: {', '.join(present)}")
EOF
parts=${GPU_REHEARSAL_PARTS:-$work/parts}
set=$([[ $stage == core ]] && echo core || echo all)
if [[ -z ${GPU_REHEARSAL_PARTS:-} ]] && ! grep -q "  ${stage}\.tar" "$parts/SHA256SUMS" 2>/dev/null; then
    GPU_CHECK_PY=$("$work/venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        PYTHON=$python "$repo/scripts/pack-gpu-check.sh" "$parts" "$set"
fi

# A fresh process with nothing of this environment's Python (no PYTHONPATH, no venv), as on the GPU machine.
exec env -i PATH="$PATH" HOME="${HOME:-/tmp}" LANG=C.UTF-8 \
    GPU_CHECK_PYTHON="$work/venv/bin/python" GPU_CHECK_SITE="$work/site" GPU_CHECK_HOLD="$work/hold" \
    GPU_CHECK_CORPUS="$work/corpus" GPU_CHECK_PHOTOS="${GPU_CHECK_PHOTOS:-3}" \
    GPU_CHECK_HUGE_SIDE="${GPU_CHECK_HUGE_SIDE:-3000}" GPU_CHECK_KERNEL_CASES="${GPU_CHECK_KERNEL_CASES:-800x600:64x48}" \
    "$repo/benchmarks/gpu_check.sh" "$([[ $stage == core ]] && echo core || echo rehearse-dali)" "$out" "$parts"
