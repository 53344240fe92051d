"""One interface, two implementations: `get_backend("numpy" | "cupy")` and the one-shot `resample`.

A backend has `horizontal(src, table, out)` and `vertical(src, table, row0, row1, base, out)` on arrays shaped
[rows, columns, channels], plus `asarray`, `empty` and `to_numpy`. The horizontal pass runs first: it is the one a
strip of full rows can do on its own, and it shrinks every row to the output width before anything is kept.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

import numpy as np

from kernels.filters import DEFAULT_FILTER, get_filter
from kernels.numpy_backend import NumpyBackend
from kernels.weights import WeightTable, check_size, weight_table

PIXEL_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


class ArrayBackend(Protocol):
    """The array library the kernels run on: NumPy on the CPU, CuPy on a GPU (not an image backend of the worker)."""

    name: str
    xp: Any

    def asarray(self, image) -> Any: ...

    def to_numpy(self, array) -> np.ndarray: ...

    def empty(self, shape: tuple[int, ...], dtype) -> Any: ...

    def horizontal(self, src, table: WeightTable, out) -> None: ...

    def vertical(self, src, table: WeightTable, row0: int, row1: int, base: int, out) -> None: ...


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - ImportError, CUDARuntimeError, a missing driver library: all mean "no"
        return False


@cache
def _numpy_backend() -> NumpyBackend:
    return NumpyBackend()


@cache
def _cupy_backend():
    from kernels.cupy_backend import CupyBackend

    return CupyBackend()


def get_backend(name: str | ArrayBackend | None = None, image: Any = None) -> ArrayBackend:
    """The backend called `name`; with None, CuPy for a CuPy array and NumPy for anything else."""
    if name is None:
        name = "cupy" if type(image).__module__.split(".")[0] == "cupy" else "numpy"
    if not isinstance(name, str):
        return name
    if name == "numpy":
        return _numpy_backend()
    if name == "cupy":
        try:
            return _cupy_backend()
        except ImportError as exc:
            raise RuntimeError("the cupy backend needs CuPy, which is not installed") from exc
    raise ValueError(f"unknown backend {name!r}; known: numpy, cupy")


def check_image(image) -> tuple[int, int, int, np.dtype, bool]:
    """(height, width, channels, dtype, is_2d) of a uint8/uint16 H×W or H×W×C image; ValueError otherwise."""
    shape = tuple(image.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"image must be H×W or H×W×C, got shape {shape}")
    dtype = np.dtype(image.dtype)
    if dtype not in PIXEL_TYPES:
        raise ValueError(f"pixel type must be uint8 or uint16, got {dtype}")
    h, w = shape[:2]
    ch = shape[2] if len(shape) == 3 else 1
    if h < 1 or w < 1 or ch < 1:
        raise ValueError(f"image must have at least one pixel and one channel, got shape {shape}")
    return h, w, ch, dtype, len(shape) == 2


def resample(
    image, out_w: int, out_h: int, filter: str = DEFAULT_FILTER, backend: str | ArrayBackend | None = None
) -> Any:
    """`image` (uint8/uint16, H×W or H×W×C with any C) resampled to out_w × out_h, same dtype and layout.

    The backend defaults to the array's own kind (CuPy array → CuPy kernels). A CuPy backend given a NumPy image
    copies it to the device and returns a CuPy array.
    """
    out_w = check_size("output width", out_w)
    out_h = check_size("output height", out_h)
    get_filter(filter)
    be = get_backend(backend, image)
    h, w, ch, dtype, is_2d = check_image(image)
    src = be.asarray(image).reshape(h, w, ch)
    th = weight_table(w, out_w, filter)
    tv = weight_table(h, out_h, filter)
    mid = be.empty((h, out_w, ch), np.float32)
    be.horizontal(src, th, mid)
    out = be.empty((out_h, out_w, ch), dtype)
    be.vertical(mid, tv, 0, out_h, 0, out)
    return out.reshape(out_h, out_w) if is_2d else out
