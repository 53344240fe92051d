"""Resampling filters: each a function of the distance in (unscaled) source pixels, and its support radius.

The functions take float64 arrays and return float64 arrays. Downscaling stretches them by the scale factor (see
`weights.py`); that stretching, not the function, is what makes the result antialiased.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Filter:
    name: str
    support: float  # radius in source pixels at scale 1; the function is 0 outside [-support, support]
    fn: Callable[[np.ndarray], np.ndarray]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(np.asarray(x, np.float64))


def _lanczos3(x: np.ndarray) -> np.ndarray:
    # np.sinc is the normalised sinc, sin(pi x) / (pi x); at nonzero integers it is ~1e-17 rather than 0, which
    # would keep dead taps alive (an identity resize would read 7 pixels instead of 1).
    value = np.sinc(x) * np.sinc(x / 3.0)
    return np.where((np.abs(x) < 3.0) & ((x == 0.0) | (x != np.round(x))), value, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    # Keys' cubic with a = -0.5 (Catmull-Rom), the bicubic of Pillow and libvips.
    a = -0.5
    ax = np.abs(x)
    near = ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1.0
    far = ((a * ax - 5.0 * a) * ax + 8.0 * a) * ax - 4.0 * a
    return np.where(ax < 1.0, near, np.where(ax < 2.0, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _box(x: np.ndarray) -> np.ndarray:
    # Half-open like Pillow's, so a pixel centre exactly between two taps is counted once.
    return np.where((x > -0.5) & (x <= 0.5), 1.0, 0.0)


FILTERS: dict[str, Filter] = {
    "lanczos3": Filter("lanczos3", 3.0, _lanczos3),
    "bicubic": Filter("bicubic", 2.0, _bicubic),
    "bilinear": Filter("bilinear", 1.0, _triangle),
    "box": Filter("box", 0.5, _box),
}

ALIASES: dict[str, str] = {
    "lanczos": "lanczos3",
    "cubic": "bicubic",
    "triangle": "bilinear",
    "linear": "bilinear",
    "area": "box",
}

DEFAULT_FILTER = "lanczos3"


def get_filter(name: str) -> Filter:
    """The filter called `name` (or one of its aliases); ValueError for any other name."""
    if isinstance(name, str):
        key = name.strip().lower()
        key = ALIASES.get(key, key)
        if key in FILTERS:
            return FILTERS[key]
    known = ", ".join(sorted([*FILTERS, *ALIASES]))
    raise ValueError(f"unknown resampling filter {name!r}; known: {known}")
