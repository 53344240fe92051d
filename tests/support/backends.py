"""The render backends this machine can run, as pytest parameters (each one skipped, with its reason, where its
library or a usable GPU is missing), and the skip marks for one backend's tests."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator

import pytest

from gpu_worker import backend_choice
from gpu_worker.backends.devices import cupy_unavailable
from gpu_worker.backends.route import RoutedBackend
from gpu_worker.backends.vips import VipsBackend, configure_vips


def missing(module: str) -> str | None:
    """Why `module` does not import here, or None when it does."""
    try:
        __import__(module)
    except Exception as exc:  # noqa: BLE001 - any failure to import means "not here"
        return f"{module} does not import: {type(exc).__name__}: {exc}"
    return None


DALI_MISSING = missing("nvidia.dali")
# crop=faces needs OpenCV (the `faces` extra), which the GPU machine's package set lacks (its wheel alone is 62 MB).
OPENCV_MISSING = None if importlib.util.find_spec("cv2") else "OpenCV (the faces extra) is not installed"
needs_opencv = pytest.mark.skipif(OPENCV_MISSING is not None, reason=str(OPENCV_MISSING))
TILES_MISSING = missing("gpu_worker.backends.tiles")
GPU_MISSING = backend_choice.gpu_unavailable(0)
# tiles on the GPU needs CuPy on a device, not DALI (the GPU check's core stage has no DALI).
TILES_GPU_MISSING = TILES_MISSING or cupy_unavailable()
needs_dali = pytest.mark.skipif(DALI_MISSING is not None, reason=str(DALI_MISSING))
needs_tiles = pytest.mark.skipif(TILES_MISSING is not None, reason=f"tiles is not ready: {TILES_MISSING}")
needs_gpu = pytest.mark.skipif(GPU_MISSING is not None, reason=f"no GPU backends here: {GPU_MISSING}")
needs_tiles_gpu = pytest.mark.skipif(TILES_GPU_MISSING is not None, reason=f"no GPU here: {TILES_GPU_MISSING}")
no_gpu = pytest.mark.skipif(GPU_MISSING is None, reason="this machine has a usable GPU")
CAP = 400_000  # a small one-shot cap, so that small test images go to tiles


def backend_params() -> list:
    made = {
        "vips": lambda: VipsBackend(),
        "dali-cpu": lambda: _dali("cpu"),
        "tiles-cpu": lambda: tiles_backend("cpu"),
        "router-cpu": lambda: RoutedBackend("cpu", num_threads=1, one_shot_max_pixels=CAP, strip_rows=64),
        "dali-gpu": lambda: _dali("gpu"),
        "tiles-gpu": lambda: tiles_backend("gpu"),
        "router-gpu": lambda: RoutedBackend("gpu", one_shot_max_pixels=CAP, strip_rows=64),
    }
    needs = {
        "dali-cpu": [DALI_MISSING],
        "tiles-cpu": [TILES_MISSING],
        "router-cpu": [DALI_MISSING],
        "dali-gpu": [GPU_MISSING],
        "tiles-gpu": [TILES_GPU_MISSING],
        "router-gpu": [GPU_MISSING],
    }
    params = []
    for name, make in made.items():
        reasons = [r for r in needs.get(name, []) if r]
        marks = [pytest.mark.skip(reason=f"{name}: {reasons[0]}")] if reasons else []
        if name.endswith("-gpu"):
            marks.append(pytest.mark.gpu)
        params.append(pytest.param(make, id=name, marks=marks))
    return params


def _dali(device: str):
    from gpu_worker.backends.dali import DaliBackend

    return DaliBackend(device, device_id=0 if device == "gpu" else None, num_threads=1)


def tiles_backend(device: str, strip_rows: int = 64):
    """The tiles backend on `device`, with strips small enough that small test images still span several."""
    from gpu_worker.backends.tiles import TilesBackend

    return TilesBackend(device, strip_rows=strip_rows)


@contextlib.contextmanager
def opened(make: Callable[[], object]) -> Iterator:
    """The backend `make` builds, as a worker with one libvips thread has it; closed on the way out."""
    configure_vips(1)
    backend = make()
    try:
        yield backend
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
