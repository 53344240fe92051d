"""The CPU backend (streaming libvips), judged by the real pixels of its output.

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
    MAGIC,
    OPAQUE,
    STEM,
    assert_marked_upright,
    assert_readable,
    bands_image,
    close,
    decode,
    lanczos3_reference,
    only,
    pixels,
    psnr,
    quadrants,
    render_with,
)

from gpu_worker.backends import context, finishing, plan
from gpu_worker.backends import decode as decoding
from gpu_worker.backends.vips import VipsBackend, configure_vips
from thumbify.errors import CorruptImage, TooManyPixels
from thumbify.probe import probe, sniff
from thumbify.spec import EXTENSIONS, Format, ThumbnailSpec

LOADER = {Format.jpeg: "jpegload", Format.png: "pngload", Format.webp: "webpload", Format.avif: "heifload"}


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


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_single_size(render, orientation: int) -> None:
    # Displayed as 320x160 with the marker top-left; stored rotated/mirrored for orientations 2..8.
    r = only(render(images.oriented_jpeg(orientation, 320, 160), sizes="160", format="png"))
    assert (r.width, r.height) == (160, 80)  # upright: landscape even where the stored pixels are portrait
    assert r.name == f"thumb_{STEM}_160x80.png"
    assert_marked_upright(pixels(r))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_with_shrink_on_load_and_several_sizes(render, orientation: int) -> None:
    # Large enough for the JPEG to be decoded at 1/2..1/8, and several sizes, so the shared-intermediate path runs.
    data = images.with_orientation(images.marked_image(2400, 1200), orientation).jpegsave_buffer(Q=90)
    out = render(data, sizes="256,100x40,64x64", format="png")
    assert [(r.width, r.height) for r in out] == [(256, 128), (80, 40), (64, 32)]
    for r in out:
        assert_marked_upright(pixels(r))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_with_cover(render, orientation: int) -> None:
    data = images.oriented_jpeg(orientation, 320, 160)
    out = render(data, sizes="100x50,40x80", fit="cover", format="png")
    assert sorted((r.width, r.height) for r in out) == [(40, 80), (100, 50)]
    wide = next(r for r in out if r.width == 100)
    assert_marked_upright(pixels(wide))  # same aspect: nothing cropped, the marker is a quadrant


@pytest.mark.parametrize("container", ["png", "tiff", "webp"])
def test_orientation_tag_in_other_containers(render, container: str) -> None:
    stored = images.with_orientation(images.marked_image(320, 160), 6)
    r = only(render(images.encode(stored, container), sizes="160", format="png"))
    assert (r.width, r.height) == (160, 80)
    assert_marked_upright(pixels(r))


# -- colour: CMYK, ICC profiles, bit depth, grey ---------------------------------------------------------------------


@pytest.mark.parametrize("with_profile", [True, False], ids=["embedded-profile", "no-profile"])
@pytest.mark.parametrize("out_format", ["png", "jpeg"])
def test_cmyk_jpeg_comes_out_srgb_with_the_right_colours(render, with_profile: bool, out_format: str) -> None:
    data = images.cmyk_jpeg() if with_profile else images.cmyk_jpeg_without_profile()
    source = pyvips.Image.new_from_buffer(data, "")
    assert source.interpretation == "cmyk" and source.bands == 4
    assert bool(source.get_typeof("icc-profile-data")) == with_profile
    # The patches are 64 px; at 192x128 each is 64 px still (no resampling blur at the centres).
    r = only(render(data, sizes="192", format=out_format))
    assert (r.width, r.height) == (192, 128)
    image = decode(r)
    assert image.bands == 3 and image.interpretation == "srgb"
    array = image.numpy()
    for i, colour in enumerate(images.CMYK_PATCHES):
        x, y = images.patch_centre(i)
        got = array[y - 4 : y + 5, x - 4 : x + 5].reshape(-1, 3).mean(axis=0)
        assert close(got, colour, 12), f"patch {i}: expected {colour}, got {got.round(1)}"


P3_COLOURS = [(220, 40, 40), (40, 190, 70), (50, 70, 210), (128, 128, 128)]


@pytest.mark.parametrize("container", ["png", "jpeg"])
def test_icc_tagged_display_p3_comes_out_srgb(render, container: str) -> None:
    try:
        data = images.p3_tagged(P3_COLOURS, fmt=container)
    except pyvips.Error as exc:  # pragma: no cover - depends on the libvips build
        pytest.skip(f"this libvips has no built-in Display P3 profile: {exc}")
    stored = pyvips.Image.new_from_buffer(data, "").numpy()
    # The stored P3 values of the saturated patches are far from their sRGB values: ignoring the profile shows.
    x, y = images.patch_centre(0)
    assert np.abs(stored[y, x].astype(int) - P3_COLOURS[0]).max() > 15
    r = only(render(data, sizes="192", format="png"))
    array = pixels(r)
    for i, colour in enumerate(P3_COLOURS):
        x, y = images.patch_centre(i)
        got = array[y - 4 : y + 5, x - 4 : x + 5, :3].reshape(-1, 3).mean(axis=0)
        assert close(got, colour, 6), f"patch {i}: expected {colour}, got {got.round(1)}"


def test_16_bit_png_comes_out_8_bit_with_the_right_levels(render) -> None:
    colours = [(10, 128, 250), (0, 255, 77), (200, 100, 3)]
    data = images.png16(colours, patch=32)
    source = pyvips.Image.new_from_buffer(data, "")
    assert source.format == "ushort" and source.interpretation == "rgb16"
    r = only(render(data, sizes="96", format="png"))
    assert (r.width, r.height) == (96, 32)
    array = pixels(r)
    assert array.shape[2] == 3
    for i, colour in enumerate(colours):
        assert close(array[16, 32 * i + 16], colour, 1), (i, array[16, 32 * i + 16])


def test_16_bit_png_levels_between_8_bit_steps(render) -> None:
    # 0x8080 / 257 = 128 exactly; 0x80ff is 128.5 in 8-bit terms: it must land on 128 or 129, not on 0x80ff >> 0.
    array = np.zeros((16, 48, 3), np.uint16)
    array[:, :16] = 0x8080
    array[:, 16:32] = 0x80FF
    array[:, 32:] = 65535
    data = images.from_array(array).pngsave_buffer(bitdepth=16)
    out = pixels(only(render(data, sizes="48", format="png")))
    assert close(out[8, 8], 128, 1) and close(out[8, 24], 128.5, 1) and close(out[8, 40], 255, 0)


@pytest.mark.parametrize("container", ["png", "jpeg"])
def test_grey_input_gives_the_right_grey_levels(render, container: str) -> None:
    levels = [0, 16, 128, 240, 255]
    data = images.grey_png(levels) if container == "png" else images.grey_jpeg(levels)
    assert pyvips.Image.new_from_buffer(data, "").bands == 1
    for out_format in ("png", "jpeg"):
        r = only(render(data, sizes="160", format=out_format))
        assert (r.width, r.height) == (160, 32)
        array = pixels(r).astype(int)
        tol = 1 if container == "png" and out_format == "png" else 3
        for i, level in enumerate(levels):
            px = array[16, 32 * i + 16]
            assert close(px, level, tol), (out_format, level, px)
            assert px.max() - px.min() <= 1  # neutral: no colour cast


def test_16_bit_grey_png(render) -> None:
    levels16 = [0, 16 * 257, 0x8080, 60000, 65535]
    data = images.grey16_png(levels16)
    assert pyvips.Image.new_from_buffer(data, "").format == "ushort"
    array = pixels(only(render(data, sizes="160", format="png"))).astype(int)
    for i, level in enumerate(levels16):
        assert close(array[16, 32 * i + 16], level / 257, 1), (level, array[16, 32 * i + 16])


# -- alpha ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_format, tol", [("png", 1), ("webp", 4), ("avif", 6)])
def test_alpha_is_kept_for_formats_that_have_it(render, out_format: str, tol: int) -> None:
    r = only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", format=out_format))
    assert MAGIC[Format(out_format)](r.data)
    array = pixels(r).astype(int)
    assert array.shape == (50, 100, 4)
    left, right = array[:, :45], array[:, 55:]  # away from the soft edge the resampler makes
    assert left[..., 3].min() >= 255 - tol, "the opaque half stays opaque"
    assert close(left[..., :3].reshape(-1, 3).mean(axis=0), OPAQUE, tol)
    assert right[..., 3].max() <= tol, "the transparent half stays transparent"


def test_transparent_colour_never_bleeds_into_the_edge(render) -> None:
    # The transparent half hides pure green; premultiplied resampling must not let it into the visible edge.
    array = pixels(only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", format="png"))).astype(int)
    visible = array[..., 3] > 8
    assert array[visible][:, 1].max() <= OPAQUE[1] + 8


def test_alpha_is_flattened_onto_white_for_jpeg(render) -> None:
    r = only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", format="jpeg"))
    array = pixels(r).astype(int)
    assert array.shape == (50, 100, 3)
    assert close(array[:, :45].reshape(-1, 3).mean(axis=0), OPAQUE, 3)
    assert close(array[:, 60:], (255, 255, 255), 6)  # away from the edge, where JPEG rings


def test_alpha_is_flattened_onto_the_background_colour_for_jpeg(render) -> None:
    r = only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", format="jpeg", background="#ff8000"))
    array = pixels(r).astype(int)
    assert close(array[:, 55:].reshape(-1, 3).mean(axis=0), (255, 128, 0), 4)
    assert close(array[:, :45].reshape(-1, 3).mean(axis=0), OPAQUE, 3)


def test_grey_with_alpha(render) -> None:
    ga = np.zeros((64, 128, 2), np.uint8)
    ga[:, :64] = (100, 255)
    ga[:, 64:] = (200, 0)
    data = images.from_array(ga).pngsave_buffer()
    png = pixels(only(render(data, sizes="64", format="png"))).astype(int)
    assert png.shape == (32, 64, 4)
    assert close(png[16, 10], (100, 100, 100, 255), 1) and png[16, 54, 3] == 0
    jpeg = pixels(only(render(data, sizes="64", format="jpeg"))).astype(int)
    assert close(jpeg[16, 10], (100, 100, 100), 3) and close(jpeg[16, 54], (255, 255, 255), 3)


# -- animations --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["gif", "webp"])
def test_animation_gives_the_first_frame(render, tmp_path: Path, container: str) -> None:
    data = images.animated(container)
    all_pages = pyvips.Image.new_from_buffer(data, "", n=-1)
    assert all_pages.get("n-pages") == 3 and all_pages.get("page-height") == 48
    path = images.write(tmp_path / f"anim.{container}", data)
    assert probe(path, 10**8).pages == 3
    assert (probe(path, 10**8).width, probe(path, 10**8).height) == (64, 48)  # one frame, not the strip
    for out_format in ("png", "jpeg"):
        r = only(render(data, sizes="256", format=out_format))
        assert (r.width, r.height) == (64, 48)  # inside never enlarges; one frame's height
        array = pixels(r).astype(int)
        assert close(array[..., :3].reshape(-1, 3).mean(axis=0), images.FRAME_COLOURS[0], 6)
        assert close(array[..., :3], images.FRAME_COLOURS[0], 12)  # no other frame anywhere


# -- input containers and output formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("container", ["jpeg", "progressive-jpeg", "png", "webp", "tiff", "gif", "heic", "avif"])
def test_input_containers(render, container: str) -> None:
    try:
        data = images.encode(images.marked_image(400, 300), container)
    except pyvips.Error as exc:
        pytest.skip(f"this libvips cannot write {container} (the HEVC encoder is often left out): {exc}")
    if container == "progressive-jpeg":
        assert pyvips.Image.new_from_buffer(data, "").get("jpeg-multiscan") == 1
    r = only(render(data, sizes="200", format="png"))
    assert (r.width, r.height) == (200, 150)
    assert_marked_upright(pixels(r))


def test_tiff_16_bit_and_webp_with_scaled_decode(render) -> None:
    # A large WebP takes the scaled-decode path; a 16-bit TIFF takes the rgb16 path.
    webp = images.photo_like_image(1200, 900, seed=7)
    r = only(render(images.encode(webp, "webp", Q=90), sizes="128", format="png"))
    ref = webp.resize(128 / 1200, kernel="lanczos3").numpy()
    assert (r.width, r.height) == (128, 96)
    assert psnr(pixels(r), ref) > 30
    tiff16 = (images.marked_image(400, 300).cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    r = only(render(tiff16.tiffsave_buffer(), sizes="200", format="png"))
    assert_marked_upright(pixels(r), tol=2)


@pytest.mark.parametrize("out_format", list(Format))
def test_every_output_format_decodes_with_its_magic_bytes(render, out_format: Format) -> None:
    source = images.photo_like(640, 480, seed=2)
    r = only(render(source, sizes="320x200", format=out_format.value, quality=85))
    assert r.format is out_format
    assert r.name == f"thumb_{STEM}_{r.width}x{r.height}.{EXTENSIONS[out_format]}"
    assert (r.width, r.height) == (267, 200)
    assert MAGIC[out_format](r.data), r.data[:16]
    assert sniff(r.data[:32]) == {"avif": "heif"}.get(out_format.value, out_format.value)
    image = decode(r)
    assert image.get("vips-loader").startswith(LOADER[out_format])
    if out_format is Format.avif:
        assert image.get("heif-compression") == "av1"
    # Content, not just a container: close to a direct resample of the source.
    ref = pyvips.Image.new_from_buffer(source, "").resize(267 / 640, kernel="lanczos3").numpy()
    assert psnr(image.numpy()[..., :3], ref[: r.height, : r.width]) > 30


@pytest.mark.parametrize("out_format", list(Format))
def test_metadata_is_stripped(render, out_format: Format) -> None:
    # EXIF (with an orientation), an ICC profile and XMP in the source; none of it in any output.
    source = images.with_orientation(images.photo_like_image(320, 240), 6).icc_transform("p3")
    source.set_type(pyvips.GValue.blob_type, "xmp-data", b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret</x:xmpmeta>')
    source.set_type(pyvips.GValue.gint_type, "orientation", 6)
    data = source.jpegsave_buffer(Q=90, keep="all")
    loaded = pyvips.Image.new_from_buffer(data, "")
    for field in ("exif-data", "icc-profile-data", "xmp-data", "orientation"):
        assert loaded.get_typeof(field) != 0, f"the source should carry {field}"
    r = only(render(data, sizes="100", format=out_format.value))
    image = decode(r)
    assert (r.width, r.height) == (100, 75)  # and it was turned upright
    for field in ("exif-data", "icc-profile-data", "xmp-data", "iptc-data", "orientation"):
        assert image.get_typeof(field) == 0, f"{out_format.value} output carries {field}"
    assert not any(f.startswith(("exif-", "xmp", "iptc")) for f in image.get_fields())
    for marker in (b"Exif\x00", b"ICC_PROFILE", b"iCCP", b"xmpmeta", b"secret"):
        assert marker not in r.data


# -- fit modes --------------------------------------------------------------------------------------------------------


def test_inside_never_enlarges_a_small_source(render) -> None:
    source = images.photo_like_image(100, 50, seed=9)
    r = only(render(source.pngsave_buffer(), sizes="256,320x200", fit="inside", format="png"))
    assert (r.width, r.height) == (100, 50)
    assert r.name == f"thumb_{STEM}_100x50.png"
    assert close(pixels(r), source.numpy(), 1)  # untouched pixels, not a resampled copy


def test_inside_keeps_aspect_in_a_box(render) -> None:
    out = render(bands_image().pngsave_buffer(), sizes="100,300x50", fit="inside", format="png")
    assert [(r.width, r.height) for r in out] == [(100, 50)]  # both boxes give the same pixels: one rendition


@pytest.mark.parametrize("crop", ["centre", "attention", "entropy"])
def test_cover_gives_the_exact_box(render, crop: str) -> None:
    out = render(bands_image().pngsave_buffer(), sizes="100,80x120,150x30", fit="cover", crop=crop, format="png")
    assert sorted((r.width, r.height) for r in out) == [(80, 120), (100, 100), (150, 30)]
    for r in out:
        assert pixels(r).shape[:2] == (r.height, r.width)


def test_cover_centre_crop_keeps_the_centre(render) -> None:
    r = only(render(bands_image().pngsave_buffer(), sizes="100", fit="cover", crop="centre", format="png"))
    array = pixels(r).astype(int)
    assert array.shape == (100, 100, 3)
    assert close(array[50, 50], (30, 30, 220), 4)  # the centre marker, in the centre
    assert close(array[50, 2], (128, 128, 128), 4) and close(array[50, 97], (128, 128, 128), 4)
    # The side bands are cropped away: no red or green anywhere.
    assert (array[..., 0] > 180).sum() == 0 and (array[..., 1] > 170).sum() == 0


def test_cover_of_an_extreme_aspect_ratio_stays_cheap_and_right(render) -> None:
    # A 2x4000 strip covering a 512 box would be resampled to 512x1024000 (1.5 GB) before the crop; the backend cuts
    # the centre band first. Centre of the strip is blue, the ends red.
    strip = np.full((4000, 2, 3), (220, 30, 30), np.uint8)
    strip[1900:2100] = (30, 30, 220)
    r = only(render(images.from_array(strip).pngsave_buffer(), sizes="512", fit="cover", format="png"))
    assert (r.width, r.height) == (512, 512)
    assert close(pixels(r)[100:412, :, :3], (30, 30, 220), 6)


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
    img, bounded, _ = finishing.cut_overflow(source, placement)
    assert (bounded.out_w, bounded.out_h) == (4096, 4096)
    assert bounded.resize_w >= 4096 and bounded.resize_h >= 4096
    assert bounded.resize_w * bounded.resize_h <= max(plan.OVERFLOW_BUDGET, 2 * 4096 * 4096)
    cut_w, cut_h = (img.height, img.width) if orientation == 6 else (img.width, img.height)
    assert cut_w == 1 and 1 <= cut_h <= 4
    # An ordinary cover is left alone.
    ordinary = place(4000, 3000, Size(width=256, height=256), Fit.cover)
    source = decoding.Source(pyvips.Image.black(4000, 3000), 1, 4000, 3000, 4000, 3000)
    assert finishing.cut_overflow(source, ordinary)[1] == ordinary


def test_fill_stretches_to_the_exact_box(render) -> None:
    r = only(render(images.marked_image(400, 200).pngsave_buffer(), sizes="100", fit="fill", format="png"))
    array = pixels(r).astype(int)
    assert array.shape == (100, 100, 3)
    assert close(array[:45, :45], images.MARK, 4)  # the quadrant is still a quadrant: stretched, not cropped
    assert close(array[55:, 55:], images.GREY, 4)
    assert close(array[:45, 55:], images.GREY, 4)


@pytest.mark.parametrize(
    "out_format, background, pad",
    [
        ("jpeg", "#ffffff", (255, 255, 255)),
        ("jpeg", "#00ff00", (0, 255, 0)),
        ("png", "#ff0000", (255, 0, 0)),  # an opaque background on an opaque image: no alpha band
        ("png", "#00000000", (0, 0, 0, 0)),
        ("webp", "#11223344", (17, 34, 51, 68)),
    ],
)
def test_contain_pads_with_the_background_colour(render, out_format: str, background: str, pad: tuple) -> None:
    r = only(
        render(
            images.marked_image(200, 100).pngsave_buffer(),
            sizes="100",
            fit="contain",
            format=out_format,
            background=background,
        )
    )
    array = pixels(r).astype(int)
    assert array.shape[:2] == (100, 100)
    assert array.shape[2] == len(pad)
    lossy = out_format != "png"
    # The image is 100x50 in the middle: 25 rows of padding each side (lossy codecs ring a few rows into it, and
    # JPEG's 16x16 chroma blocks reach row 16).
    top, bottom = (array[:16], array[80:]) if lossy else (array[:25], array[75:])
    assert close(top, pad, 4 if lossy else 0) and close(bottom, pad, 4 if lossy else 0)
    assert close(array[30:45, :40, :3].reshape(-1, 3).mean(axis=0), images.MARK, 4)
    assert close(array[55:70, 60:, :3].reshape(-1, 3).mean(axis=0), images.GREY, 4)
    if len(pad) == 4:
        assert (array[30:70, :, 3] >= 250).all()  # the image itself stays opaque


def test_contain_of_a_transparent_source_keeps_its_transparency(render) -> None:
    r = only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", fit="contain", format="png", background="#ff0000"))
    array = pixels(r).astype(int)
    assert close(array[:20], (255, 0, 0, 255), 0)  # the padding is the background
    assert array[35:65, 60:, 3].max() == 0  # the source's own transparency stays transparent
    assert close(array[35:65, :40], (*OPAQUE, 255), 1)


# -- several sizes, names --------------------------------------------------------------------------------------------


def test_several_sizes_from_one_decode(render, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[dict] = []
    real_open = decoding.open_image

    def counting_open(path, fmt, **options):
        opened.append(options)
        return real_open(path, fmt, **options)

    for module in (context, decoding):  # the header, and the pixels
        monkeypatch.setattr(module, "open_image", counting_open)
    source = images.photo_like(1600, 1200, seed=11)
    out = render(source, sizes="256,128,64x32,100x50,320x200", format="png")
    assert sorted(r.name for r in out) == sorted(
        f"thumb_{STEM}_{w}x{h}.png" for w, h in [(256, 192), (128, 96), (43, 32), (67, 50), (267, 200)]
    )
    # One header read and one pixel decode (shrunk on load), whatever the number of sizes.
    assert len(opened) == 2
    assert opened[1].get("access") == "sequential" and opened[1].get("shrink") in (2, 4)
    # Each size is a good resample of the full-resolution source, not a resample of a resample gone soft.
    full = pyvips.Image.new_from_buffer(source, "").numpy().astype(np.float64)
    for r in out:
        array = pixels(r)
        assert array.shape == (r.height, r.width, 3)
        assert psnr(array, lanczos3_reference(full, r.width, r.height)) >= 40.0, r.name


def test_duplicated_sizes_give_one_rendition(render) -> None:
    data = images.photo_like(400, 300, seed=12)
    assert [r.name for r in render(data, sizes="128,128,128x128")] == [f"thumb_{STEM}_128x96.jpg"]
    # Different boxes that land on the same pixels are rendered once too.
    assert [r.name for r in render(data, sizes="128,128x200,128x96")] == [f"thumb_{STEM}_128x96.jpg"]


# -- broken files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "maker, fmt",
    [
        (images.truncated_jpeg, "jpeg"),
        (images.corrupt_jpeg, "jpeg"),
        (lambda: images.photo_like(64, 64)[:300], "jpeg"),  # headers only, no scan
        (lambda: images.photo_like_image(300, 200).pngsave_buffer()[:4000], "png"),
        (lambda: images.encode(images.photo_like_image(300, 200), "webp")[:500], "webp"),
        (lambda: images.animated("gif")[:100], "gif"),
    ],
    ids=["truncated-jpeg", "corrupt-entropy-jpeg", "jpeg-headers-only", "truncated-png", "truncated-webp", "gif"],
)
@pytest.mark.parametrize("sizes", ["64", "128,64"])
def test_broken_images_raise_corrupt_image(render, maker, fmt: str, sizes: str) -> None:
    data = maker()
    assert sniff(data[:32]) == fmt
    with pytest.raises(CorruptImage) as info:
        render(data, sizes=sizes)
    error = info.value
    assert_readable(error.detail, fmt)
    assert error.permanent and error.status == 422 and error.as_error()["type"].endswith("/corrupt-image")


def test_corrupt_jpeg_header_still_probes(tmp_path: Path) -> None:
    # The damage is in the scan: the API's header probe accepts it, and the worker is the one that says no.
    path = images.write(tmp_path / "corrupt.jpg", images.corrupt_jpeg())
    assert (probe(path, 10**8).width, probe(path, 10**8).height) == (640, 480)


def test_jpeg_whose_header_lies_about_its_size_fails_fast(render) -> None:
    with pytest.raises(CorruptImage) as info:
        render(images.jpeg_with_sof_size(20000, 20000), sizes="64")
    assert_readable(info.value.detail, "jpeg")


# -- resampling quality ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", ["256", "256,128"])
def test_downscale_quality_against_a_float_lanczos3_reference(backend, photo_12mp, sizes: str) -> None:
    path, full = photo_12mp
    out = backend.render(path, "jpeg", ThumbnailSpec(sizes=sizes, format="png"), STEM)
    assert len(out) == len(sizes.split(","))
    for r in out:
        ours = pixels(r)
        ref = lanczos3_reference(full, r.width, r.height)
        score = psnr(ours, ref)
        assert score >= 40.0, f"{r.name}: {score:.1f} dB against a full-resolution Lanczos-3 reference"
    # The metric has teeth: a nearest-neighbour thumbnail of the same source is far below the bar.
    r = out[0]
    rows = ((np.arange(r.height) + 0.5) * 3000 / r.height).astype(int)
    cols = ((np.arange(r.width) + 0.5) * 4000 / r.width).astype(int)
    nearest = full[rows][:, cols]
    assert psnr(nearest, lanczos3_reference(full, r.width, r.height)) < 35.0


def test_downscale_quality_as_jpeg_output(backend, photo_12mp) -> None:
    path, full = photo_12mp
    r = only(backend.render(path, "jpeg", ThumbnailSpec(sizes="256", format="jpeg", quality=95), STEM))
    assert psnr(pixels(r), lanczos3_reference(full, r.width, r.height)) >= 36.0


def _annulus(size: int, inner: float, outer: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - size / 2, yy - size / 2)
    return (r > inner) & (r < outer)


@pytest.mark.parametrize("container", ["png", "jpeg"])
def test_zone_plate_downscaled_16x_is_flat_grey(render, container: str) -> None:
    zone = images.zone_plate(2048)
    data = zone.pngsave_buffer() if container == "png" else zone.jpegsave_buffer(Q=100)
    r = only(render(data, sizes="128", format="png"))
    assert (r.width, r.height) == (128, 128)
    out = pixels(r)[..., 0].astype(np.float64)
    # Only the middle rings (radius < 4 output px) are below the output's Nyquist; outside the inscribed circle
    # the zone plate itself aliases in the source. Between the two a correct downscale is flat grey.
    ring = _annulus(128, 10, 58)
    assert abs(out[ring].mean() - 127.5) < 2.5
    assert out[ring].std() < 4.0, f"aliasing: std-dev {out[ring].std():.2f}"
    # The test has teeth: plain decimation of the same zone plate is all moiré.
    assert zone.subsample(16, 16).numpy()[ring].std() > 40


@pytest.mark.parametrize("container", ["png", "jpeg"])
def test_one_pixel_checkerboard_downscaled_16x_is_flat_grey(render, container: str) -> None:
    board = images.checkerboard(2048)
    data = board.pngsave_buffer() if container == "png" else board.jpegsave_buffer(Q=100)
    out = pixels(only(render(data, sizes="128", format="png")))[..., 0].astype(np.float64)
    assert abs(out.mean() - 127.5) < 3
    assert out.std() < 2.0
    assert set(np.unique(board.subsample(16, 16).numpy())) <= {0, 255}  # decimation would give black or white


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
