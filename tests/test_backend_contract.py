"""The contract every render backend keeps, run against each one this machine has: the vips backend, DALI on its
`cpu` operators (the nvidia-dali wheel runs CPU pipelines without a GPU or driver), tiles on its NumPy twin and tiles
on CuPy (`tiles-gpu`, marked `gpu`: skipped with the reason where CuPy has no CUDA device; on every CI machine it runs
on the CUDA emulator, tests/test_gpu_emulated.py).
EXIF orientation, colour management, bit depths, alpha, animations and containers, output formats and metadata, the
four fits, duplicated sizes, broken and lying files, and downscale quality against a float64 Lanczos-3 reference and
on aliasing targets: each test makes its source (support/images.py), renders it as the worker does, judges pixels.

Behind DALI, each case also checks who rendered it: the inputs DALI must take itself (`DALI_TAKES`: its fallback to
vips was not called) and those it must leave to vips (`VIPS_TAKES`). Each backend's own tests stay in its file
(tiles: its strips, kernels and memory bound in test_tiles_backend.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips
from support import images
from support.backends import needs_dali, needs_opencv, needs_tiles, needs_tiles_gpu, opened, tiles_backend
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
    render_with,
)

from gpu_worker.backends.finishing import encode
from gpu_worker.backends.vips import VipsBackend
from thumbify.errors import CorruptImage, UnsupportedMedia
from thumbify.probe import probe, sniff
from thumbify.spec import EXTENSIONS, Format, ThumbnailSpec

LOADER = {
    Format.jpeg: "jpegload",
    Format.png: "pngload",
    Format.webp: "webpload",
    Format.avif: "heifload",
    Format.gif: "gifload",
}
# GIF carries no ICC profile, EXIF or IPTC that libvips writes: `keep` has nothing to keep there.
METADATA_FORMATS = [f for f in Format if f is not Format.gif]


P3_COLOURS = [(220, 40, 40), (40, 190, 70), (50, 70, 210), (128, 128, 128)]


def _annulus(size: int, inner: float, outer: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - size / 2, yy - size / 2)
    return (r > inner) & (r < outer)


def _dali():
    from support.dali import cpu_dali

    return cpu_dali()


# Strips of 37 rows (not a multiple of any codec's block): even the small images here go through several strips.
TILES_STRIP_ROWS = 37

BACKENDS = [
    pytest.param(VipsBackend, id="vips"),
    pytest.param(_dali, id="dali-cpu", marks=needs_dali),
    pytest.param(lambda: tiles_backend("cpu", TILES_STRIP_ROWS), id="tiles-cpu", marks=needs_tiles),
    pytest.param(
        lambda: tiles_backend("gpu", TILES_STRIP_ROWS), id="tiles-gpu", marks=[pytest.mark.gpu, needs_tiles_gpu]
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest):
    with opened(request.param) as made:
        yield made


@pytest.fixture
def render(backend, tmp_path: Path):
    """render(data, name=..., **spec) -> renditions, exactly as the worker calls the backend."""
    return render_with(backend, tmp_path)


# Reused tests (all parameters, or one by its id) whose every input DALI must take itself, not hand to vips.
DALI_TAKES = {
    "test_exif_orientation_single_size",
    "test_exif_orientation_with_shrink_on_load_and_several_sizes",
    "test_exif_orientation_with_cover",
    "test_orientation_tag_in_other_containers[png]",
    "test_orientation_tag_in_other_containers[webp]",
    "test_icc_tagged_display_p3_comes_out_srgb",
    "test_grey_input_gives_the_right_grey_levels",
    "test_input_containers[jpeg]",
    "test_input_containers[png]",
    "test_input_containers[webp]",
    "test_every_output_format_decodes_with_its_magic_bytes",
    "test_metadata_is_stripped",
    "test_inside_never_enlarges_a_small_source",
    "test_inside_keeps_aspect_in_a_box",
    "test_cover_gives_the_exact_box",
    "test_cover_centre_crop_keeps_the_centre",
    "test_fill_stretches_to_the_exact_box",
    "test_contain_pads_with_the_background_colour",
    "test_duplicated_sizes_give_one_rendition",
    "test_downscale_quality_against_a_float_lanczos3_reference",
    "test_downscale_quality_as_jpeg_output",
    "test_zone_plate_downscaled_16x_is_flat_grey",
    "test_one_pixel_checkerboard_downscaled_16x_is_flat_grey",
    # The encoder options: DALI honours them itself (the metadata comes from the header, `finishing.keep_metadata`).
    "test_progressive_jpeg_and_interlaced_png",
    "test_keep_icc_embeds_the_srgb_profile_and_none_embeds_nothing",
    "test_keep_copyright_keeps_the_rights_and_drops_gps_and_camera",
    "test_keep_copyright_keeps_the_iptc_record_in_jpeg",
    "test_optimize_coding_changes_only_the_huffman_tables",
    "test_effort_ends_of_the_range_encode_the_same_picture",
    "test_facts_are_the_same_on_every_backend",
    "test_facts_only_when_asked",
    "test_facts_of_a_duplicated_size_stay_on_the_one_rendition",
    # The focal and face crops: the shared finishing step crops, so DALI keeps these images.
    "test_cover_focal_keeps_the_focal_point",
    "test_focal_point_is_in_displayed_coordinates",
    "test_cover_faces_centres_the_face",
    "test_cover_faces_without_a_face_crops_as_attention",
}
# Reused tests whose inputs DALI must refuse (CMYK, alpha, 16-bit, animations, broken or lying files, ...).
VIPS_TAKES = {
    "test_cmyk_jpeg_comes_out_srgb_with_the_right_colours",
    "test_16_bit_png_comes_out_8_bit_with_the_right_levels",
    "test_alpha_is_kept_for_formats_that_have_it",
    "test_alpha_is_flattened_onto_white_for_jpeg",
    "test_grey_with_alpha",
    "test_animation_gives_the_first_frame",
    "test_animated_keeps_every_frame_its_delay_and_loop",
    "test_animated_cover_crops_every_frame_alike",
    "test_cover_of_an_extreme_aspect_ratio_stays_cheap_and_right",
    "test_cover_of_an_extreme_aspect_ratio_keeps_the_focal_point",
    "test_contain_of_a_transparent_source_keeps_its_transparency",
    "test_broken_images_raise_corrupt_image",
    "test_jpeg_whose_header_lies_about_its_size_fails_fast",
    "test_facts_tell_real_transparency",
    "test_input_containers[progressive-jpeg]",  # a cut scan decodes blurred, which only a strict decoder tells
}


@pytest.fixture(autouse=True)
def _check_route(request: pytest.FixtureRequest, backend):
    """Behind DALI: the case was rendered by whom it should be (DALI itself, or its fallback to vips)."""
    if not hasattr(backend, "runs"):  # not the counting DALI
        yield
        return
    backend.fallback.calls.clear()
    backend.runs.clear()
    yield
    params = request.node.callspec.id.replace("dali-cpu", "").strip("-").replace("--", "-")
    case = f"{request.node.originalname}[{params}]" if params else request.node.originalname
    if case in DALI_TAKES or request.node.originalname in DALI_TAKES:
        assert backend.fallback.calls == [], f"DALI handed {backend.fallback.calls} to vips"
        assert backend.runs, "the DALI pipeline never ran"
    if case in VIPS_TAKES or request.node.originalname in VIPS_TAKES:
        assert backend.fallback.calls and not backend.runs, "DALI took an image it should have left to vips"


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


@pytest.mark.parametrize("with_profile", [True, False], ids=["embedded-profile", "no-profile"])
@pytest.mark.parametrize("out_format", ["png", "jpeg"])
@pytest.mark.parametrize("width", [192, 96], ids=["same-size", "halved"])
def test_cmyk_jpeg_comes_out_srgb_with_the_right_colours(
    render, with_profile: bool, out_format: str, width: int
) -> None:
    data = images.cmyk_jpeg() if with_profile else images.cmyk_jpeg_without_profile()
    source = pyvips.Image.new_from_buffer(data, "")
    assert source.interpretation == "cmyk" and source.bands == 4
    assert bool(source.get_typeof("icc-profile-data")) == with_profile
    # The patches are 64 px: at 192x128 still 64 (no resampling); at 96x64, 32 px resampled as the four CMYK bands
    # were decoded (tiles: through its kernels) and converted after. The centres are clear of the edges' blur.
    r = only(render(data, sizes=str(width), format=out_format))
    assert (r.width, r.height) == (width, width * 2 // 3)
    image = decode(r)
    assert image.bands == 3 and image.interpretation == "srgb"
    array = image.numpy()
    patch, half = width // 3, width // 48  # 4 px of a 64 px patch, 2 of a 32 px one
    for i, colour in enumerate(images.CMYK_PATCHES):
        x, y = images.patch_centre(i, patch=patch)
        got = array[y - half : y + half + 1, x - half : x + half + 1].reshape(-1, 3).mean(axis=0)
        assert close(got, colour, 12), f"patch {i}: expected {colour}, got {got.round(1)}"


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


@pytest.mark.parametrize("container", ["png", "jpeg"])
@pytest.mark.parametrize("width", [160, 80], ids=["same-size", "halved"])
def test_grey_input_gives_the_right_grey_levels(render, container: str, width: int) -> None:
    levels = [0, 16, 128, 240, 255]
    data = images.grey_png(levels) if container == "png" else images.grey_jpeg(levels)
    assert pyvips.Image.new_from_buffer(data, "").bands == 1
    patch = width // len(levels)  # 32 px patches, 16 once halved (one band through the resampler)
    for out_format in ("png", "jpeg"):
        r = only(render(data, sizes=str(width), format=out_format))
        assert (r.width, r.height) == (width, patch)
        array = pixels(r).astype(int)
        tol = 1 if container == "png" and out_format == "png" else 3
        for i, level in enumerate(levels):
            px = array[patch // 2, patch * i + patch // 2]
            assert close(px, level, tol), (out_format, level, px)
            assert px.max() - px.min() <= 1  # neutral: no colour cast


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
    # Resampled premultiplied: the transparent half's hidden green never shows in the visible edge.
    visible = array[..., 3] > 8
    assert array[visible][:, 1].max() <= OPAQUE[1] + 8 + tol


def test_alpha_is_flattened_onto_white_for_jpeg(render) -> None:
    r = only(render(images.rgba_png(200, 100, OPAQUE), sizes="100", format="jpeg"))
    array = pixels(r).astype(int)
    assert array.shape == (50, 100, 3)
    assert close(array[:, :45].reshape(-1, 3).mean(axis=0), OPAQUE, 3)
    # White past the 16 px block that holds the edge (columns 48-63): the default quality subsamples chroma 2x2, and
    # JPEG rings through that whole block. A float64 Lanczos-3 of the premultiplied source, flattened onto white,
    # is white there to 0.4 levels, yet encoded as the backends encode it dips to 246 at column 60 (vips' fixed-point
    # resample, a few levels off that reference at the edge, happens to ring less there). Past the block: 254.
    assert close(array[:, 64:], (255, 255, 255), 6)


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


ANIM_COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 220, 40)]
ANIM_DELAYS = [40, 100, 250, 70]


def frames_of(data: bytes, height: int) -> tuple[pyvips.Image, list[np.ndarray]]:
    """An animated thumbnail, opened with all its pages, and each frame's pixels."""
    image = pyvips.Image.new_from_buffer(data, "", n=-1)
    count = image.get("n-pages")
    assert image.get("page-height") == height and image.height == count * height
    return image, [
        np.ndarray(
            buffer=image.crop(0, i * height, image.width, height).write_to_memory(),
            dtype=np.uint8,
            shape=(height, image.width, image.bands),
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(("container", "out"), [("gif", "webp"), ("gif", "gif"), ("webp", "webp"), ("webp", "gif")])
def test_animated_keeps_every_frame_its_delay_and_loop(render, container: str, out: str) -> None:
    """animated=true: as many frames as the source, each resized and of its own colour, delays and loop kept."""
    data = images.animated(container, ANIM_COLOURS, 120, 90, delays=ANIM_DELAYS, loop=3)
    renditions = render(data, sizes="60,32", format=out, animated=True)
    assert [(r.width, r.height, r.format) for r in renditions] == [(60, 45, Format(out)), (32, 24, Format(out))]
    for r in renditions:
        assert r.name.endswith(f"_{r.width}x{r.height}.{EXTENSIONS[Format(out)]}")
        image, frames = frames_of(r.data, r.height)
        assert image.get("delay") == ANIM_DELAYS and image.get("loop") == 3
        assert len(frames) == len(ANIM_COLOURS)
        for frame, colour in zip(frames, ANIM_COLOURS, strict=True):
            assert frame.shape[:2] == (r.height, r.width)
            assert close(frame[..., :3], colour, 12), (r.name, colour)  # every pixel: no bleed from a neighbour


def test_animated_cover_crops_every_frame_alike(render) -> None:
    """cover with attention: the crop is chosen on the first frame and every frame is cut there (a square that
    moves across a grey field stays where it was in the first frame's crop, relative to the field)."""
    frames = []
    for i in range(3):
        frame = (images.solid_image(160, 80, (128, 128, 128))).draw_rect(
            [230, 20, 20], 120 - 10 * i, 20, 30, 30, fill=True
        )
        frames.append(frame)
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", 80)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [100, 100, 100])
    r = only(render(strip.gifsave_buffer(), sizes="40", fit="cover", crop="attention", format="webp", animated=True))
    assert (r.width, r.height) == (40, 40)
    _, out = frames_of(r.data, 40)
    assert len(out) == 3
    red = [np.argwhere((f[..., 0] > 180) & (f[..., 1] < 90)) for f in out]
    assert all(len(points) for points in red)
    # The square moves 10 source px (5 output px) left per frame: the same crop shows it moving by that much.
    lefts = [int(points[:, 1].min()) for points in red]
    assert lefts[0] - lefts[1] in (4, 5, 6) and lefts[1] - lefts[2] in (4, 5, 6), lefts


@pytest.mark.parametrize("out", ["jpeg", "png"])
def test_animated_in_a_still_format_is_the_first_frame(render, out: str) -> None:
    r = only(render(images.animated("gif", ANIM_COLOURS, 120, 90), sizes="60", format=out, animated=True))
    assert (r.width, r.height) == (60, 45)
    assert close(pixels(r)[..., :3].astype(int), ANIM_COLOURS[0], 12)


def test_gif_output_of_a_still(render) -> None:
    r = only(render(images.photo_like(320, 240, seed=5), sizes="64", format="gif", animated=True))
    assert r.data[:6] == b"GIF89a" and (r.width, r.height) == (64, 48)
    image = decode(r)
    assert not image.get_typeof("n-pages") or image.get("n-pages") == 1


def _decodes(data: bytes) -> bool:
    try:
        pyvips.Image.new_from_buffer(data, "").avg()
    except pyvips.Error:
        return False
    return True


@pytest.mark.parametrize("container", ["jpeg", "progressive-jpeg", "png", "webp", "tiff", "gif", "heic", "avif"])
def test_input_containers(render, container: str) -> None:
    data = images.encode(images.marked_image(400, 300), container)
    if container == "heic" and not _decodes(data):
        # A phone's HEIC where libvips has no HEVC decoder (the bundled one): refused, naming the decoder.
        with pytest.raises(UnsupportedMedia, match="libde265"):
            render(data, sizes="200", format="png")
        return
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
    # (GIF: a 256-colour palette, dithered, on a photo: about 30 dB whatever the resample.)
    floor = 26 if out_format is Format.gif else 30
    assert psnr(image.numpy()[..., :3], ref[: r.height, : r.width]) > floor


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


def test_inside_never_enlarges_a_small_source(render) -> None:
    source = images.photo_like_image(100, 50, seed=9)
    r = only(render(source.pngsave_buffer(), sizes="256,320x200", fit="inside", format="png"))
    assert (r.width, r.height) == (100, 50)
    assert r.name == f"thumb_{STEM}_100x50.png"
    assert close(pixels(r), source.numpy(), 1)  # untouched pixels, not a resampled copy


def test_inside_keeps_aspect_in_a_box(render) -> None:
    out = render(bands_image().pngsave_buffer(), sizes="100,300x50", fit="inside", format="png")
    assert [(r.width, r.height) for r in out] == [(100, 50)]  # both boxes give the same pixels: one rendition


@pytest.mark.parametrize("crop", ["centre", "attention", "entropy", "focal", pytest.param("faces", marks=needs_opencv)])
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


def test_hevc_heic_is_unsupported_media_naming_the_decoder(render) -> None:
    # A phone's HEIC that reached a worker unprobed: refused as the API refuses it, not called corrupt.
    with pytest.raises(UnsupportedMedia, match="HEVC.*libde265") as info:
        render(images.hevc_heic(96, 64), sizes="64")
    assert info.value.extra == {"compression": "hevc", "missing_decoder": "libde265"}


# -- focal and face crops ------------------------------------------------------------------------------------------

RED = (220, 30, 30)
# source size, box, focal point, where the 40 px marker's centre lands in the thumbnail and its side there (the
# window nearest the point, clamped to the image: 400x200 covering 100 resizes to 200x100, and fx=0.8 asks for x
# 160-50, clamped to 100).
FOCAL_CASES = {
    "right-edge": (400, 200, "100", 0.8, 0.2, (60, 20), 20),
    "portrait": (200, 400, "100", 0.3, 0.7, (30, 50), 20),
    "wide-box": (400, 400, "100x40", 0.5, 0.9, (50, 30), 10),
}


def _red(array: np.ndarray) -> np.ndarray:
    return (array[..., 0] > 170) & (array[..., 1] < 90) & (array[..., 2] < 90)


def _assert_marker_at(array: np.ndarray, x: int, y: int, area: int) -> None:
    assert close(array[y, x, :3], RED, 8), f"no red at ({x}, {y}): {array[y, x]}"
    assert abs(int(_red(array).sum()) - area) <= area // 4, "the marker is cut or smeared"


@pytest.mark.parametrize("case", list(FOCAL_CASES))
def test_cover_focal_keeps_the_focal_point(render, case: str) -> None:
    width, height, box, fx, fy, (x, y), side = FOCAL_CASES[case]
    source = images.marker_at(width, height, fx, fy, 40, RED)
    r = only(render(source.jpegsave_buffer(Q=95), sizes=box, fit="cover", crop="focal", fx=fx, fy=fy, format="png"))
    _assert_marker_at(pixels(r), x, y, side * side)
    centred = only(render(source.jpegsave_buffer(Q=95), sizes=box, fit="cover", crop="centre", format="png"))
    assert not close(pixels(centred)[y, x, :3], RED, 8)  # the point is not where a centre crop would put it


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_focal_point_is_in_displayed_coordinates(render, orientation: int) -> None:
    upright = images.marker_at(400, 200, 0.8, 0.2, 40, RED)
    data = images.with_orientation(upright, orientation).jpegsave_buffer(Q=95)
    r = only(render(data, sizes="100", fit="cover", crop="focal", fx=0.8, fy=0.2, format="png"))
    _assert_marker_at(pixels(r), 60, 20, 20 * 20)


@pytest.mark.parametrize("orientation", [1, 3, 6, 7])
def test_cover_of_an_extreme_aspect_ratio_keeps_the_focal_point(render, orientation: int) -> None:
    # As above, but the band kept before resampling is around the focal point (0.8 down the strip), not the centre.
    strip = np.full((4000, 2, 3), RED, np.uint8)
    strip[3100:3300] = (30, 30, 220)
    stored = images.with_orientation(images.from_array(strip), orientation)
    r = only(render(stored.pngsave_buffer(), sizes="512", fit="cover", crop="focal", fy=0.8, format="png"))
    assert (r.width, r.height) == (512, 512)
    assert close(pixels(r)[100:412, :, :3], (30, 30, 220), 6)


@needs_opencv
def test_cover_faces_centres_the_face(render) -> None:
    from gpu_worker.backends.faces import faces_centre

    # 800x400 covering 200 resizes to 400x200; the face (120 px there, 60 here) is centred at x 310 of 400, so the
    # window is the right half, and the face's centre lands at (110, 90). A centre crop would cut it at x 200.
    source = images.face_at(800, 400, 560, 120, 120)
    r = only(render(source.jpegsave_buffer(Q=95), sizes="200", fit="cover", crop="faces", format="png"))
    assert (r.width, r.height) == (200, 200)
    found = faces_centre(decode(r))
    assert found is not None, "no face in the thumbnail"
    assert abs(found[0] * 200 - 110) <= 6 and abs(found[1] * 200 - 90) <= 6, found


@needs_opencv
def test_cover_faces_without_a_face_crops_as_attention(render) -> None:
    data = images.photo_like(800, 400, seed=21)
    faces, attention = (
        only(render(data, sizes="200", fit="cover", crop=crop, format="png")) for crop in ("faces", "attention")
    )
    assert np.array_equal(pixels(faces), pixels(attention))


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


def test_duplicated_sizes_give_one_rendition(render) -> None:
    data = images.photo_like(400, 300, seed=12)
    assert [r.name for r in render(data, sizes="128,128,128x128")] == [f"thumb_{STEM}_128x96.jpg"]
    # Different boxes that land on the same pixels are rendered once too.
    assert [r.name for r in render(data, sizes="128,128x200,128x96")] == [f"thumb_{STEM}_128x96.jpg"]


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


def test_jpeg_whose_header_lies_about_its_size_fails_fast(render) -> None:
    with pytest.raises(CorruptImage) as info:
        render(images.jpeg_with_sof_size(20000, 20000), sizes="64")
    assert_readable(info.value.detail, "jpeg")


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


# -- encoder options (progressive, keep, optimize_coding, effort) -----------------------------------------------------


@pytest.mark.parametrize("progressive", [False, True])
def test_progressive_jpeg_and_interlaced_png(render, progressive: bool) -> None:
    source = images.photo_like(320, 240, seed=31)
    jpeg = only(render(source, sizes="200", format="jpeg", progressive=progressive))
    assert images.jpeg_sof(jpeg.data) == (0xC2 if progressive else 0xC0)
    png = only(render(source, sizes="200", format="png", progressive=progressive))
    assert images.png_interlace(png.data) == (1 if progressive else 0)
    # The same picture either way.
    plain = only(render(source, sizes="200", format="png"))
    assert np.array_equal(pixels(png), pixels(plain))


@pytest.mark.parametrize("out_format", METADATA_FORMATS)
def test_keep_icc_embeds_the_srgb_profile_and_none_embeds_nothing(render, out_format: Format) -> None:
    source = images.jpeg_with_rights_and_gps()
    kept = decode(only(render(source, sizes="100", format=out_format.value, keep="icc")))
    assert images.is_srgb_profile(kept.get("icc-profile-data")), "not the sRGB profile"
    assert not any(f.startswith(("exif-", "xmp", "iptc")) for f in kept.get_fields()), out_format
    stripped = decode(only(render(source, sizes="100", format=out_format.value, keep="none")))
    assert stripped.get_typeof("icc-profile-data") == 0
    assert not any(f.startswith(("exif-", "xmp", "iptc")) for f in stripped.get_fields())


@pytest.mark.parametrize("out_format", METADATA_FORMATS)
def test_keep_copyright_keeps_the_rights_and_drops_gps_and_camera(render, out_format: Format) -> None:
    source = images.jpeg_with_rights_and_gps()
    r = only(render(source, sizes="100", format=out_format.value, keep="copyright"))
    image = decode(r)
    assert images.COPYRIGHT in image.get("exif-ifd0-Copyright")
    assert images.ARTIST in image.get("exif-ifd0-Artist")
    fields = image.get_fields()
    assert not [f for f in fields if "GPS" in f or f.startswith("exif-ifd3")], "GPS survived"
    assert "exif-ifd0-Make" not in fields
    assert image.get_typeof("icc-profile-data") == 0 and image.get_typeof("xmp-data") == 0
    for marker in (b"SecretCam", b"GPS"):
        assert marker not in r.data
    # A source with no rights metadata gets no EXIF block at all.
    bare = decode(only(render(images.photo_like(320, 240), sizes="100", format=out_format.value, keep="copyright")))
    assert not any(f.startswith(("exif-", "xmp", "iptc", "icc")) for f in bare.get_fields())


def test_keep_copyright_keeps_the_iptc_record_in_jpeg(render) -> None:
    r = only(render(images.jpeg_with_iptc_notice(), sizes="100", keep="copyright"))
    assert decode(r).get_typeof("iptc-data") and images.IPTC_NOTICE in r.data
    stripped = only(render(images.jpeg_with_iptc_notice(), sizes="100"))
    assert images.IPTC_NOTICE not in stripped.data


def test_optimize_coding_changes_only_the_huffman_tables(render) -> None:
    source = images.photo_like(640, 480, seed=32)
    optimized = only(render(source, sizes="256", optimize_coding=True))
    standard = only(render(source, sizes="256", optimize_coding=False))
    # The standard tables may come from libjpeg-turbo (`turbo_encode`), the optimized from libvips: close pixels.
    assert psnr(pixels(optimized), pixels(standard)) > 40
    assert len(optimized.data) < len(standard.data)
    # One encoder, both ways: the same coefficients, only their coding differs.
    spec = ThumbnailSpec(sizes="256")
    picture = decode(standard)
    huffman = (encode(picture, spec.model_copy(update={"optimize_coding": o})) for o in (False, True))
    plain, tuned = (pyvips.Image.new_from_buffer(data, "").numpy() for data in huffman)
    assert np.array_equal(plain, tuned)


@pytest.mark.parametrize(("out_format", "low", "high"), [("webp", 0, 6), ("avif", 0, 9)])
def test_effort_ends_of_the_range_encode_the_same_picture(render, out_format: str, low: int, high: int) -> None:
    source = images.photo_like(320, 240, seed=33)
    fast, slow = (only(render(source, sizes="128", format=out_format, effort=e)) for e in (low, high))
    assert MAGIC[Format(out_format)](fast.data) and MAGIC[Format(out_format)](slow.data)
    assert psnr(pixels(fast), pixels(slow)) > 30


def _facts(renditions) -> dict:
    """The facts of a job's renditions: on exactly one of them."""
    found = [r.facts for r in renditions if r.facts]
    assert len(found) == 1
    return found[0]


@pytest.fixture(scope="module")
def vips_facts(tmp_path_factory: pytest.TempPathFactory):
    """facts=true on the vips backend, the reference the other backends are held to."""
    return render_with(VipsBackend(), tmp_path_factory.mktemp("vips-facts"))


def test_facts_are_the_same_on_every_backend(render, vips_facts) -> None:
    """Read off the smallest size (here 96 px, whatever the order or the fit): each backend's resample differs by a
    level or so, so colours agree within 2 levels, the dHash within 3 bits, the blurhash decodes alike."""
    import blurhash
    import imagehash

    data = images.photo_like(640, 480, seed=21)
    got = _facts(render(data, sizes="256,96", fit="cover", facts=True))
    want = _facts(vips_facts(data, sizes="96", facts=True))
    assert got["transparent"] is want["transparent"] is False
    for key in ("dominant_color", "average_color"):
        assert close(list(bytes.fromhex(got[key][1:])), list(bytes.fromhex(want[key][1:])), 2), (key, got, want)
    assert imagehash.hex_to_hash(got["dhash"]) - imagehash.hex_to_hash(want["dhash"]) <= 3
    a, b = (np.asarray(blurhash.decode(f["blurhash"], 32, 24), float) for f in (got, want))
    assert np.abs(a - b).mean() < 2
    assert got["thumbhash"][:4] == want["thumbhash"][:4]  # the header: average colour, scales, shape


def test_facts_only_when_asked(render) -> None:
    assert all(r.facts is None for r in render(images.photo_like(320, 240, seed=3), sizes="64,128"))


def test_facts_of_a_duplicated_size_stay_on_the_one_rendition(render) -> None:
    (r,) = render(images.photo_like(400, 300, seed=12), sizes="128,128x96", facts=True)
    assert r.facts and len(r.facts["dhash"]) == 16


@pytest.mark.parametrize("clear", [True, False], ids=["transparent", "opaque"])
def test_facts_tell_real_transparency(render, clear: bool) -> None:
    """An RGBA PNG with a clear half is transparent; one whose alpha is all 255 is not (on every output format: the
    facts are read before JPEG flattens the alpha away)."""
    array = np.zeros((100, 200, 4), np.uint8)
    array[...] = (*OPAQUE, 255)
    if clear:
        array[:, 100:] = (0, 255, 0, 0)
    data = images.from_array(array, "srgb").pngsave_buffer()
    for fmt in ("jpeg", "png"):
        found = _facts(render(data, sizes="64,160", format=fmt, facts=True))
        assert found["transparent"] is clear
        assert found["dominant_color"] == found["average_color"] == "#{:02x}{:02x}{:02x}".format(*OPAQUE)
