#!/usr/bin/env bash
# The GPU check, in stages that each fit one device call on a bare GPU machine with no package index:
#
#   benchmarks/gpu_check.sh core    OUT [PARTS]   the GPU's facts, then the tiles and vips rows of gpu_vs_cpu (12 MP
#                                                 photos, one huge JPEG) and kernels_bench, then the tiles GPU tests
#                                                 (its own, the contract's tiles-gpu cases) and the kernel ones
#                                                 (`-m gpu`); needs PARTS/core.tar (under 5 minutes)
#   benchmarks/gpu_check.sh receive OUT [PARTS]   keeps the parts it finds in PARTS (verified) in $GPU_CHECK_HOLD,
#                                                 for a later call on the same (still warm) machine; says what is
#                                                 still missing
#   benchmarks/gpu_check.sh dali    OUT [PARTS]   core.tar and every dali.tar.NN (from PARTS or held): install, the
#                                                 dali, router and node rows (each proving libnvjpeg is mapped, with
#                                                 the hardware JPEG decoder's load), then the DALI and router GPU tests
#   benchmarks/gpu_check.sh rehearse-dali OUT [PARTS]   the dali stage's install, then a CPU DALI pipeline (no GPU)
#
# PARTS (default .gpu-check in the repository) is what scripts/pack-gpu-check.sh writes: core.tar, dali.tar.NN and
# SHA256SUMS. Each stage verifies the parts it needs against SHA256SUMS, names the ones missing and stops at once
# (exit 2) rather than spend the lease on a set it cannot complete. The wheels are installed with the machine's own
# python3 (`pip install --no-index --no-deps --target`, then PYTHONPATH): no venv, so the machine's CuPy, NumPy,
# torch and pytest (with its plugins) stay as they are.
#
# OUT gets at most a handful of files (the device tool brings back 8): rows.jsonl (one JSON line per benchmark row,
# written as each finishes), summary.txt (each step's outcome and time), facts.txt (GPU, driver, CUDA, versions),
# pytest.xml, and logs.tar.gz (every step's log). The stage stays under $GPU_CHECK_BUDGET_S (core 290 s, dali 420 s):
# each step gets what is left, at most its own limit. Exit 1 if a step failed or ran out of time.
set -euo pipefail

usage="usage: benchmarks/gpu_check.sh core|receive|dali|rehearse-dali OUT [PARTS]"
stage=${1:?$usage}
out=${2:?$usage}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
parts=$(cd "${3:-$repo/.gpu-check}" 2>/dev/null && pwd || echo "${3:-$repo/.gpu-check}")
hold=${GPU_CHECK_HOLD:-/var/tmp/thumbify-gpu-parts}
site=${GPU_CHECK_SITE:-/tmp/thumbify-gpu-site}
python=${GPU_CHECK_PYTHON:-python3}
case $stage in
core) budget=${GPU_CHECK_BUDGET_S:-290} ;;
dali | rehearse-dali) budget=${GPU_CHECK_BUDGET_S:-420} ;;
receive) budget=60 ;;
*) echo "$usage" >&2 && exit 64 ;;
esac
cd "$repo"
mkdir -p "$out/logs"
out=$(cd "$out" && pwd)
logs=$out/logs
exec > >(tee -a "$logs/gpu_check.log") 2>&1
began=$SECONDS
failed=0
: >"$out/summary.txt"

note() { printf '\n== %s (%ss in) ==\n' "$*" "$((SECONDS - began))"; }
verdict() { printf '%-22s %-9s %s\n' "$1" "$2" "$3" | tee -a "$out/summary.txt"; }

# step NAME LIMIT_S CMD...: run CMD with a timeout of min(LIMIT_S, what is left), log to logs/NAME.log.
step() {
    local name=$1 limit=$2 left rc t0 result=ok
    shift 2
    left=$((budget - (SECONDS - began)))
    ((left < limit)) && limit=$left
    note "$name (limit ${limit}s)"
    if ((limit < 5)); then
        echo "SKIPPED: no time left in the ${budget}s budget" | tee "$logs/$name.log"
        verdict "$name" no-time -
        failed=1
        return 0
    fi
    t0=$SECONDS
    set +e
    if declare -F "$1" >/dev/null; then  # one of the functions here: in a fresh bash that has them all
        set -- bash -c "set -euo pipefail; $(declare -f); $(printf '%q ' "$@")"
    fi
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc == 124 || rc == 137)); then result=timeout; elif ((rc != 0)); then result=exit-$rc; fi
    [[ $result == ok ]] || failed=1
    verdict "$name" "$result" "$((SECONDS - t0))s"
}

finish() {  # finish [EXIT]: the summary, the logs packed; exit EXIT (else 1 if a step failed, else 0)
    note "summary"
    cat "$out/summary.txt"
    tar -C "$out" -czf "$out/logs.tar.gz" logs && rm -rf "$logs"
    ls -l "$out"
    if ((${1:-0} || failed)); then
        echo "gpu_check $stage: FAILED (see summary.txt and logs.tar.gz)"
        exit "${1:-1}"
    fi
    echo "gpu_check $stage: every step passed in $((SECONDS - began))s"
}

# -- parts: verified, found in PARTS or held from an earlier call ------------------------------------------------------

# The names SHA256SUMS lists for a set: core → core.tar; dali → every dali.tar.NN.
listed() { awk -v set="$1" '$2 ~ "^" set "\\.tar(\\.[0-9]+)?$" {print $2}' "$2"; }

sums_file() {
    local f
    for f in "$parts/SHA256SUMS" "$hold/SHA256SUMS"; do [[ -f $f ]] && echo "$f" && return; done
    return 1
}

# locate SET: print the path of each of the set's parts (verified); name the missing ones and fail.
locate() {
    local sums name missing=() where
    sums=$(sums_file) || { echo "no SHA256SUMS in $parts or $hold: run scripts/pack-gpu-check.sh and carry it" >&2; return 2; }
    for name in $(listed "$1" "$sums"); do
        where=
        for dir in "$parts" "$hold"; do
            if [[ -f $dir/$name ]] && grep -F "  $name" "$sums" | (cd "$dir" && sha256sum -c --quiet --status -); then
                where=$dir/$name && break
            fi
        done
        if [[ -n $where ]]; then echo "$where"; else missing+=("$name"); fi
    done
    if ((${#missing[@]})); then
        echo "the $1 set is incomplete: missing or damaged ${missing[*]} (carry them, or 'receive' them first)" >&2
        return 2
    fi
}

# install SET...: every set's wheels into $site with the machine's python3; PYTHONPATH points there.
install_sets() {
    local set paths wheels=$site/wheels incomplete=0
    for set in "$@"; do locate "$set" >/dev/null || incomplete=1; done
    ((incomplete == 0)) || return 2  # every missing part named before anything is unpacked
    rm -rf "$site" && mkdir -p "$wheels"
    for set in "$@"; do
        paths=$(locate "$set")
        # shellcheck disable=SC2086 # one path per line, no spaces (our own names)
        cat $paths | tar -x -C "$wheels"
        echo "$set: $(echo "$paths" | wc -l) part(s) verified"
    done
    "$python" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site/lib" "$wheels"/*.whl
    echo "installed $(find "$wheels" -name '*.whl' | wc -l) wheels into $site/lib"
    rm -rf "$wheels"
}

# -- facts -----------------------------------------------------------------------------------------------------------

facts() {
    "$python" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for name in ["numpy", "cupy", "pyvips", "pydantic", "pydantic_settings", "redis", "pytest", "httpx", "nvidia.dali"]:
    try:
        module = importlib.import_module(name)
        print(f"  {name:18} {getattr(module, '__version__', '?')}  {getattr(module, '__file__', '')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name:18} MISSING ({type(exc).__name__}: {exc})")
try:
    import pyvips
    print("libvips", pyvips.version(0), pyvips.version(1), pyvips.version(2))
except Exception as exc:  # noqa: BLE001
    print("libvips MISSING", exc)
from gpu_worker.backends.devices import cupy_unavailable
reason = cupy_unavailable()
if reason:
    print("GPU: unavailable:", reason)
else:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print("GPU:", name, f"sm_{props['major']}{props['minor']}", f"{props['totalGlobalMem'] / 2**30:.0f} GiB")
    print("CUDA driver", cupy.cuda.runtime.driverGetVersion(), "runtime", cupy.cuda.runtime.runtimeGetVersion())
EOF
}

required_imports() {  # what the stage cannot go on without, once its sets are installed
    "$python" -c "import numpy, pyvips, pydantic, pydantic_settings, redis, ecs_logging, pytest, httpx, kernels
import thumbify.settings, gpu_worker.backends.tiles, gpu_worker.renderers; $1" && echo "imports: ok"
}

run_facts() {
    note facts
    date -u | tee "$out/facts.txt"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi 2>&1 | tee -a "$out/facts.txt"
    else
        echo "nvidia-smi: not on PATH (no NVIDIA driver here)" | tee -a "$out/facts.txt"
    fi
    facts 2>&1 | tee -a "$out/facts.txt"
    verdict gpu "$(grep -q '^GPU: unavailable' "$out/facts.txt" && echo absent || echo present)" \
        "$(grep '^GPU:' "$out/facts.txt" | cut -c6-)"
}

gpu_tests() {  # gpu_tests FILE...: the tests marked gpu in FILE..., JUnit XML in OUT
    local args=(-q -ra -p no:cacheprovider -m gpu --junitxml "$out/pytest.xml")
    "$python" -c "import pytest_timeout" 2>/dev/null && args+=(--timeout 150)
    step pytest 200 "$python" -m pytest "${args[@]}" "$@"
}

dali_cpu_pipeline() {  # the slimmed DALI set decodes and renders JPEG, PNG and WebP on DALI's CPU operators
    "$python" - <<'EOF'
import tempfile
from pathlib import Path

import pyvips

from gpu_worker.backends.dali import DaliBackend
from thumbify.spec import ThumbnailSpec

folder = Path(tempfile.mkdtemp())
image = pyvips.Image.xyz(640, 480).extract_band(0).cast("uchar").bandjoin([128, 64])
items = []
for fmt in ("jpeg", "png", "webp"):
    path = folder / f"a.{fmt}"
    image.write_to_file(str(path))
    items.append((path, fmt, ThumbnailSpec(sizes="64", format="png"), fmt))
dali = DaliBackend("cpu", num_threads=1)
dali.start()
for item, result in zip(items, dali.render_batch(items), strict=True):
    assert isinstance(result, list), (item[1], result)
    print(item[1], "->", [r.name for r in result], "on DALI's CPU operators")
EOF
}

export PYTHONUNBUFFERED=1 parts hold site python
photos=${GPU_CHECK_PHOTOS:-}
huge=${GPU_CHECK_HUGE_SIDE:-20000}
case $stage in
receive)
    mkdir -p "$hold"
    [[ -f $parts/SHA256SUMS ]] && cp "$parts/SHA256SUMS" "$hold/"
    for f in "$parts"/core.tar "$parts"/dali.tar.*; do
        [[ -f $f ]] && cp "$f" "$hold/" && echo "held $(basename "$f")"
    done
    for set in core dali; do
        if found=$(locate $set 2>"$logs/missing.txt"); then
            verdict "$set set" complete "$(echo "$found" | wc -l) part(s)"
        else
            verdict "$set set" missing "$(cat "$logs/missing.txt")"
        fi
    done
    finish
    ;;
core)
    step install 60 install_sets core || true
    grep -q "^install  *ok" "$out/summary.txt" || finish 2
    export PYTHONPATH=$repo:$site/lib${PYTHONPATH:+:$PYTHONPATH}
    run_facts
    step imports 30 required_imports "" || true
    bench=(--jsonl "$out/rows.jsonl" --corpus "${GPU_CHECK_CORPUS:-/tmp/thumbify-corpus}" --photos "${photos:-16}"
        --groups photos,huge --huge-side "$huge" --row-timeout 90)
    step gpu_vs_cpu 170 "$python" -m benchmarks.gpu_vs_cpu --backends tiles,vips "${bench[@]}" \
        --out "$logs/gpu_vs_cpu.json"
    step kernels_bench 40 "$python" -m benchmarks.kernels_bench --rounds 2 --out "$logs/kernels.json" \
        --cases "${GPU_CHECK_KERNEL_CASES:-4000x3000:256x192,4000x3000:1024x768}"
    # The tiles tests first (its own, then the backend contract's tiles-gpu cases: `-m gpu` selects only those): the
    # kernel tests spend most of their time on float64 NumPy references (on the H200, 2026-12-04, they used up the
    # step), and the tiles tests are the ones that exercise the service's GPU path.
    gpu_tests tests/test_tiles_backend.py tests/test_backend_contract.py tests/test_kernels_gpu.py
    finish
    ;;
dali | rehearse-dali)
    step install 90 install_sets core dali || true
    grep -q "^install  *ok" "$out/summary.txt" || finish 2
    export PYTHONPATH=$repo:$site/lib${PYTHONPATH:+:$PYTHONPATH}
    run_facts
    step imports 60 required_imports "import nvidia.dali; print('DALI', nvidia.dali.__version__)" || true
    if [[ $stage == rehearse-dali ]]; then
        # No GPU: the slimmed DALI set must still build and run a CPU pipeline (JPEG, PNG and WebP through the dali
        # backend's own graph), the GPU rows must say why they are unavailable.
        step dali_cpu 120 dali_cpu_pipeline
    fi
    bench=(--jsonl "$out/rows.jsonl" --corpus "${GPU_CHECK_CORPUS:-/tmp/thumbify-corpus}" --photos "${photos:-32}"
        --huge-side "$huge" --row-timeout 90)
    # The rehearsal also runs the rows' CPU twins: the node row's render processes start from the packed sets too.
    [[ $stage == rehearse-dali ]] && bench+=(--cpu-twins --groups photos,web)
    step gpu_vs_cpu 240 "$python" -m benchmarks.gpu_vs_cpu --backends dali,router,node "${bench[@]}" \
        --out "$logs/gpu_vs_cpu.json"
    # test_corrupt_inputs, test_last_mcu: whether nvJPEG decodes a scan cut near its end as DALI's CPU decoder does
    # (grey for the MCUs lost, zero bits for a lost last one), and a sound file's last MCU as its codes say.
    gpu_tests tests/test_dali_backend.py tests/test_routing.py tests/test_corrupt_inputs.py tests/test_last_mcu.py
    finish
    ;;
esac
