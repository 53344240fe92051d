"""What the `kernels` tests compare against: the filters and a float64 separable resample written out plainly
(independent of kernels/), test pixels, and strip cutting."""

from __future__ import annotations

import math

import numpy as np
import pyvips

from kernels import FILTERS

ALL_FILTERS = sorted(FILTERS)


def _ref_filter(name: str, x: float) -> float:
    """The filters again, written out plainly (independent of kernels/filters.py)."""
    ax = abs(x)
    if name == "lanczos3":
        if ax == 0.0:
            return 1.0
        if ax >= 3.0:
            return 0.0
        return 3.0 * math.sin(math.pi * x) * math.sin(math.pi * x / 3.0) / (math.pi * math.pi * x * x)
    if name == "bicubic":
        if ax < 1.0:
            return 1.5 * ax**3 - 2.5 * ax**2 + 1.0
        if ax < 2.0:
            return -0.5 * ax**3 + 2.5 * ax**2 - 4.0 * ax + 2.0
        return 0.0
    if name == "bilinear":
        return max(0.0, 1.0 - ax)
    if name == "box":
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    raise AssertionError(name)


def ref_matrix(n_in: int, n_out: int, name: str) -> np.ndarray:
    """float64 [n_out, n_in]: pixel centres (i + 0.5) * scale - 0.5, support widened by the scale when
    downscaling, taps outside the image dropped and the rest renormalised."""
    support = {"lanczos3": 3.0, "bicubic": 2.0, "bilinear": 1.0, "box": 0.5}[name]
    scale = n_in / n_out
    stretch = max(1.0, scale)
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        centre = (i + 0.5) * scale - 0.5
        lo = max(0, math.floor(centre - support * stretch))
        hi = min(n_in - 1, math.ceil(centre + support * stretch))
        for j in range(lo, hi + 1):
            m[i, j] = _ref_filter(name, (j - centre) / stretch)
        m[i] /= m[i].sum()
    return m


def reference(image: np.ndarray, out_w: int, out_h: int, name: str) -> np.ndarray:
    """Float64 separable resample, rounded and clipped like the kernels (round half to even)."""
    h, w = image.shape[:2]
    planes = image.reshape(h, w, -1).astype(np.float64)
    wv, wh = ref_matrix(h, out_h, name), ref_matrix(w, out_w, name)
    out = np.einsum("ij,jkc,lk->ilc", wv, planes, wh)
    maxval = np.iinfo(image.dtype).max
    out = np.clip(np.rint(out), 0, maxval)
    return out.reshape((out_h, out_w) + image.shape[2:])


def noise(h: int, w: int, channels: int | None = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Random pixels, smoothed a little so there is both structure and full-range detail."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels is None else (h, w, channels)
    maxval = np.iinfo(dtype).max
    a = rng.integers(0, maxval + 1, shape).astype(np.float64)
    a = 0.5 * a + 0.25 * (np.roll(a, 1, 0) + np.roll(a, 1, 1))
    a[: h // 3] = rng.integers(0, 2, a[: h // 3].shape) * maxval  # a band of extremes, to exercise the clipping
    return np.clip(np.rint(a), 0, maxval).astype(dtype)


def to_array(image: pyvips.Image) -> np.ndarray:
    fmt = {"uchar": np.uint8, "ushort": np.uint16}[image.format]
    a = np.ndarray(buffer=image.write_to_memory(), dtype=fmt, shape=(image.height, image.width, image.bands))
    return a[:, :, 0] if image.bands == 1 else a


def random_heights(total: int, rng: np.random.Generator, most: int) -> list[int]:
    heights = []
    while sum(heights) < total:
        heights.append(int(min(total - sum(heights), rng.integers(1, most + 1))))
    return heights


def strips_of(image: np.ndarray, heights: list[int]):
    y = 0
    for n in heights:
        yield image[y : y + n]
        y += n
    assert y == image.shape[0]
