"""Weight tables for one axis: for every output pixel, the first input pixel, the tap count and the tap weights.

Conventions (those of Pillow's `Resample.c`; libvips' `reduce` shares all but the edges):

- Output pixel `i` is centred on input coordinate `(i + 0.5) * scale - 0.5`, with `scale = in_size / out_size`.
- Downscaling (`scale > 1`) stretches the filter by `scale` and widens its support to `support * scale`, so every
  input pixel contributes and nothing above the output's Nyquist frequency survives (antialiasing). Upscaling uses the
  filter as it is.
- Edges: taps that fall outside the image are dropped and the remaining weights renormalised. (libvips repeats the
  edge pixel instead; that biases periodic patterns near the border and would make the tap run reach outside
  `[0, in_size)`, while dropping keeps every run a contiguous slice of real pixels.)
- Exact zero weights at either end of a run are trimmed, so an identity mapping is one tap of weight 1.
- Weights are computed in float64, normalised to sum 1, then stored as float32 (the kernels accumulate in float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from kernels.filters import DEFAULT_FILTER, get_filter


@dataclass(frozen=True, eq=False)
class WeightTable:
    """Resampling weights for one axis, `in_size` → `out_size` pixels.

    `start[i]` is the first input pixel of output pixel `i`, `count[i]` its number of taps, and `weights[i, :count[i]]`
    their weights; `weights[i, count[i]:]` is zero padding up to `taps` (the longest run).
    """

    in_size: int
    out_size: int
    filter: str
    start: np.ndarray  # int32 [out_size]
    count: np.ndarray  # int32 [out_size], >= 1
    weights: np.ndarray  # float32 [out_size, taps]

    @property
    def taps(self) -> int:
        return int(self.weights.shape[1])

    @property
    def scale(self) -> float:
        return self.in_size / self.out_size

    @cached_property
    def index(self) -> np.ndarray:
        """int32 [out_size, taps]: the input pixel of each tap. Padding taps repeat the run's last pixel, so a
        vectorised pass may read them (at weight 0) without ever leaving the run."""
        k = np.minimum(np.arange(self.taps, dtype=np.int32)[None, :], self.count[:, None] - 1)
        return _read_only(self.start[:, None] + k)

    @cached_property
    def end(self) -> np.ndarray:
        """int32 [out_size]: one past the last input pixel each output pixel reads."""
        return _read_only(self.start + self.count)

    def dense(self) -> np.ndarray:
        """float64 [out_size, in_size] matrix of the same weights (for tests and small references)."""
        m = np.zeros((self.out_size, self.in_size), np.float64)
        rows = np.repeat(np.arange(self.out_size), self.taps)
        idx = self.index.ravel()
        np.add.at(m, (rows, idx), self.weights.astype(np.float64).ravel())
        return m


def _read_only(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return int(value)


def weight_table(in_size: int, out_size: int, filter: str = DEFAULT_FILTER) -> WeightTable:
    """The `WeightTable` for `in_size` → `out_size` with `filter` (cached: tables are immutable)."""
    in_size = check_size("input size", in_size)
    out_size = check_size("output size", out_size)
    return _weight_table(in_size, out_size, get_filter(filter).name)


@lru_cache(maxsize=64)
def _weight_table(in_size: int, out_size: int, filter_name: str) -> WeightTable:
    filt = get_filter(filter_name)
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = filt.support * stretch

    centre = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    lo = np.floor(centre - support).astype(np.int64)
    span = int(math.ceil(2.0 * support)) + 2  # covers floor(c - s) .. ceil(c + s) for every c
    j = lo[:, None] + np.arange(span, dtype=np.int64)[None, :]
    w = filt((j - centre[:, None]) / stretch)
    w[(j < 0) | (j >= in_size)] = 0.0  # dropped, not folded onto the edge pixel

    nonzero = w != 0.0
    has_any = nonzero.any(axis=1)
    if not has_any.all():
        # Cannot happen for the built-in filters (the centre tap is always inside the support); keep a sane table
        # anyway: the nearest pixel, weight 1.
        rows = np.flatnonzero(~has_any)
        nearest = np.clip(np.rint(centre[rows]).astype(np.int64), 0, in_size - 1)
        w[rows] = 0.0
        w[rows, nearest - lo[rows]] = 1.0
        nonzero = w != 0.0
    first = nonzero.argmax(axis=1)
    last = span - 1 - nonzero[:, ::-1].argmax(axis=1)
    count = (last - first + 1).astype(np.int32)
    start = (lo + first).astype(np.int32)
    taps = int(count.max())

    # Gather each run to the left of a [out, taps] matrix; positions past the run read zeros.
    k = np.arange(taps)[None, :]
    pos = np.minimum(first[:, None] + k, span - 1)
    runs = np.take_along_axis(w, pos, axis=1)
    runs[k >= count[:, None]] = 0.0
    runs /= runs.sum(axis=1, keepdims=True)
    weights = runs.astype(np.float32)
    return WeightTable(in_size, out_size, filt.name, _read_only(start), _read_only(count), _read_only(weights))
