"""The NumPy twin of the CuPy kernels: the same two passes, the same float32 arithmetic in the same order.

Every output value is `acc = 0; for k in taps: acc += w[k] * x[k]` in float32, tap by tap, as separate IEEE
multiplies and adds (elementwise ufuncs, never BLAS), so a value does not depend on how many rows were computed
together. That is what lets the strip driver be bit-identical to the one-shot resample.
"""

from __future__ import annotations

import numpy as np

from kernels.weights import WeightTable

# Rows per block in the horizontal pass: bounds the temporaries (a block of gathered taps) on large images.
_BLOCK_ELEMENTS = 1 << 20


class NumpyBackend:
    """Horizontal and vertical resampling passes on NumPy arrays shaped [rows, columns, channels]."""

    name = "numpy"
    xp = np

    def asarray(self, image) -> np.ndarray:
        return np.asarray(image)

    def to_numpy(self, array) -> np.ndarray:
        return np.asarray(array)

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def horizontal(self, src: np.ndarray, table: WeightTable, out: np.ndarray) -> None:
        """out[r, i, c] = sum_k weights[i, k] * src[r, index[i, k], c], float32. `src` is uint8/uint16
        [rows, in_size, C]; `out` float32 [rows, out_size, C]."""
        rows, in_w, ch = src.shape
        index, weights = table.index, table.weights
        # Work on a column-major copy of each block ([in_w, rows, C]): a tap then gathers whole contiguous columns,
        # which is ~8x faster than fancy-indexing the middle axis. The arithmetic is unchanged.
        block = max(1, _BLOCK_ELEMENTS // max(1, max(in_w, table.out_size) * ch))
        for r0 in range(0, rows, block):
            r1 = min(rows, r0 + block)
            cols = np.ascontiguousarray(src[r0:r1].transpose(1, 0, 2))
            acc = np.zeros((table.out_size, r1 - r0, ch), np.float32)
            t = np.empty_like(acc)
            for k in range(table.taps):
                # uint8/uint16 * float32 is computed in float32 (the integer converts exactly).
                np.multiply(cols[index[:, k]], weights[:, k, None, None], out=t)
                acc += t
            out[r0:r1] = acc.transpose(1, 0, 2)

    def vertical(self, src: np.ndarray, table: WeightTable, row0: int, row1: int, base: int, out: np.ndarray) -> None:
        """Output rows `row0:row1` into `out` (dtype uint8/uint16, [row1 - row0, out_w, C]): rounded to nearest
        (ties to even) and clipped to the dtype. `src` is float32 holding input rows `base : base + len(src)`,
        which must include every row those outputs read."""
        index = table.index[row0:row1] - base
        weights = table.weights[row0:row1]
        if index.size and (index.min() < 0 or index.max() >= src.shape[0]):
            raise ValueError("vertical pass: the rows given do not cover the output rows asked for")
        maxval = float(np.iinfo(out.dtype).max)
        n = row1 - row0
        _, width, ch = src.shape
        block = max(1, _BLOCK_ELEMENTS // max(1, width * ch))
        acc = np.empty((min(block, n), width, ch), np.float32)
        t = np.empty_like(acc)
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            a, tt = acc[: i1 - i0], t[: i1 - i0]
            a.fill(0.0)
            for k in range(table.taps):
                np.multiply(src[index[i0:i1, k]], weights[i0:i1, k, None, None], out=tt)
                a += tt
            np.rint(a, out=a)
            np.clip(a, 0.0, maxval, out=a)
            out[i0:i1] = a  # exact: an integer-valued float32 within the dtype's range
