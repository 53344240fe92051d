"""The strip driver: an image fed as row strips of any height, resampled exactly as the one-shot `resample` would.

Each strip goes through the horizontal pass at once (rows are independent), and the vertical pass is streamed: an
output row is computed as soon as every input row it reads has arrived, and only the input rows that pending output
rows still need are kept (fewer than the vertical tap count). Working memory is therefore the strip, its horizontal
pass (strip rows × out_w × C float32), that short tail, and the output — never the image, and never more than
in_h × out_w × C float32 for the intermediate even when the whole image comes as one strip.

Every output value is computed by the same backend passes, from the same float32 inputs, in the same tap order as
the one-shot path, so on NumPy the result is bit-identical whatever the strip heights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from kernels.backends import ArrayBackend, check_image, get_backend
from kernels.filters import DEFAULT_FILTER, get_filter
from kernels.weights import check_size, weight_table


class StripResampler:
    """Resample an in_w × in_h image to out_w × out_h from row strips pushed top to bottom.

    The first strip fixes the layout (H×W or H×W×C) and the pixel type (uint8/uint16); later strips must match.
    `push` returns the output rows it completed; `result()` the whole output once every input row has been pushed.
    `peak_bytes` is the most memory the driver itself held at once (its buffers, the output, and the device copy
    of a strip), for checking the bound.
    """

    def __init__(
        self,
        in_w: int,
        in_h: int,
        out_w: int,
        out_h: int,
        filter: str = DEFAULT_FILTER,
        backend: str | ArrayBackend | None = "numpy",
    ) -> None:
        self.in_w = check_size("input width", in_w)
        self.in_h = check_size("input height", in_h)
        self.out_w = check_size("output width", out_w)
        self.out_h = check_size("output height", out_h)
        self.filter = get_filter(filter).name
        self.backend = get_backend(backend)
        self._th = weight_table(self.in_w, self.out_w, self.filter)
        self._tv = weight_table(self.in_h, self.out_h, self.filter)
        # Emit output rows strictly in order; the running max/min make "ready" and "still needed" monotone even if
        # a trimmed run ever ends (or starts) a row earlier than its predecessor's.
        self._ready_at = np.maximum.accumulate(self._tv.end.astype(np.int64))
        self._needed_from = np.minimum.accumulate(self._tv.start.astype(np.int64)[::-1])[::-1]
        self._layout: tuple[int, np.dtype, bool] | None = None  # channels, dtype, strips are 2-D
        self._out: Any = None
        self._tail: Any = None  # horizontal-pass rows [self._base, self.rows_in) that pending outputs still read
        self._base = 0
        self.rows_in = 0
        self.rows_out = 0
        self.peak_bytes = 0

    @property
    def done(self) -> bool:
        return self.rows_out == self.out_h

    @property
    def vertical_taps(self) -> int:
        return self._tv.taps

    def push(self, strip) -> Any:
        """Feed the next rows (uint8/uint16, rows × in_w or rows × in_w × C). Returns the output rows this strip
        completed (possibly none), in the strip's layout and the backend's array type."""
        rows = self._check_strip(strip)
        ch, dtype, is_2d = self._layout
        be = self.backend
        if self._out is None:
            self._out = be.empty((self.out_h, self.out_w, ch), dtype)
        if rows == 0 or self.done:
            # Rows below the last output's support (possible with the box filter) are counted, not processed.
            self.rows_in += rows
            return self._rows(self.rows_out, self.rows_out)

        src = be.asarray(strip)
        copied = src.nbytes if src is not strip else 0
        src = src.reshape(rows, self.in_w, ch)
        kept = 0 if self._tail is None else self._tail.shape[0]
        mid = be.empty((kept + rows, self.out_w, ch), np.float32)
        if kept:
            mid[:kept] = self._tail
        self._track(copied + mid.nbytes + (self._tail.nbytes if kept else 0))
        self._tail = None
        be.horizontal(src, self._th, mid[kept:])
        del src
        self.rows_in += rows

        first = self.rows_out
        last = int(np.searchsorted(self._ready_at, self.rows_in, side="right"))
        if last > first:
            be.vertical(mid, self._tv, first, last, self._base, self._out[first:last])
            self.rows_out = last
        if not self.done:
            # Rows not yet pushed cannot be dropped (the next strip starts at rows_in), hence the min.
            keep_from = min(int(self._needed_from[self.rows_out]), self.rows_in)
            # A copy, so the strip-sized buffer is freed now rather than pinned by a view of its tail.
            self._tail = mid[keep_from - self._base :].copy()
            self._track(mid.nbytes + self._tail.nbytes)
            self._base = keep_from
        return self._rows(first, last)

    def result(self) -> Any:
        """The whole output (H×W or H×W×C as the strips were). ValueError until every input row has been pushed."""
        if self.rows_in < self.in_h or self._out is None:
            raise ValueError(f"strip driver: {self.in_h - self.rows_in} of {self.in_h} input rows not pushed yet")
        return self._rows(0, self.out_h)

    def _rows(self, first: int, last: int) -> Any:
        rows = self._out[first:last]
        return rows.reshape(last - first, self.out_w) if self._layout[2] else rows

    def _track(self, transient: int) -> None:
        self.peak_bytes = max(self.peak_bytes, transient + (self._out.nbytes if self._out is not None else 0))

    def _check_strip(self, strip) -> int:
        shape = tuple(strip.shape)
        if len(shape) not in (2, 3):
            raise ValueError(f"strip must be rows × W or rows × W × C, got shape {shape}")
        rows = shape[0]
        if rows == 0:
            if self._layout is None:
                raise ValueError("strip driver: the first strip must have at least one row")
            return 0
        _, width, ch, dtype, is_2d = check_image(strip)
        if width != self.in_w:
            raise ValueError(f"strip width {width} does not match the image width {self.in_w}")
        if self._layout is None:
            self._layout = (ch, dtype, is_2d)
        elif self._layout != (ch, dtype, is_2d):
            raise ValueError(
                f"strip layout {shape} {dtype} does not match the first strip's "
                f"({self._layout[0]} channels, {self._layout[1]}, {'2-D' if self._layout[2] else '3-D'})"
            )
        if self.rows_in + rows > self.in_h:
            raise ValueError(f"strip driver: {self.rows_in + rows} rows pushed, but the image has {self.in_h}")
        return rows


def resample_strips(
    strips: Iterable,
    in_w: int,
    in_h: int,
    out_w: int,
    out_h: int,
    filter: str = DEFAULT_FILTER,
    backend: str | ArrayBackend | None = "numpy",
) -> Any:
    """Resample an image given as an iterable of row strips (top to bottom); the same result as `resample`."""
    driver = StripResampler(in_w, in_h, out_w, out_h, filter=filter, backend=backend)
    for strip in strips:
        driver.push(strip)
    return driver.result()
