"""The CuPy kernels against their NumPy twin, the strip driver on the GPU, and its GPU memory bound.

Skipped (with the reason) where CuPy is not installed or sees no CUDA device; `test_kernels.py` covers the NumPy twin
everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
from support.kernel_reference import ALL_FILTERS, noise, random_heights, reference, strips_of

import kernels
from kernels import StripResampler, resample, resample_strips, weight_table

pytestmark = pytest.mark.gpu
cp = pytest.importorskip("cupy", reason="CuPy is not installed: the CuPy kernels are tested on a CUDA machine")
if not kernels.cuda_available():
    pytest.skip("CuPy sees no CUDA device: the CuPy kernels are tested on a CUDA machine", allow_module_level=True)

# After the skips: nothing here needs CuPy, but it reads better beside its use.

from kernels.cupy_backend import CupyBackend  # noqa: E402


def _max_diff(a, b) -> int:
    a = cp.asnumpy(a) if isinstance(a, cp.ndarray) else a
    b = cp.asnumpy(b) if isinstance(b, cp.ndarray) else b
    assert a.shape == b.shape and a.dtype == b.dtype
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@pytest.mark.parametrize("name", ALL_FILTERS)
@pytest.mark.parametrize(
    ("h", "w", "out_w", "out_h"),
    [(480, 640, 40, 30), (97, 131, 13, 11), (33, 21, 70, 50), (1024, 1024, 64, 64), (50, 40, 55, 20)],
)
def test_cupy_matches_numpy(name, h, w, out_w, out_h):
    image = noise(h, w, 3, seed=h + w)
    on_gpu = resample(image, out_w, out_h, name, backend="cupy")
    assert isinstance(on_gpu, cp.ndarray)
    assert _max_diff(on_gpu, resample(image, out_w, out_h, name)) <= 1
    assert _max_diff(on_gpu, reference(image, out_w, out_h, name).astype(np.uint8)) <= 1


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_cupy_dtypes_and_channels(channels, dtype):
    image = noise(161, 183, channels, dtype, seed=11)
    got = resample(cp.asarray(image), 49, 37)  # a CuPy array picks the CuPy backend
    assert isinstance(got, cp.ndarray) and got.dtype == dtype
    assert got.shape == ((37, 49) if channels is None else (37, 49, channels))
    assert _max_diff(got, resample(image, 49, 37)) <= 1


def test_cupy_non_contiguous_and_constant():
    image = noise(80, 90, 4, seed=3)
    view = cp.asarray(image)[::2, 5:-5, 1:]
    assert _max_diff(resample(view, 20, 11), resample(image[::2, 5:-5, 1:], 20, 11)) <= 1
    for value, dtype in ((0, np.uint8), (255, np.uint8), (65535, np.uint16)):
        flat = cp.full((300, 200, 3), value, dtype)
        for name in ALL_FILTERS:
            assert bool((resample(flat, 17, 23, name) == value).all())


@pytest.mark.parametrize("strip_source", ["host", "device"])
@pytest.mark.parametrize(
    ("h", "w", "channels", "dtype", "out_w", "out_h", "name"),
    [
        (301, 203, 3, np.uint8, 37, 29, "lanczos3"),
        (97, 131, None, np.uint8, 13, 11, "bicubic"),
        (64, 48, 4, np.uint16, 150, 170, "lanczos3"),
        (200, 40, 3, np.uint8, 40, 9, "box"),
    ],
)
def test_gpu_strips_match_one_shot(strip_source, h, w, channels, dtype, out_w, out_h, name):
    image = noise(h, w, channels, dtype, seed=h * w)
    source = image if strip_source == "host" else cp.asarray(image)
    one_shot = resample(source, out_w, out_h, name, backend="cupy")
    rng = np.random.default_rng(h)
    plans = {n: [n] * (h // n) + ([h % n] if h % n else []) for n in (1, 7, 64, h)}
    plans["random"] = random_heights(h, rng, max(2, h // 5))
    for label, heights in plans.items():
        got = resample_strips(strips_of(source, heights), w, h, out_w, out_h, name, backend="cupy")
        assert isinstance(got, cp.ndarray), label
        assert _max_diff(got, one_shot) <= 1, f"strip heights {label}"


_POOLS: list[_PeakPool] = []


class _PeakPool:
    """A fresh CuPy memory pool that records the most bytes in use at once. Instances are kept in `_POOLS` for the
    session: arrays allocated from a pool must not outlive it."""

    def __init__(self) -> None:
        self.pool = cp.cuda.MemoryPool()
        self.peak = 0
        _POOLS.append(self)

    def malloc(self, size: int):
        mem = self.pool.malloc(size)
        self.peak = max(self.peak, self.pool.used_bytes())
        return mem


@pytest.mark.parametrize(("strip", "channels"), [(64, 3), (7, 4), (3000, 3)])
def test_gpu_strip_memory_is_bounded(strip, channels):
    w, h, out_w, out_h = 4000, 3000, 256, 192
    image = noise(h, w, channels, seed=5)  # on the host: only strips go to the device
    expected = resample(image, out_w, out_h, backend="cupy")
    tracker = _PeakPool()
    with cp.cuda.using_allocator(tracker.malloc):
        # A backend of its own, so its weight tables are allocated (and counted) here too.
        driver = StripResampler(w, h, out_w, out_h, backend=CupyBackend())
        for y in range(0, h, strip):
            driver.push(image[y : y + strip])
        got = driver.result()
        cp.cuda.Device().synchronize()
    assert _max_diff(got, expected) <= 1
    strip_bytes = strip * w * channels
    intermediate = h * out_w * channels * 4  # the O(in_h × out_w) the contract allows
    tables = sum(
        t.weights.nbytes + t.start.nbytes + t.count.nbytes for t in (weight_table(w, out_w), weight_table(h, out_h))
    )
    slack = got.nbytes + tables + driver.vertical_taps * out_w * channels * 4 + (1 << 20)
    assert tracker.peak <= strip_bytes + intermediate + slack, (tracker.peak, strip_bytes, intermediate, slack)
    if strip < h:
        # Streaming keeps far less than even the intermediate: the strip's pass and a short tail of rows.
        rows = strip + 2 * driver.vertical_taps
        assert tracker.peak <= strip_bytes + rows * out_w * channels * 4 + slack
        assert tracker.peak < image.nbytes / 8
    del got, driver
    tracker.pool.free_all_blocks()


def test_gpu_offsets_beyond_two_to_the_31():
    # A one-shot pass over more than 2^31 values must use 64-bit offsets; the strip driver (small strips, small
    # offsets) is the check.
    h, w, ch = 23000, 32000, 3
    if cp.cuda.runtime.memGetInfo()[0] < 12 * (1 << 30):
        pytest.skip("needs about 12 GiB of free GPU memory")
    image = cp.empty((h, w, ch), cp.uint8)
    for y in range(0, h, 1000):  # in blocks: randint's temporaries are wider than uint8
        image[y : y + 1000] = cp.random.randint(0, 256, image[y : y + 1000].shape, dtype=cp.uint8)
    image[-100:] = 255 - image[-100:] // 2  # something distinctive where the offsets are largest
    one_shot = resample(image, 1000, 720)
    strips = (image[y : y + 1000] for y in range(0, h, 1000))
    by_strips = resample_strips(strips, w, h, 1000, 720, backend="cupy")
    assert _max_diff(one_shot, by_strips) == 0
    del image
    cp.get_default_memory_pool().free_all_blocks()
