"""The huge-image backend (`tiles`: libvips strips → kernels' strip driver → the shared finishing steps): what only
it has. What every backend must do (orientation, colour, alpha, fits, formats, metadata, broken files, quality
against a float64 Lanczos-3 reference) is the contract suite's, run on tiles-cpu and tiles-gpu too
(test_backend_contract.py). Here: its settings and lazy CUDA import, agreement with the vips backend's pixels, what
the strip driver is given (sizes, orientation as stored, 16-bit samples, one pass for several sizes, nothing for a
source already the size), output independent of the strip height, GPU against CPU, the reader thread stopping on
failure, and bounded memory on a large image.

Every test runs on device="cpu" (the NumPy twin, always) and on device="gpu" (CuPy) where CUDA is usable; the GPU
runs skip with the reason otherwise. Small strips (37 rows, not a multiple of any codec's block) make even the
small test images go through many strips.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import pyvips
from support import images
from support.backends import needs_tiles_gpu
from support.renditions import (
    OPAQUE,
    assert_marked_upright,
    assert_readable,
    bands_image,
    close,
    lanczos3_reference,
    only,
    pixels,
    psnr,
    render_with,
)

import gpu_worker.backends.tiles as tiles_module
from gpu_worker.backends import context
from gpu_worker.backends import decode as decoding
from gpu_worker.backends.base import Rendition
from gpu_worker.backends.tiles import DEFAULT_STRIP_ROWS, TilesBackend, tiles_unavailable
from gpu_worker.backends.vips import VipsBackend, configure_vips
from kernels import StripResampler
from thumbify.errors import CorruptImage
from thumbify.probe import sniff
from thumbify.settings import Settings
from thumbify.spec import ThumbnailSpec

ROOT = Path(__file__).resolve().parents[1]
STEM = "pic"
STRIP_ROWS = 37
DEVICES = ["cpu", pytest.param("gpu", marks=[pytest.mark.gpu, needs_tiles_gpu])]


# -- helpers -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=DEVICES)
def backend(request: pytest.FixtureRequest) -> TilesBackend:
    configure_vips(1)
    return TilesBackend(request.param, strip_rows=STRIP_ROWS)


@pytest.fixture(scope="module")
def vips_backend() -> VipsBackend:
    configure_vips(1)
    return VipsBackend()


_NAMES = iter(range(1_000_000))


def _write(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    fmt = sniff(data[:32])
    assert fmt is not None, "the test image is not in a format we accept"
    path = tmp_path / f"source-{next(_NAMES)}.{fmt}"
    path.write_bytes(data)
    return path, fmt


@pytest.fixture
def render(backend: TilesBackend, tmp_path: Path):
    """render(data, **spec) -> renditions, exactly as the worker calls the backend."""
    return render_with(backend, tmp_path)


@pytest.fixture
def both(backend: TilesBackend, vips_backend: VipsBackend, tmp_path: Path):
    """both(data, **spec) -> (tiles renditions, vips renditions) of the same file and spec."""

    def _both(data: bytes, **spec) -> tuple[list[Rendition], list[Rendition]]:
        path, fmt = _write(tmp_path, data)
        spec_ = ThumbnailSpec(**spec)
        return backend.render(path, fmt, spec_, STEM), vips_backend.render(path, fmt, spec_, STEM)

    return _both


def visible(array: np.ndarray) -> np.ndarray:
    """Colour as seen: premultiplied by alpha where there is an alpha band (the colour under alpha 0 is arbitrary:
    libvips leaves the source's, we leave 0)."""
    if array.shape[2] not in (2, 4):
        return array.astype(np.float64)
    alpha = array[..., -1:].astype(np.float64)
    return np.concatenate([array[..., :-1] * (alpha / 255.0), alpha], axis=-1)


def assert_agree(ours: list[Rendition], theirs: list[Rendition], min_db: float = 35.0) -> None:
    """The same renditions (names, sizes, formats) as the vips backend, with visible pixels within `min_db` PSNR."""
    assert [(r.name, r.width, r.height, r.format) for r in ours] == [
        (r.name, r.width, r.height, r.format) for r in theirs
    ]
    for a, b in zip(ours, theirs, strict=True):
        pa, pb = pixels(a), pixels(b)
        assert pa.shape == pb.shape, a.name
        score = psnr(visible(pa), visible(pb))
        assert score >= min_db, f"{a.name}: {score:.1f} dB against the vips backend"


class RecordingDriver(StripResampler):
    """The kernels' strip driver, recording what it was given."""

    made: list[RecordingDriver] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pushed: list[tuple[tuple[int, ...], np.dtype]] = []
        RecordingDriver.made.append(self)

    def push(self, strip):
        self.pushed.append((tuple(strip.shape), np.dtype(strip.dtype)))
        return super().push(strip)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[RecordingDriver]:
    RecordingDriver.made = []
    monkeypatch.setattr(tiles_module, "StripResampler", RecordingDriver)
    return RecordingDriver.made


def no_reader_left() -> bool:
    return not any(t.name == "tiles-reader" and t.is_alive() for t in threading.enumerate())


# -- construction, settings, imports ---------------------------------------------------------------------------------


def test_settings_and_arguments() -> None:
    settings = Settings()
    assert settings.tiles_strip_rows == DEFAULT_STRIP_ROWS == 256
    assert settings.one_shot_max_pixels == 64_000_000
    assert tiles_unavailable("cpu") is None
    with pytest.raises(ValueError, match="device"):
        TilesBackend("tpu")
    with pytest.raises(ValueError, match="strip_rows"):
        TilesBackend("cpu", strip_rows=0)


@pytest.mark.service
def test_module_imports_without_cuda_and_cpu_renders(tmp_path: Path) -> None:
    """CUDA things are imported lazily: importing the module, and rendering on the cpu device, loads no CuPy."""
    path = images.write(tmp_path / "p.jpg", images.photo_like(300, 200))
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import gpu_worker.backends.tiles as tiles
        from thumbify.spec import ThumbnailSpec
        out = tiles.TilesBackend("cpu", strip_rows=16).render(Path({str(path)!r}), "jpeg", ThumbnailSpec(), "p")
        print(out[0].name, "cupy" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["thumb_p_256x171.jpg", "False"]


# -- geometry: sizes, boxes, fits, formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("fit", ["inside", "contain", "cover", "fill"])
@pytest.mark.parametrize("source", ["bands-png", "photo-jpeg"])
def test_sizes_and_fits_agree_with_vips(both, fit: str, source: str) -> None:
    data = bands_image().pngsave_buffer() if source == "bands-png" else images.photo_like(900, 600, seed=3)
    ours, theirs = both(data, sizes="300,100,80x120,150x30", fit=fit, format="png")
    assert len(ours) >= 3
    assert_agree(ours, theirs)


def test_a_source_already_the_size_is_not_resampled(render, recording) -> None:
    source = images.photo_like_image(100, 50, seed=9)
    r = only(render(source.pngsave_buffer(), sizes="256,320x200", fit="inside", format="png"))
    assert (r.width, r.height) == (100, 50)
    assert recording == []  # nothing to resample: the strip driver never ran


# -- orientation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_shrink_on_load_then_one_driver_pass_in_the_stored_orientation(render, recording, orientation: int) -> None:
    data = images.with_orientation(images.marked_image(2400, 1200), orientation).jpegsave_buffer(Q=90)
    out = render(data, sizes="100,64x64,40x20", format="png")
    assert [(r.width, r.height) for r in out] == [(100, 50), (64, 32), (40, 20)]
    (driver,) = recording
    # Decoded at 1/8 (300x150 upright), resampled once to the shared intermediate (1.9x the largest size), in the
    # stored orientation.
    assert (driver.in_w, driver.in_h) == ((150, 300) if orientation in (6, 8) else (300, 150))
    assert (driver.out_w, driver.out_h) == ((95, 190) if orientation in (6, 8) else (190, 95))
    assert len(driver.pushed) == -(-driver.in_h // STRIP_ROWS)


@pytest.mark.parametrize("container", ["png", "tiff"])
def test_one_size_without_shrink_on_load_is_resampled_straight_to_it(both, recording, container: str) -> None:
    # No DCT shrink: one size is resampled straight to its size (stored orientation: axes swapped).
    stored = images.with_orientation(images.marked_image(1200, 600), 6)
    ours, theirs = both(images.encode(stored, container), sizes="300", format="png")
    r = only(ours)
    assert (r.width, r.height) == (300, 150)
    assert_marked_upright(pixels(r))
    assert (recording[0].out_w, recording[0].out_h) == (150, 300)
    assert_agree(ours, theirs)


# -- 16-bit samples ----------------------------------------------------------------------------------------------------


def test_16_bit_png_stays_16_bit_through_the_kernels(render, recording) -> None:
    colours = [(10, 128, 250), (0, 255, 77), (200, 100, 3)]
    r = only(render(images.png16(colours, patch=64), sizes="96", format="png"))
    assert (r.width, r.height) == (96, 32)
    array = pixels(r)
    assert array.shape[2] == 3
    for i, colour in enumerate(colours):
        assert close(array[16, 32 * i + 16], colour, 1), (i, array[16, 32 * i + 16])
    assert {dtype for _, dtype in recording[0].pushed} == {np.dtype(np.uint16)}


def test_16_bit_levels_between_8_bit_steps_and_16_bit_grey(render) -> None:
    array = np.zeros((64, 192, 3), np.uint16)
    array[:, :64] = 0x8080
    array[:, 64:128] = 0x80FF
    array[:, 128:] = 65535
    out = pixels(only(render(images.from_array(array).pngsave_buffer(bitdepth=16), sizes="48", format="png")))
    assert close(out[8, 8], 128, 1) and close(out[8, 24], 128.5, 1) and close(out[8, 40], 255, 0)
    levels16 = [0, 16 * 257, 0x8080, 60000, 65535]
    grey = pixels(only(render(images.grey16_png(levels16, patch=64), sizes="160", format="png"))).astype(int)
    for i, level in enumerate(levels16):
        assert close(grey[16, 32 * i + 16], level / 257, 1), (level, grey[16, 32 * i + 16])


# -- alpha ------------------------------------------------------------------------------------------------------------


def test_soft_alpha_agrees_with_vips(both) -> None:
    # A photo under an alpha ramp (0 at the left edge to 255 at the right): premultiplied resampling all the way.
    photo = images.photo_like_image(600, 400, seed=4)
    ramp = (pyvips.Image.xyz(600, 400)[0] * (255 / 599)).cast("uchar")
    data = photo.bandjoin(ramp).copy(interpretation="srgb").pngsave_buffer()
    ours, theirs = both(data, sizes="150,64", format="png")
    assert all(pixels(r).shape[2] == 4 for r in ours)
    assert_agree(ours, theirs)


def test_16_bit_alpha_is_premultiplied_in_16_bits(render, recording) -> None:
    rgba16 = np.zeros((64, 256, 4), np.uint16)
    rgba16[:, :128] = (40 * 257, 90 * 257, 200 * 257, 65535)
    rgba16[:, 128:] = (0, 65535, 0, 0)
    png = pixels(only(render(images.from_array(rgba16).pngsave_buffer(bitdepth=16), sizes="64", format="png")))
    assert close(png[8, 10], (*OPAQUE, 255), 1) and png[8, 54, 3] == 0
    assert {dtype for _, dtype in recording[0].pushed} == {np.dtype(np.uint16)}


# -- several sizes, quality -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A 2400x1800 photo-like image as JPEG and as PNG (the same pixels), and those pixels as float64."""
    image = images.photo_like_image(2400, 1800, seed=1).copy_memory()  # made once, saved twice
    folder = tmp_path_factory.mktemp("photo")
    jpeg = images.write(folder / "photo.jpg", image.jpegsave_buffer(Q=95))
    png = images.write(folder / "photo.png", image.pngsave_buffer(compression=1))
    full = pyvips.Image.new_from_file(str(jpeg)).numpy().astype(np.float64)
    return jpeg, png, full


def test_several_sizes_from_one_decode(backend, photo, recording, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict] = []
    real_open = decoding.open_image

    def counting_open(path, fmt, **options):
        opened.append(options)
        return real_open(path, fmt, **options)

    for module in (context, decoding):  # the header, and the pixels
        monkeypatch.setattr(module, "open_image", counting_open)
    jpeg, _, full = photo
    out = backend.render(jpeg, "jpeg", ThumbnailSpec(sizes="96,64,48x32,40x40,80x50", format="png"), STEM)
    assert sorted(r.name for r in out) == sorted(
        f"thumb_{STEM}_{w}x{h}.png" for w, h in [(96, 72), (64, 48), (43, 32), (40, 30), (67, 50)]
    )
    # One header read, one sequential pixel decode shrunk on load (1/8: 300x225), one pass of the strip driver (to
    # 1.9x the largest size, 182x137), every size cut from that.
    assert len(opened) == 2
    assert opened[1].get("access") == "sequential" and opened[1].get("shrink") == 8
    (driver,) = recording
    assert (driver.in_w, driver.in_h, driver.out_w, driver.out_h) == (300, 225, 182, 137)
    for r in out:
        assert psnr(pixels(r), lanczos3_reference(full, r.width, r.height)) >= 40.0, r.name


@pytest.mark.parametrize("container", ["jpeg", "png"])
@pytest.mark.parametrize("sizes", ["160", "160,100"])
def test_quality_against_lanczos3_and_vips(backend, vips_backend, photo, recording, container: str, sizes: str) -> None:
    jpeg, png, full = photo
    path = jpeg if container == "jpeg" else png
    spec = ThumbnailSpec(sizes=sizes, format="png")
    ours = backend.render(path, container, spec, STEM)
    assert len(ours) == len(sizes.split(","))
    # The kernels did the heavy resampling: from 600x450 (JPEG at 1/4) or the whole 2400x1800 (PNG), to the size
    # itself (one size, exact decode) or to the shared intermediate.
    (driver,) = recording
    assert (driver.in_w, driver.in_h) == ((600, 450) if container == "jpeg" else (2400, 1800))
    if container == "png" and sizes == "160":
        assert (driver.out_w, driver.out_h) == (160, 120)
    for r in ours:
        score = psnr(pixels(r), lanczos3_reference(full, r.width, r.height))
        assert score >= 40.0, f"{container} {r.name}: {score:.1f} dB against a full-resolution Lanczos-3 reference"
    assert_agree(ours, vips_backend.render(path, container, spec, STEM))


def test_output_does_not_depend_on_the_strip_height(tmp_path: Path) -> None:
    """On the NumPy twin the strip driver is bit-identical whatever the strips: so is the backend."""
    png = images.write(tmp_path / "p.png", images.photo_like_image(800, 600, seed=6).pngsave_buffer())
    spec = ThumbnailSpec(sizes="200,64", format="png")
    outs = [TilesBackend("cpu", strip_rows=rows).render(png, "png", spec, STEM) for rows in (1, 64, 5000)]
    for out in outs[1:]:
        assert [r.data for r in out] == [r.data for r in outs[0]]


@pytest.mark.gpu
@needs_tiles_gpu
def test_gpu_and_cpu_agree(photo) -> None:
    _, png, _ = photo
    spec = ThumbnailSpec(sizes="300,96", format="png")
    gpu = TilesBackend("gpu", strip_rows=100).render(png, "png", spec, STEM)
    cpu = TilesBackend("cpu", strip_rows=100).render(png, "png", spec, STEM)
    for a, b in zip(gpu, cpu, strict=True):
        assert a.name == b.name
        assert np.abs(pixels(a).astype(int) - pixels(b).astype(int)).max() <= 1, a.name


# -- broken files -----------------------------------------------------------------------------------------------------


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "maker, fmt, sizes",
    [
        # Decoded at 1/8: 1200 rows, cut at about 600. Tall, so the damage lies well past libvips' first write-behind
        # buffer (its threads decode ahead: with a cut at row 150 the error could come before any strip was written).
        (lambda: _half(images.photo_like(600, 9600)), "jpeg", "64"),
        (lambda: _half(images.photo_like_image(600, 900).pngsave_buffer()), "png", "64"),
        (lambda: _half(images.photo_like_image(600, 900).pngsave_buffer()), "png", "128,64"),
    ],
    ids=["truncated-jpeg", "truncated-png", "truncated-png-several-sizes"],
)
def test_a_decode_that_fails_strips_in_stops_the_reader(render, recording, maker, fmt: str, sizes: str) -> None:
    """Whether each broken file is refused is the contract suite's; here, one the reader meets strips in."""
    with pytest.raises(CorruptImage) as info:
        render(maker(), sizes=sizes)
    assert_readable(info.value.detail, fmt)
    assert recording and recording[0].pushed, "it failed before any strip: not the case this test is for"
    assert no_reader_left()  # the reader thread stopped with the decode


def test_a_failing_caller_stops_the_reader(tmp_path: Path) -> None:
    """A caller that stops part-way (an error in a kernel, say) leaves no reader thread decoding behind it."""
    image = pyvips.Image.new_from_buffer(images.photo_like(300, 400), "", access="sequential")
    strips = tiles_module._strips(image, 16, np.empty)
    first = next(strips)
    assert first.shape == (16, 300, 3)
    strips.close()
    assert no_reader_left()


# -- bounded memory on a large image --------------------------------------------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from gpu_worker.backends.tiles import TilesBackend
    from gpu_worker.backends.vips import VipsBackend, configure_vips
    from thumbify.spec import ThumbnailSpec

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    path, fmt, which, device, rows = sys.argv[1:6]
    configure_vips(1)
    backend = VipsBackend() if which == "vips" else TilesBackend(device, strip_rows=int(rows))
    gpu = device == "gpu" and which == "tiles"
    if gpu:  # the baseline after CuPy and the CUDA context exist (~200 MB of host memory that is not the image's)
        import cupy
        cupy.zeros(1).sum().get()
    before = status("VmRSS")
    spec = ThumbnailSpec(sizes="256", format="png")
    start = time.perf_counter()
    out = backend.render(Path(path), fmt, spec, "big")
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "rss_growth": status("VmHWM") - before, "name": out[0].name}
    driver = getattr(backend, "last_driver", None)
    if driver is not None:
        result["driver_peak"] = driver.peak_bytes
    if gpu:
        pool = cupy.get_default_memory_pool()
        result["gpu_pool"] = pool.total_bytes()
        backend.render(Path(path), fmt, spec, "again")  # reuses the first render's device blocks (one stream)
        result["gpu_pool_again"] = pool.total_bytes()
    print(json.dumps(result))
    """
)


def _measure(path: Path, fmt: str, which: str, device: str = "cpu", rows: int = 64) -> dict:
    args = [sys.executable, "-c", _MEASURE, str(path), fmt, which, device, str(rows)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 12000x12000 (144 MP, 432 MB decoded) photo-like image as an uncompressed TIFF (no shrink-on-load: every
    pixel goes through the strips) and as a JPEG (decoded at 1/8). A 1000 px tile repeated: quick to make."""
    folder = tmp_path_factory.mktemp("large")
    big = images.photo_like_image(1000, 1000, seed=5).copy_memory().replicate(12, 12)
    tiff, jpeg = folder / "large.tif", folder / "large.jpg"
    big.tiffsave(str(tiff))
    big.jpegsave(str(jpeg), Q=85)
    return {"tiff": tiff, "jpeg": jpeg}


@pytest.mark.service
@pytest.mark.parametrize("device", DEVICES)
def test_memory_stays_bounded_on_a_large_image(large, device: str, capsys: pytest.CaptureFixture) -> None:
    decoded = 12000 * 12000 * 3
    ours = _measure(large["tiff"], "tiff", "tiles", device, rows=64)
    assert ours["name"] == "thumb_big_256x256.png"
    # Peak resident memory grows by a small fraction of the decoded image (measured: ~45 MB of its 432 MB).
    assert ours["rss_growth"] < decoded / 4, ours
    # The strip driver itself: a strip's horizontal pass, a short tail and the 256x256 output.
    assert ours["driver_peak"] < 16 * 2**20, ours
    if device == "gpu":
        assert ours["gpu_pool"] < 256 * 2**20, ours
        assert ours["gpu_pool_again"] <= ours["gpu_pool"] * 1.25, ours  # a second image reuses the pool's blocks
    theirs = _measure(large["tiff"], "tiff", "vips")
    jpeg_ours = _measure(large["jpeg"], "jpeg", "tiles", device, rows=256)
    jpeg_theirs = _measure(large["jpeg"], "jpeg", "vips")
    with capsys.disabled():
        for what, a, b in (("12000x12000 TIFF", ours, theirs), ("12000x12000 JPEG", jpeg_ours, jpeg_theirs)):
            print(
                f"\n  {what} -> 256: tiles({device}) {a['seconds']:.2f} s, peak RSS +{a['rss_growth'] / 2**20:.0f} MB"
                f" | vips {b['seconds']:.2f} s, peak RSS +{b['rss_growth'] / 2**20:.0f} MB",
                end="",
            )
