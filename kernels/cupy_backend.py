"""CuPy `RawKernel`s for the two resampling passes; the NumPy twin is `numpy_backend.py`.

CuPy is imported only when a `CupyBackend` is made, so this module imports on machines without it. The kernels take
uint8 or uint16 pixels with any channel count, accumulate in float32, and round to nearest (ties to even) and clip on
the way out, like the NumPy twin. Multiplies and adds are written as `__fmul_rn`/`__fadd_rn`, which the compiler may
not fuse into FMAs: the sum is then the same sequence of IEEE operations as NumPy's, so the two agree to the bit in
practice (the contract, and the tests, allow one level).

One thread per output value, grid-stride loops and 64-bit offsets (a one-shot 30000×30000×3 image has more than
2^31 values).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernels.weights import WeightTable

_SOURCE = r"""
typedef SRC_T src_t;
typedef DST_T dst_t;

extern "C" __global__ void resample_h(
    const src_t* __restrict__ src, float* __restrict__ dst,
    const float* __restrict__ weights, const int* __restrict__ start, const int* __restrict__ count,
    long long rows, int in_w, int out_w, int ch, int taps)
{
    const long long n = rows * out_w * ch;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const int c = (int)(i % ch);
        const long long t = i / ch;
        const int x = (int)(t % out_w);
        const long long row = t / out_w;
        const src_t* p = src + (row * in_w + start[x]) * ch + c;
        const float* w = weights + (long long)x * taps;
        const int m = count[x];
        float acc = 0.0f;
        for (int k = 0; k < m; ++k) {
            acc = __fadd_rn(acc, __fmul_rn((float)p[(long long)k * ch], w[k]));
        }
        dst[i] = acc;
    }
}

extern "C" __global__ void resample_v(
    const float* __restrict__ src, dst_t* __restrict__ dst,
    const float* __restrict__ weights, const int* __restrict__ start, const int* __restrict__ count,
    long long out_rows, int row0, int base, int out_w, int ch, int taps, float maxval)
{
    const long long row_len = (long long)out_w * ch;
    const long long n = out_rows * row_len;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long j = i % row_len;
        const int y = row0 + (int)(i / row_len);
        const float* p = src + (long long)(start[y] - base) * row_len + j;
        const float* w = weights + (long long)y * taps;
        const int m = count[y];
        float acc = 0.0f;
        for (int k = 0; k < m; ++k) {
            acc = __fadd_rn(acc, __fmul_rn(p[(long long)k * row_len], w[k]));
        }
        const float v = fminf(fmaxf(rintf(acc), 0.0f), maxval);
        dst[i] = (dst_t)v;
    }
}
"""

_C_TYPES = {np.dtype(np.uint8): "unsigned char", np.dtype(np.uint16): "unsigned short"}
_THREADS = 256
_MAX_BLOCKS = 65535 * 4  # enough to fill any current GPU; the grid-stride loop covers the rest


def _blocks(n: int) -> int:
    return max(1, min(_MAX_BLOCKS, (n + _THREADS - 1) // _THREADS))


class CupyBackend:
    """Horizontal and vertical resampling passes on CuPy arrays shaped [rows, columns, channels]."""

    name = "cupy"

    def __init__(self, xp: Any = None) -> None:
        """`xp`: the CuPy module (imported here, lazily: the package must import without it), or a stand-in with
        its interface, as the tests' CPU emulation of these kernels (tests/support/cuda_emulator.py)."""
        if xp is None:
            import cupy as xp

        self.xp = xp
        self._kernels: dict[tuple[str, np.dtype], Any] = {}
        # Device copies of the (immutable, cached) weight tables, keyed by identity; a table is held here as well so
        # its id cannot be reused while the entry lives.
        self._tables: dict[int, tuple[WeightTable, Any, Any, Any]] = {}

    def asarray(self, image):
        return self.xp.ascontiguousarray(self.xp.asarray(image))

    def to_numpy(self, array) -> np.ndarray:
        return self.xp.asnumpy(array)

    def empty(self, shape: tuple[int, ...], dtype):
        return self.xp.empty(shape, dtype)

    def _kernel(self, name: str, dtype: np.dtype):
        key = (name, np.dtype(dtype))
        kernel = self._kernels.get(key)
        if kernel is None:
            if key[1] not in _C_TYPES:
                raise ValueError(f"pixel type must be uint8 or uint16, got {dtype}")
            ctype = _C_TYPES[key[1]]
            code = _SOURCE.replace("SRC_T", ctype).replace("DST_T", ctype)
            kernel = self._kernels[key] = self.xp.RawKernel(code, name)
        return kernel

    def _device_table(self, table: WeightTable):
        entry = self._tables.get(id(table))
        if entry is None or entry[0] is not table:
            if len(self._tables) >= 64:
                self._tables.clear()
            cp = self.xp
            entry = (
                table,
                cp.asarray(table.weights, dtype=cp.float32),
                cp.asarray(table.start, dtype=cp.int32),
                cp.asarray(table.count, dtype=cp.int32),
            )
            self._tables[id(table)] = entry
        return entry[1:]

    def horizontal(self, src, table: WeightTable, out) -> None:
        """out[r, i, c] = sum_k weights[i, k] * src[r, start[i] + k, c] in float32; src uint8/uint16 C-contiguous
        [rows, in_size, C], out float32 C-contiguous [rows, out_size, C]."""
        rows, in_w, ch = src.shape
        if rows == 0:
            return
        _check_contiguous(src, out)
        w, start, count = self._device_table(table)
        n = rows * table.out_size * ch
        self._kernel("resample_h", src.dtype)(
            (_blocks(n),),
            (_THREADS,),
            (
                src,
                out,
                w,
                start,
                count,
                np.int64(rows),
                np.int32(in_w),
                np.int32(table.out_size),
                np.int32(ch),
                np.int32(table.taps),
            ),
        )

    def vertical(self, src, table: WeightTable, row0: int, row1: int, base: int, out) -> None:
        """Output rows `row0:row1` into `out` (uint8/uint16 C-contiguous [row1 - row0, out_w, C]), rounded and
        clipped; `src` float32 C-contiguous holds input rows `base : base + len(src)` covering every row read."""
        n_rows = row1 - row0
        if n_rows <= 0:
            return
        first = int(table.start[row0:row1].min())
        last = int(table.end[row0:row1].max())
        if first < base or last > base + src.shape[0]:
            raise ValueError("vertical pass: the rows given do not cover the output rows asked for")
        _check_contiguous(src, out)
        _, out_w, ch = src.shape
        w, start, count = self._device_table(table)
        maxval = float(np.iinfo(out.dtype).max)
        n = n_rows * out_w * ch
        self._kernel("resample_v", out.dtype)(
            (_blocks(n),),
            (_THREADS,),
            (
                src,
                out,
                w,
                start,
                count,
                np.int64(n_rows),
                np.int32(row0),
                np.int32(base),
                np.int32(out_w),
                np.int32(ch),
                np.int32(table.taps),
                np.float32(maxval),
            ),
        )


def _check_contiguous(*arrays) -> None:
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("CuPy kernels need C-contiguous arrays")
