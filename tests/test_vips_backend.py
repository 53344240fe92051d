"""The CPU backend (streaming libvips), judged by the real pixels of its output: what is its own (shrink-on-load,
planning, probing, memory); the contract every backend keeps is tests/test_backend_contract.py.

Every test makes its source image with `support/images.py`, runs `VipsBackend.render` on it as the worker does, decodes
the renditions with libvips and checks their pixels with numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
from support import images
from support.renditions import (
    OPAQUE,
    STEM,
    assert_marked_upright,
    close,
    lanczos3_reference,
    only,
    pixels,
    psnr,
    quadrants,
    render_with,
)

from gpu_worker.backends import context, finishing, plan, turbo
from gpu_worker.backends import decode as decoding
from gpu_worker.backends.vips import VipsBackend, configure_vips
from thumbify.errors import TooManyPixels
from thumbify.probe import probe
from thumbify.spec import ThumbnailSpec

# -- helpers -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend() -> VipsBackend:
    configure_vips(1)
    return VipsBackend()


@pytest.fixture
def render(backend: VipsBackend, tmp_path: Path):
    """render(data, name=..., **spec) -> renditions, exactly as the worker calls the backend."""
    return render_with(backend, tmp_path)


# -- EXIF orientation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_generator_stores_the_marker_elsewhere(orientation: int) -> None:
    """Sanity of the test images: the stored pixels are not upright, only the tag makes them so."""
    stored = pyvips.Image.new_from_buffer(images.oriented_jpeg(orientation), "")
    assert stored.get("orientation") == orientation
    assert (stored.width, stored.height) == ((160, 320) if orientation in (6, 8) else (320, 160))
    assert not close(quadrants(stored.numpy())["tl"], images.MARK, 12)
    assert_marked_upright(stored.autorot().numpy())


# -- colour: CMYK, ICC profiles, bit depth, grey ---------------------------------------------------------------------


def test_16_bit_png_levels_between_8_bit_steps(render) -> None:
    # 0x8080 / 257 = 128 exactly; 0x80ff is 128.5 in 8-bit terms: it must land on 128 or 129, not on 0x80ff >> 0.
    array = np.zeros((16, 48, 3), np.uint16)
    array[:, :16] = 0x8080
    array[:, 16:32] = 0x80FF
    array[:, 32:] = 65535
    data = images.from_array(array).pngsave_buffer(bitdepth=16)
    out = pixels(only(render(data, sizes="48", format="png")))
    assert close(out[8, 8], 128, 1) and close(out[8, 24], 128.5, 1) and close(out[8, 40], 255, 0)


def test_16_bit_grey_png(render) -> None:
    levels16 = [0, 16 * 257, 0x8080, 60000, 65535]
    data = images.grey16_png(levels16)
    assert pyvips.Image.new_from_buffer(data, "").format == "ushort"
    array = pixels(only(render(data, sizes="160", format="png"))).astype(int)
    for i, level in enumerate(levels16):
        assert close(array[16, 32 * i + 16], level / 257, 1), (level, array[16, 32 * i + 16])


# -- alpha ------------------------------------------------------------------------------------------------------------


def test_transparent_colour_never_bleeds_into_the_edge(render) -> None:
    # The transparent half hides pure green; premultiplied resampling must not let it into the visible edge.
    array = pixels(only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", format="png"))).astype(int)
    visible = array[..., 3] > 8
    assert array[visible][:, 1].max() <= OPAQUE[1] + 8


def test_alpha_is_flattened_onto_the_background_colour_for_jpeg(render) -> None:
    r = only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", format="jpeg", background="#ff8000"))
    array = pixels(r).astype(int)
    assert close(array[:, 55:].reshape(-1, 3).mean(axis=0), (255, 128, 0), 4)
    assert close(array[:, :45].reshape(-1, 3).mean(axis=0), OPAQUE, 3)


# -- animations --------------------------------------------------------------------------------------------------------


# -- input containers and output formats ------------------------------------------------------------------------------


# -- fit modes --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [1, 6])
def test_cover_overflow_is_cut_before_resampling(orientation: int) -> None:
    """The bound itself, on the worst case the limits allow: a 1x30000 strip covering a 4096 box would otherwise
    be resampled to 4096x122880000 (half a terapixel) before the crop."""
    from thumbify.geometry import place
    from thumbify.spec import Fit, Size

    upright_w, upright_h = 1, 30000
    stored = pyvips.Image.black(*((upright_h, upright_w) if orientation == 6 else (upright_w, upright_h)))
    placement = place(upright_w, upright_h, Size(width=4096, height=4096), Fit.cover)
    assert placement.resize_h == 4096 * 30000
    source = decoding.Source(stored, orientation, upright_w, upright_h, upright_w, upright_h)
    img, bounded, _, _ = finishing.cut_overflow(source, placement)
    assert (bounded.out_w, bounded.out_h) == (4096, 4096)
    assert bounded.resize_w >= 4096 and bounded.resize_h >= 4096
    assert bounded.resize_w * bounded.resize_h <= max(plan.OVERFLOW_BUDGET, 2 * 4096 * 4096)
    cut_w, cut_h = (img.height, img.width) if orientation == 6 else (img.width, img.height)
    assert cut_w == 1 and 1 <= cut_h <= 4
    # An ordinary cover is left alone.
    ordinary = place(4000, 3000, Size(width=256, height=256), Fit.cover)
    source = decoding.Source(pyvips.Image.black(4000, 3000), 1, 4000, 3000, 4000, 3000)
    assert finishing.cut_overflow(source, ordinary)[1] == ordinary


# -- the libjpeg-turbo decode -----------------------------------------------------------------------------------------


TURBO_SOURCES = {
    "photo 1283x851": lambda: images.photo_like(1283, 851, seed=7),
    "photo 4000x3000": lambda: images.photo_like(4000, 3000, seed=8, quality=90),
    "progressive 1024x768": lambda: images.encode(images.photo_like_image(1024, 768, seed=9), "progressive-jpeg"),
    "orientation 6": lambda: images.oriented_jpeg(6),
    "grey": lambda: images.grey_jpeg([0, 64, 128, 200, 255]),
    "Display P3": lambda: images.p3_tagged([(220, 40, 40), (40, 200, 60), (30, 60, 220)], fmt="jpeg"),
}


@pytest.mark.parametrize("name", TURBO_SOURCES)
@pytest.mark.parametrize("size", ["256", "100x50"])
def test_turbo_decode_renders_what_libvips_decode_renders(name: str, size: str, tmp_path: Path) -> None:
    """libjpeg-turbo 3 takes the plain JPEGs (RGB, grey; orientation and ICC profile carried over) and the thumbnail
    is pixel for pixel the one libvips' own loader gives at the same shrink, in every fit."""
    path = images.write(tmp_path / "source.jpg", TURBO_SOURCES[name]())
    for fit in ("inside", "cover"):
        spec = ThumbnailSpec(sizes=size, fit=fit, format="png")
        source, _ = decoding.load_source(context.prepare((path, "jpeg", spec, STEM), turbo=True), 1.9)
        assert not source.image.get_typeof("vips-loader"), "libjpeg-turbo should have decoded this source"
        fast = only(VipsBackend(turbo=True).render(path, "jpeg", spec, STEM))
        vips = only(VipsBackend(turbo=False).render(path, "jpeg", spec, STEM))
        assert (fast.width, fast.height) == (vips.width, vips.height)
        assert np.array_equal(pixels(fast), pixels(vips)), f"{fit}: the two decodes differ"


def test_turbo_decode_leaves_cmyk_to_libvips(tmp_path: Path) -> None:
    path = images.write(tmp_path / "cmyk.jpg", images.cmyk_jpeg())
    ctx = context.prepare((path, "jpeg", ThumbnailSpec(sizes="64"), STEM))
    assert turbo.turbo_jpeg(ctx, 1) is None


@pytest.mark.parametrize("quality, subsampled", [(80, True), (90, False)])
def test_turbo_encode_matches_libvips_jpegsave(quality: int, subsampled: bool) -> None:
    """The libjpeg-turbo encode gives what libvips' `jpegsave` gives: the same quantisation (pixels within the DCT's
    rounding), chroma subsampled below quality 90 only, no metadata."""
    image = images.photo_like_image(256, 192, seed=4)
    data = turbo.turbo_encode(image, quality)
    decoded = pyvips.Image.new_from_buffer(data, "")
    reference = pyvips.Image.new_from_buffer(image.jpegsave_buffer(Q=quality, keep="none"), "")
    assert psnr(decoded.numpy(), reference.numpy().astype(np.float64)) >= 40.0
    assert (decoded.get("jpeg-chroma-subsample") == "4:2:0") is subsampled
    assert not [f for f in decoded.get_fields() if f in ("exif-data", "icc-profile-data", "xmp-data", "iptc-data")]


# -- several sizes, names --------------------------------------------------------------------------------------------


def test_several_sizes_from_one_decode(render, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict] = []
    real_open = decoding.open_image

    def counting_open(path, fmt, **options):
        opened.append(options)
        return real_open(path, fmt, **options)

    real_turbo = decoding.turbo_jpeg

    def counting_turbo(ctx, shrink):
        image = real_turbo(ctx, shrink)
        if image is not None:
            opened.append({"decoder": "libjpeg-turbo", "shrink": shrink})
        return image

    for module in (context, decoding):  # the header, and the pixels
        monkeypatch.setattr(module, "open_image", counting_open)
    monkeypatch.setattr(decoding, "turbo_jpeg", counting_turbo)
    source = images.photo_like(1600, 1200, seed=11)
    out = render(source, sizes="256,128,64x32,100x50,320x200", format="png")
    assert sorted(r.name for r in out) == sorted(
        f"thumb_{STEM}_{w}x{h}.png" for w, h in [(256, 192), (128, 96), (43, 32), (67, 50), (267, 200)]
    )
    # One header read and one pixel decode (shrunk on load), whatever the number of sizes.
    assert len(opened) == 2
    assert opened[1].get("shrink") in (2, 4)
    # Each size is a good resample of the full-resolution source, not a resample of a resample gone soft.
    full = pyvips.Image.new_from_buffer(source, "").numpy().astype(np.float64)
    for r in out:
        array = pixels(r)
        assert array.shape == (r.height, r.width, 3)
        assert psnr(array, lanczos3_reference(full, r.width, r.height)) >= 40.0, r.name


# -- broken files ---------------------------------------------------------------------------------------------------


def test_corrupt_jpeg_header_still_probes(tmp_path: Path) -> None:
    # The damage is in the scan: the API's header probe accepts it, and the worker is the one that says no.
    path = images.write(tmp_path / "corrupt.jpg", images.corrupt_jpeg())
    assert (probe(path, 10**8).width, probe(path, 10**8).height) == (640, 480)


# -- resampling quality ------------------------------------------------------------------------------------------------


# -- probe -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 30000x30000 (900 MP) JPEG: black at Q=10 compresses to ~10 MB and writes in a couple of seconds."""
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    pyvips.Image.black(30000, 30000).jpegsave(str(path), Q=10)
    return path


def test_probe_reads_a_huge_jpeg_header_without_decoding(huge_jpeg: Path) -> None:
    info = probe(huge_jpeg, max_pixels=10**9)
    assert (info.format, info.width, info.height) == ("jpeg", 30000, 30000)
    assert info.bytes == huge_jpeg.stat().st_size
    assert (info.pages, info.has_alpha, info.orientation) == (1, False, 1)


def test_probe_rejects_too_many_pixels_from_the_header(huge_jpeg: Path) -> None:
    with pytest.raises(TooManyPixels) as info:
        probe(huge_jpeg, max_pixels=100_000_000)
    assert info.value.extra == {"width": 30000, "height": 30000}
    assert "900,000,000" in info.value.detail


def test_probe_believes_the_header_alone(tmp_path: Path) -> None:
    # A tiny file whose SOF claims 65000x65000: no decoder could make that many pixels from 1 KB, so a probe that
    # answers with these numbers has read the header and nothing else.
    path = images.write(tmp_path / "claims-huge.jpg", images.jpeg_with_sof_size(65000, 65000))
    assert path.stat().st_size < 2000
    info = probe(path, max_pixels=10**10)
    assert (info.width, info.height) == (65000, 65000)


def test_probe_swaps_axes_for_orientation(tmp_path: Path) -> None:
    path = images.write(tmp_path / "o6.jpg", images.oriented_jpeg(6, 320, 160))
    info = probe(path, 10**8)
    assert (info.width, info.height, info.orientation) == (320, 160, 6)
    assert info.public("o6.jpg") == {
        "filename": "o6.jpg",
        "format": "jpeg",
        "width": 320,
        "height": 160,
        "bytes": path.stat().st_size,
        "pages": 1,
        "has_alpha": False,
    }


def test_configure_vips_turns_the_operation_cache_off() -> None:
    configure_vips(1)
    assert pyvips.cache_get_max() == 0
    assert pyvips.cache_get_max_mem() == 0


@pytest.mark.parametrize("width, height", [(1280, 853), (1283, 851), (4000, 3000)])
def test_shrink_on_load_holds_45_db_when_sides_are_not_multiples_of_the_shrink(
    backend, tmp_path: Path, width: int, height: int
) -> None:
    """A JPEG decoded at 1/8 has ceil(side / 8) pixels, the last one only partly image: resampling must use the exact
    extent, or the thumbnail is stretched by a fraction of a pixel and loses several dB."""
    data = images.photo_like(width, height, seed=5, quality=95)
    path = images.write(tmp_path / "photo.jpg", data)
    r = only(backend.render(path, "jpeg", ThumbnailSpec(sizes="128", format="png"), STEM))
    full = pyvips.Image.new_from_buffer(data, "").numpy().astype(np.float64)
    score = psnr(pixels(r), lanczos3_reference(full, r.width, r.height))
    assert score >= 45.0, f"{width}x{height} → {r.width}x{r.height}: {score:.1f} dB"


def test_a_headroom_of_one_decodes_to_about_the_output_size(tmp_path: Path) -> None:
    """`THUMBIFY_RESAMPLE_HEADROOM=1.0`, thumbor's trade: 1024x768 → 256 is decoded at 1/4 (the default, 1/2) and
    barely resampled; the thumbnail is still the right size and close to the reference, if below the 45 dB bar."""
    configure_vips(1)
    data = images.photo_like(1024, 768, seed=3, quality=90)
    path = images.write(tmp_path / "web.jpg", data)
    spec = ThumbnailSpec(sizes="256", format="png")
    shrinks = {h: decoding.load_source(context.prepare((path, "jpeg", spec, STEM)), h)[1] for h in (1.0, 1.9)}
    assert shrinks == {1.0: 4, 1.9: 2}
    full = pyvips.Image.new_from_buffer(data, "").numpy().astype(np.float64)
    scores = {}
    for h in (1.0, 1.9):
        r = only(VipsBackend(h).render(path, "jpeg", spec, STEM))
        assert (r.width, r.height) == (256, 192)
        scores[h] = psnr(pixels(r), lanczos3_reference(full, 256, 192))
    assert 30.0 <= scores[1.0] < scores[1.9] and scores[1.9] >= 45.0, scores
