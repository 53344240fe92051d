"""The `kernels` package on NumPy (always runs; the CuPy twin is tested in test_kernels_gpu.py).

Weight tables, agreement with an independent float64 reference, quality against libvips' own Lanczos-3, no aliasing
on a zone plate and a 1-px checkerboard, the strip driver's bit-identity with the one-shot path and its memory bound,
and argument checking.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from support import images
from support.kernel_reference import (
    ALL_FILTERS,
    noise,
    random_heights,
    ref_matrix,
    reference,
    strips_of,
    to_array,
)
from support.renditions import psnr

from kernels import FILTERS, StripResampler, get_backend, resample, resample_strips, weight_table

# -- weight tables --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FILTERS)
@pytest.mark.parametrize(("n_in", "n_out"), [(1000, 10), (1000, 257), (640, 640), (97, 31), (31, 97), (5, 1), (1, 7)])
def test_weights_sum_to_one_and_stay_inside(name, n_in, n_out):
    t = weight_table(n_in, n_out, name)
    assert t.weights.dtype == np.float32 and t.weights.shape == (n_out, t.taps)
    np.testing.assert_allclose(t.weights.astype(np.float64).sum(axis=1), 1.0, atol=1e-6)
    assert (t.count >= 1).all() and (t.start >= 0).all() and (t.end <= n_in).all()
    # Padding beyond each run is zero, and the first and last taps of a run are not (they were trimmed).
    k = np.arange(t.taps)[None, :]
    assert (t.weights[k >= t.count[:, None]] == 0).all()
    assert (t.weights[:, 0] != 0).all()
    assert (t.weights[np.arange(n_out), t.count - 1] != 0).all()
    # The same weights as the plain reference.
    np.testing.assert_allclose(t.dense(), ref_matrix(n_in, n_out, name), atol=1e-6)


@pytest.mark.parametrize("name", ALL_FILTERS)
def test_support_widens_with_the_scale(name):
    support = FILTERS[name].support
    taps = [weight_table(4000, n, name).taps for n in (4000, 2000, 400, 40)]
    assert taps == sorted(taps) and taps[-1] > taps[0]
    for n in (2000, 400, 40):
        scale = 4000 / n
        # About 2 * support * scale input pixels: every pixel under the stretched filter contributes.
        assert abs(weight_table(4000, n, name).taps - 2 * support * scale) <= 2
    # Upscaling does not stretch it.
    assert weight_table(100, 700, name).taps <= math.ceil(2 * support) + 1


def test_identity_is_exact():
    t = weight_table(123, 123, "lanczos3")
    assert t.taps == 1 and (t.weights == 1).all() and (t.start == np.arange(123)).all()
    image = noise(40, 123, 3)
    assert np.array_equal(resample(image, 123, 40), image)


def test_centres_follow_pillow_and_libvips():
    # 2x down with a triangle stretched to ±2 px: output 0 is centred at 0.5 (between inputs 0 and 1).
    t = weight_table(8, 4, "bilinear")
    assert t.start[1] == 1 and t.count[1] == 4
    np.testing.assert_allclose(t.weights[1], [1 / 8, 3 / 8, 3 / 8, 1 / 8], atol=1e-7)


# -- against the float64 reference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_FILTERS)
@pytest.mark.parametrize(
    ("h", "w", "out_w", "out_h"),
    [(120, 160, 40, 30), (97, 131, 13, 11), (33, 21, 70, 50), (64, 64, 4, 4), (50, 40, 55, 20)],
)
def test_matches_float64_reference(name, h, w, out_w, out_h):
    image = noise(h, w, 3, seed=h + w)
    got = resample(image, out_w, out_h, name)
    assert got.shape == (out_h, out_w, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(np.int64) - reference(image, out_w, out_h, name)).max() <= 1


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_dtypes_and_channels(channels, dtype):
    image = noise(61, 83, channels, dtype, seed=7)
    got = resample(image, 29, 23)
    expected_shape = (23, 29) if channels is None else (23, 29, channels)
    assert got.shape == expected_shape and got.dtype == dtype
    assert np.abs(got.astype(np.int64) - reference(image, 29, 23, "lanczos3")).max() <= 1
    # Channels are independent: each one alone gives the same plane.
    if channels:
        for c in range(channels):
            assert np.array_equal(resample(image[:, :, c], 29, 23), got[:, :, c])


def test_sixteen_bit_keeps_its_precision():
    # A smooth 16-bit ramp stays a 16-bit ramp (not 8-bit steps scaled up).
    ramp = np.linspace(0, 65535, 4096).round().astype(np.uint16)[None, :].repeat(8, 0)
    got = resample(ramp, 512, 4)
    assert len(np.unique(got[2])) > 500
    assert np.abs(got.astype(np.int64) - reference(ramp, 512, 4, "lanczos3")).max() <= 1


def test_non_contiguous_input():
    image = noise(80, 90, 4, seed=3)
    view = image[::2, 5:-5, 1:]
    assert np.array_equal(resample(view, 20, 11), resample(np.ascontiguousarray(view), 20, 11))


# -- quality --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("w", "h", "out_w", "out_h"), [(1200, 900, 300, 225), (997, 601, 100, 60)])
def test_psnr_against_libvips_lanczos3(w, h, out_w, out_h):
    vimage = images.photo_like_image(w, h, seed=w)
    ours = resample(to_array(vimage), out_w, out_h)
    theirs = to_array(vimage.resize(out_w / w, vscale=out_h / h, kernel="lanczos3"))
    assert theirs.shape == ours.shape
    assert psnr(ours, theirs) >= 40.0


def _flat_grey(out: np.ndarray) -> None:
    values = out.astype(np.float64)
    assert abs(values.mean() - 127.5) <= 2.0, values.mean()
    assert values.std() < 2.0, values.std()


@pytest.mark.parametrize("name", ALL_FILTERS)
def test_checkerboard_downscaled_16x_is_flat_grey(name):
    board = to_array(images.checkerboard(1024))
    _flat_grey(resample(board, 64, 64, name))
    # Odd factor and size too: still no pattern.
    _flat_grey(resample(board[:1000, :1000], 62, 62, name))


@pytest.mark.parametrize("name", ["lanczos3", "bicubic", "bilinear"])
def test_zone_plate_downscaled_16x_is_flat_grey(name):
    n = 1024
    plate = to_array(images.zone_plate(n))
    out = resample(plate, n // 16, n // 16, name)
    # The plate's local frequency is r / n cycles per pixel; near the centre it is below the output's Nyquist
    # (1/32) and rightly survives. From r = 160 out, everything under the filter is at >= 2x that Nyquist, so any
    # ring left there is aliasing.
    oy, ox = np.mgrid[0 : n // 16, 0 : n // 16]
    far = np.hypot((ox + 0.5) * 16 - n / 2, (oy + 0.5) * 16 - n / 2) >= 160
    _flat_grey(out[far])
    # The test can fail: point sampling (no filter) leaves strong rings there.
    assert plate[8::16, 8::16][far].std() > 20


# -- strip driver ---------------------------------------------------------------------------------------------------

STRIP_CASES = [
    # (h, w, channels, dtype, out_w, out_h, filter)
    (301, 203, 3, np.uint8, 37, 29, "lanczos3"),
    (97, 131, None, np.uint8, 13, 11, "bicubic"),
    (64, 48, 4, np.uint16, 150, 170, "lanczos3"),  # upscale
    (120, 77, 1, np.uint16, 30, 119, "bilinear"),
    (75, 60, 2, np.uint8, 22, 23, "box"),
    (200, 40, 3, np.uint8, 40, 9, "box"),  # 22.2x down on one axis only
    (1, 50, 3, np.uint8, 10, 1, "lanczos3"),
    (40, 1, None, np.uint8, 1, 3, "lanczos3"),
]


@pytest.mark.parametrize(("h", "w", "channels", "dtype", "out_w", "out_h", "name"), STRIP_CASES)
def test_strips_bit_identical_to_one_shot(h, w, channels, dtype, out_w, out_h, name):
    image = noise(h, w, channels, dtype, seed=h * w)
    expected = resample(image, out_w, out_h, name)
    rng = np.random.default_rng(h)
    plans = {n: [n] * (h // n) + ([h % n] if h % n else []) for n in (1, 7, 64, h)}
    plans["random"] = random_heights(h, rng, max(2, h // 5))
    plans["random-large"] = random_heights(h, rng, h)
    for label, heights in plans.items():
        got = resample_strips(strips_of(image, heights), w, h, out_w, out_h, name)
        assert got.dtype == expected.dtype and got.shape == expected.shape, label
        assert np.array_equal(got, expected), f"strip heights {label}"


def test_strip_driver_emits_rows_as_soon_as_they_are_ready():
    h, w, out_h = 400, 50, 20
    image = noise(h, w, 3)
    expected = resample(image, 10, out_h)
    driver = StripResampler(w, h, 10, out_h)
    got = []
    for y in range(0, h, 20):
        rows = driver.push(image[y : y + 20])
        got.append(rows.copy())
        # Everything whose input rows have all arrived is out; nothing else is.
        ready = int((weight_table(h, out_h).end <= y + 20).sum())
        assert driver.rows_out == ready
    assert driver.done and np.array_equal(np.concatenate(got), expected)
    assert np.array_equal(driver.result(), expected)


def test_strip_driver_memory_is_bounded_by_the_strip():
    # 6000 x 4000 x 3 (72 MB of uint8, 288 MB as float) made one strip at a time: the image never exists here.
    w, h, ch, out_w, out_h, strip = 6000, 4000, 3, 150, 100, 32
    # uint8 arithmetic wraps, which is the pattern wanted: diagonal ramps, different per channel.
    cols = ((np.arange(w)[None, :, None] * 7 + np.arange(ch)[None, None, :] * 50) % 256).astype(np.uint8)

    def strips():
        for y in range(0, h, strip):
            yield cols + ((np.arange(y, y + strip) * 3) % 256).astype(np.uint8)[:, None, None]

    driver = StripResampler(w, h, out_w, out_h)
    tracemalloc.start()
    try:
        for s in strips():
            driver.push(s)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = driver.result()
    assert out.shape == (out_h, out_w, ch)
    image_bytes = w * h * ch
    row_bytes = out_w * ch * 4
    taps = driver.vertical_taps
    # What the driver holds: the output, the strip's horizontal pass, and fewer than `taps` kept rows (the copy of
    # them briefly twice).
    assert driver.peak_bytes <= out.nbytes + (strip + 2 * taps) * row_bytes
    # Everything Python allocated meanwhile (strips, pass temporaries included): a small fraction of the image.
    strip_bytes = strip * w * ch
    assert peak < driver.peak_bytes + 4 * strip_bytes + (1 << 20), (peak, driver.peak_bytes, strip_bytes)
    assert peak < image_bytes / 20, (peak, image_bytes)


def test_one_strip_holds_at_most_in_h_by_out_w():
    image = noise(300, 400, 3)
    driver = StripResampler(400, 300, 20, 15)
    driver.push(image)
    assert driver.peak_bytes <= 300 * 20 * 3 * 4 + driver.result().nbytes


def test_strip_driver_rejects_bad_strips():
    driver = StripResampler(10, 20, 5, 5)
    with pytest.raises(ValueError, match="width"):
        driver.push(np.zeros((4, 11, 3), np.uint8))
    driver.push(np.zeros((4, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="match"):
        driver.push(np.zeros((4, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="match"):
        driver.push(np.zeros((4, 10, 3), np.uint16))
    with pytest.raises(ValueError, match="match"):
        driver.push(np.zeros((4, 10), np.uint8))
    with pytest.raises(ValueError, match="not pushed"):
        driver.result()
    with pytest.raises(ValueError, match="rows pushed"):
        driver.push(np.zeros((17, 10, 3), np.uint8))
    driver.push(np.zeros((16, 10, 3), np.uint8))
    assert driver.result().shape == (5, 5, 3)
    with pytest.raises(ValueError, match="first strip"):
        StripResampler(10, 20, 5, 5).push(np.zeros((0, 10, 3), np.uint8))


# -- arguments ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("out_w", "out_h", "name", "match"),
    [
        (0, 5, "lanczos3", "at least 1"),
        (5, -1, "lanczos3", "at least 1"),
        (5.0, 5, "lanczos3", "integer"),
        (True, 5, "lanczos3", "integer"),
        (5, 5, "lanczos2", "unknown resampling filter"),
        (5, 5, "", "unknown resampling filter"),
    ],
)
def test_bad_arguments(out_w, out_h, name, match):
    image = noise(10, 10, 3)
    with pytest.raises(ValueError, match=match):
        resample(image, out_w, out_h, name)
    with pytest.raises(ValueError, match=match):
        StripResampler(10, 10, out_w, out_h, name)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((10, 10, 3), np.float32),
        np.zeros((10, 10, 3), np.int16),
        np.zeros((10,), np.uint8),
        np.zeros((2, 10, 10, 3), np.uint8),
        np.zeros((0, 10, 3), np.uint8),
        np.zeros((10, 10, 0), np.uint8),
    ],
)
def test_bad_images(image):
    with pytest.raises(ValueError):
        resample(image, 5, 5)


def test_aliases_and_case():
    image = noise(40, 40, 3)
    assert np.array_equal(resample(image, 9, 9, "Area"), resample(image, 9, 9, "box"))
    assert np.array_equal(resample(image, 9, 9, "triangle"), resample(image, 9, 9, "bilinear"))
    assert np.array_equal(resample(image, 9, 9, "cubic"), resample(image, 9, 9, "bicubic"))
    assert np.array_equal(resample(image, 9, 9), resample(image, 9, 9, "lanczos3"))


def test_backend_choice():
    assert get_backend().name == "numpy"
    assert get_backend(image=np.zeros((2, 2), np.uint8)).name == "numpy"
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("opencl")


@pytest.mark.service
def test_imports_without_cupy():
    # The package and its NumPy path must not import CuPy (GPU modules import CUDA things lazily).
    code = (
        "import sys, numpy as np, kernels, kernels.cupy_backend;"
        "kernels.resample(np.zeros((8, 8, 3), np.uint8), 4, 4);"
        "assert 'cupy' not in sys.modules, 'cupy imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cupy_backend_without_cupy_says_so():
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="CuPy"):
            get_backend("cupy")
    else:
        pytest.skip("CuPy is installed here")


@pytest.mark.parametrize("name", ALL_FILTERS)
@pytest.mark.parametrize(("value", "dtype"), [(0, np.uint8), (1, np.uint8), (255, np.uint8), (65535, np.uint16)])
def test_flat_images_stay_flat(name, value, dtype):
    # Weights sum to 1 in float32 only approximately; rounding must still give back the exact level, with no
    # overshoot past the dtype's range at the top.
    flat = np.full((300, 200, 3), value, dtype)
    for out_w, out_h in ((17, 23), (450, 301), (200, 300)):
        assert (resample(flat, out_w, out_h, name) == value).all()
