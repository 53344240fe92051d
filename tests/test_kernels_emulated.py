"""The CuPy backend's CUDA kernels and Python side, run on the CPU by support/cuda_emulator.py (every block and thread
of each launch, argument types checked as the GPU needs them), against the NumPy twin: bit for bit.

The GPU itself is tested by tests/test_kernels_gpu.py where there is one; this runs on every CI machine.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from support.cuda_emulator import COMPILER, EmulatedRawKernel, fake_cupy_module
from support.kernel_reference import ALL_FILTERS, noise, random_heights, reference, strips_of

from kernels import StripResampler, resample, resample_strips
from kernels.cupy_backend import _SOURCE, CupyBackend

# It compiles the kernels with a C++ compiler.
pytestmark = [
    pytest.mark.service,
    pytest.mark.skipif(COMPILER is None, reason="no C++ compiler to emulate the CUDA kernels with"),
]


@pytest.fixture(scope="module")
def emulated() -> CupyBackend:
    return CupyBackend(xp=fake_cupy_module())


@pytest.mark.parametrize("name", ALL_FILTERS)
@pytest.mark.parametrize(
    ("h", "w", "out_w", "out_h"),
    [(480, 640, 40, 30), (97, 131, 13, 11), (33, 21, 70, 50), (50, 40, 55, 20), (1, 300, 7, 1), (300, 1, 1, 9)],
)
def test_kernels_match_numpy_bit_for_bit(emulated, name, h, w, out_w, out_h):
    image = noise(h, w, 3, seed=h + w)
    got = resample(image, out_w, out_h, name, backend=emulated)
    assert np.array_equal(got, resample(image, out_w, out_h, name))
    assert np.abs(got.astype(int) - reference(image, out_w, out_h, name).astype(int)).max() <= 1


@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_dtypes_and_channels(emulated, channels, dtype):
    image = noise(61, 83, channels, dtype, seed=11)
    got = resample(image, 29, 17, backend=emulated)
    assert got.dtype == dtype and got.shape == ((17, 29) if channels is None else (17, 29, channels))
    assert np.array_equal(got, resample(image, 29, 17))


def test_rounding_and_clipping_at_the_extremes(emulated):
    # Lanczos overshoots on hard edges: the kernel must clip to the type's range and round like the twin.
    for dtype, top in ((np.uint8, 255), (np.uint16, 65535)):
        edges = np.zeros((40, 40, 3), dtype)
        edges[:, ::2] = top
        edges[::3] = top
        for out in ((13, 11), (90, 70)):
            assert np.array_equal(resample(edges, *out, backend=emulated), resample(edges, *out))
        flat = np.full((30, 20, 3), top, dtype)
        assert (resample(flat, 7, 9, backend=emulated) == top).all()


@pytest.mark.parametrize(
    ("h", "w", "channels", "dtype", "out_w", "out_h", "name"),
    [
        (301, 203, 3, np.uint8, 37, 29, "lanczos3"),
        (64, 48, 4, np.uint16, 150, 170, "lanczos3"),
        (200, 40, 3, np.uint8, 40, 9, "box"),
    ],
)
def test_strip_driver_on_the_kernels_matches_one_shot(emulated, h, w, channels, dtype, out_w, out_h, name):
    image = noise(h, w, channels, dtype, seed=h * w)
    one_shot = resample(image, out_w, out_h, name)
    rng = np.random.default_rng(h)
    for heights in ([1] * h, [7] * (h // 7) + [h % 7], random_heights(h, rng, max(2, h // 5))):
        heights = [n for n in heights if n]
        got = resample_strips(strips_of(image, heights), w, h, out_w, out_h, name, backend=emulated)
        assert np.array_equal(got, one_shot), heights[:5]


def test_a_strip_driver_fed_row_by_row_keeps_its_tables_on_the_device(emulated):
    # The tiles backend's use: one StripResampler per image, many pushes; the weight tables are uploaded once.
    image = noise(120, 90, 3, seed=4)
    driver = StripResampler(90, 120, 30, 40, backend=emulated)
    for y in range(0, 120, 13):
        driver.push(image[y : y + 13])
    assert np.array_equal(driver.result(), resample(image, 30, 40))
    assert len(emulated._tables) >= 2


def test_the_emulator_refuses_what_the_gpu_would_get_wrong():
    source = _SOURCE.replace("SRC_T", "unsigned char").replace("DST_T", "unsigned char")
    kernel = EmulatedRawKernel(source, "resample_h")
    src = np.zeros((2, 4, 1), np.uint8)
    out = np.zeros((2, 2, 1), np.float32)
    weights, start, count = np.ones((2, 1), np.float32), np.zeros(2, np.int32), np.ones(2, np.int32)
    good = (src, out, weights, start, count, np.int64(2), np.int32(4), np.int32(2), np.int32(1), np.int32(1))
    kernel((1,), (256,), good)
    assert (out == 0).all()
    with pytest.raises(TypeError, match="long long"):  # an int32 where the kernel reads 8 bytes
        kernel((1,), (256,), (*good[:5], np.int32(2), *good[6:]))
    with pytest.raises(TypeError, match="holds float64"):
        kernel((1,), (256,), (src, out, weights.astype(np.float64), *good[3:]))
    with pytest.raises(TypeError, match="numpy scalar"):
        kernel((1,), (256,), (*good[:6], 4, *good[7:]))
    with pytest.raises(TypeError, match="takes 10 arguments"):
        kernel((1,), (256,), good[:-1])


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="no CUDA compiler (nvcc) here")
@pytest.mark.parametrize("ctype", ["unsigned char", "unsigned short"])
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])  # A100; H100/H200
def test_the_kernel_source_compiles_for_the_gpu(tmp_path, ctype, arch):
    # What CuPy's NVRTC does on the GPU machine at first use: the real CUDA dialect, not the emulator's shim.
    source = tmp_path / "kernels.cu"
    source.write_text(_SOURCE.replace("SRC_T", ctype).replace("DST_T", ctype))
    argv = [
        NVCC,
        f"-arch={arch}",
        "-cubin",
        "-Werror",
        "all-warnings",
        "-Xptxas",
        "-v",
        "-o",
        str(tmp_path / "k.cubin"),
    ]
    proc = subprocess.run([*argv, str(source)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("0 bytes spill stores") == 2, proc.stderr  # both kernels, no register spills
