"""The host-side steps every backend finishes a job with (imgproxy's finishing list), shared so that every backend
obeys the spec the same way: per size, resize → upright → sRGB → crop or pad → flatten → encode, metadata stripped.

`vips` runs them on its streamed (shrunk-on-load) decode; `dali` on the small image its GPU pipeline resampled.
A backend builds a `Source` (pixels as decoded, not yet upright, plus the exact extent they cover), `plan`s the
spec's sizes against the upright source size and hands both to `render_sizes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyvips

from gpu_worker.backends.base import Rendition
from thumbify.errors import CorruptImage
from thumbify.geometry import Placement, load_shrink, place
from thumbify.probe import open_image, vips_message
from thumbify.spec import ALPHA_FORMATS, Format, ThumbnailSpec, thumbnail_name

SWAPS_AXES = {5, 6, 7, 8}
# `cover` resamples at most this many pixels (or twice the box) before cropping: see `cut_overflow`.
OVERFLOW_BUDGET = 8_000_000
_CROP = {"centre": "centre", "attention": "attention", "entropy": "entropy"}
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    image: pyvips.Image  # as decoded: not yet upright
    orientation: int
    upright_w: int  # full-resolution size as displayed
    upright_h: int
    # The source's exact extent in decoded pixels (upright). A JPEG decoded at 1/8 of 853 rows has 107 rows, of
    # which only 106.625 are the image; resampling by the size ratio would stretch it by a third of an output pixel.
    extent_w: float
    extent_h: float


def plan(up_w: int, up_h: int, spec: ThumbnailSpec) -> list[Placement]:
    """The placements of the spec's sizes on an upright `up_w`×`up_h` source, in the order the sizes were asked (the
    job lists its thumbnails in this order)."""
    # Several sizes of one fit can land on the same pixels (256 and 256x300 inside a square source): once each.
    return list(dict.fromkeys(place(up_w, up_h, size, spec.fit) for size in spec.sizes))


def intermediate_scale(extent_w: float, extent_h: float, target_w: int, target_h: int, headroom: float) -> float:
    """For several sizes: the factor of one shared reduction of the source to `headroom`× the largest size, each
    size then cut from that; 1.0 (no reduction) when the source is already within a quarter of it."""
    scale = min(1.0, headroom * max(target_w / extent_w, target_h / extent_h))
    return 1.0 if scale >= 0.75 else scale


def render_sizes(source: Source, placements: list[Placement], spec: ThumbnailSpec, stem: str) -> list[Rendition]:
    out: list[Rendition] = []
    seen: set[str] = set()
    for placement in placements:
        rendition = render_one(source, placement, spec, stem)
        if rendition.name not in seen:
            seen.add(rendition.name)
            out.append(rendition)
    return out


def render_one(source: Source, placement: Placement, spec: ThumbnailSpec, stem: str) -> Rendition:
    img, placement, (extent_w, extent_h) = cut_overflow(source, placement)
    swap = source.orientation in SWAPS_AXES
    hscale, vscale = placement.resize_w / extent_w, placement.resize_h / extent_h
    if swap:
        hscale, vscale = vscale, hscale
    img = resize(img, hscale, vscale)
    # The thumbnail is small now: hold it in memory so the steps below may read it in any order.
    img = decoded(img.copy_memory)
    if source.orientation != 1:
        img = img.autorot()
    img = to_srgb(img)
    img = _exact(img, placement.resize_w, placement.resize_h)
    if placement.crops:
        img = img.smartcrop(placement.out_w, placement.out_h, interesting=_CROP[spec.crop.value])
    background = spec.background_rgba
    if placement.pads:
        img = _pad(img, placement, background, keep_alpha=spec.format in ALPHA_FORMATS)
    if img.hasalpha() and spec.format not in ALPHA_FORMATS:
        img = img.flatten(background=list(background[:3]))
    if img.format != "uchar":
        img = img.cast("uchar")
    data = _encode(img, spec.format, spec.quality)
    return Rendition(thumbnail_name(stem, img.width, img.height, spec.format), img.width, img.height, spec.format, data)


def cut_overflow(source: Source, placement: Placement) -> tuple[pyvips.Image, Placement, tuple[float, float]]:
    """`cover` of an extreme aspect ratio (a 2x4000 strip into a 512 box) would resample the whole source at the
    output's scale, a gigapixel image from a tiny upload. Past a budget, keep only the source's centre band that
    resamples to at most `OVERFLOW_BUDGET` pixels (or twice the box), and crop within that."""
    img, orientation, extent = source.image, source.orientation, (source.extent_w, source.extent_h)
    budget = overflow_budget(placement)
    if not placement.crops or placement.resize_w * placement.resize_h <= budget:
        return img, placement, extent
    dec_w, dec_h = decoded_upright(img, orientation)
    sx, sy = placement.resize_w / extent[0], placement.resize_h / extent[1]
    # Only one axis overflows the box in cover: shorten that one.
    if placement.resize_w > placement.out_w:
        keep_w, keep_h = min(dec_w, max(1, math.ceil(budget / placement.resize_h / sx))), dec_h
    else:
        keep_w, keep_h = dec_w, min(dec_h, max(1, math.ceil(budget / placement.resize_w / sy)))
    resize_w = max(placement.out_w, min(placement.resize_w, round(keep_w * sx)))
    resize_h = max(placement.out_h, min(placement.resize_h, round(keep_h * sy)))
    cut_w, cut_h = (keep_h, keep_w) if orientation in SWAPS_AXES else (keep_w, keep_h)
    img = img.crop((img.width - cut_w) // 2, (img.height - cut_h) // 2, cut_w, cut_h)
    # The kept band is whole decoded pixels on the cut axis; the other axis keeps its exact extent.
    kept = (keep_w if keep_w < dec_w else extent[0], keep_h if keep_h < dec_h else extent[1])
    return img, Placement(resize_w, resize_h, placement.out_w, placement.out_h), kept


def overflow_budget(placement: Placement) -> int:
    return max(OVERFLOW_BUDGET, 2 * placement.out_w * placement.out_h)


def decoded_upright(img: pyvips.Image, orientation: int) -> tuple[int, int]:
    return (img.height, img.width) if orientation in SWAPS_AXES else (img.width, img.height)


def resize(img: pyvips.Image, hscale: float, vscale: float) -> pyvips.Image:
    """Lanczos-3 on premultiplied alpha, so transparent pixels don't bleed dark fringes into the edges."""
    if abs(hscale - 1.0) < 1e-9 and abs(vscale - 1.0) < 1e-9:
        return img
    if img.hasalpha():
        fmt = img.format
        return img.premultiply().resize(hscale, vscale=vscale, kernel="lanczos3").unpremultiply().cast(fmt)
    return img.resize(hscale, vscale=vscale, kernel="lanczos3")


def _exact(img: pyvips.Image, width: int, height: int) -> pyvips.Image:
    """Guard against a one-pixel rounding drift of the resampler: the output has exactly the planned size."""
    if (img.width, img.height) == (width, height):
        return img
    if img.width >= width and img.height >= height:
        return img.crop(0, 0, width, height)
    return img.embed(0, 0, width, height, extend="copy")


def to_srgb(img: pyvips.Image) -> pyvips.Image:
    """8-bit sRGB whatever came in: CMYK and ICC-tagged images through their profile, the rest by colourspace.
    Relative colorimetric, as libvips' own thumbnail: a CMYK profile's perceptual table is a gamut-mapping rendering
    that shifts in-gamut colours by 20+ levels; the colorimetric table gives the colours the file describes."""
    if img.get_typeof("icc-profile-data") or img.interpretation == "cmyk":
        try:
            fallback = "cmyk" if img.interpretation == "cmyk" else "srgb"
            img = img.icc_transform("srgb", embedded=True, input_profile=fallback, intent="relative")
        except pyvips.Error:
            img = img.colourspace("srgb")
    if img.interpretation != "srgb" or img.format != "uchar":
        img = img.colourspace("srgb")
    return img


def _pad(img: pyvips.Image, placement: Placement, rgba: tuple[int, int, int, int], keep_alpha: bool) -> pyvips.Image:
    if keep_alpha and (rgba[3] < 255 or img.hasalpha()):
        if not img.hasalpha():
            img = img.bandjoin(255)
        background = list(rgba)
    else:
        background = list(rgba[: img.bands]) if not img.hasalpha() else list(rgba[:3]) + [255]
    return img.embed(
        placement.pad_left,
        placement.pad_top,
        placement.out_w,
        placement.out_h,
        extend="background",
        background=background,
    )


def _encode(img: pyvips.Image, fmt: Format, quality: int) -> bytes:
    if fmt is Format.jpeg:
        return img.jpegsave_buffer(Q=quality, keep="none", optimize_coding=False)
    if fmt is Format.webp:
        return img.webpsave_buffer(Q=quality, keep="none", effort=4)
    if fmt is Format.png:
        return img.pngsave_buffer(compression=6, keep="none")
    # AVIF: effort 2 keeps the AV1 encoder from being the slowest step by an order of magnitude.
    return img.heifsave_buffer(Q=quality, compression="av1", effort=2, keep="none")


__all__ = [
    "OVERFLOW_BUDGET",
    "SWAPS_AXES",
    "Source",
    "cut_overflow",
    "decoded",
    "decoded_upright",
    "intermediate_scale",
    "overflow_budget",
    "plan",
    "render_one",
    "render_sizes",
    "resize",
]


# How strictly each decoder reads (libvips' `fail_on`): damaged data fails, never turns into pixels. libjpeg reports
# damaged scan data only as warnings and fills the gaps with grey (sharp's default is the same, failOn: 'warning');
# libpng checks chunk CRCs and zlib's Adler-32 only at "error" or stricter (below it libvips turns both checks off).
# The other formats fail on truncation; their decoders raise errors for damage of their own.
FAIL_ON = {"jpeg": "warning", "png": "error"}


def decoded(pull: Callable[[], T]) -> T:
    """`pull()`, the call that makes libvips decode a lazily opened source (a `copy_memory`, a sink), checked for
    the damage libjpeg reports while decoding the last strip, which `fail_on="warning"` never sees.

    libvips' JPEG loader checks for warnings before it decodes each strip of 8 rows, not after the last one: damage
    libjpeg meets in the last strip (image data too short for the size the header declares, a marker where data
    should be) is only logged, and libjpeg fills what it could not decode with grey. With shrink-on-load the last
    strip is often the whole image: a header claiming 65500x10 over 64x48 of data decodes at 1/8 as 2 rows. The
    first warning of a decode is also written to libvips' error buffer as "VipsJpeg: ...": read it right after the
    decode, before any other pyvips call (pyvips empties that buffer whenever it looks up an operation by name).
    The buffer is per process: a render process decodes one image at a time."""
    pyvips.vips_lib.vips_error_clear()
    out = pull()
    text = pyvips.ffi.string(pyvips.vips_lib.vips_error_buffer()).decode(errors="replace")
    warnings = [line.strip() for line in text.splitlines() if line.startswith("VipsJpeg:")]
    if warnings:
        raise pyvips.Error("the JPEG decoder warned while decoding the last rows", warnings[-1])
    return out


def load_shrunk(
    path: Path, fmt: str, up_w: int, up_h: int, target_w: int, target_h: int, headroom: float
) -> tuple[pyvips.Image, int]:
    """The source opened for sequential reading, shrunk on load where the format allows (JPEG's DCT scaling, WebP's
    scaled decode) to keep `headroom`× the target; and the JPEG shrink it was decoded at (1 for none)."""
    options: dict[str, object] = {"access": "sequential", "fail_on": FAIL_ON.get(fmt, "truncated")}
    shrink = 1
    if fmt == "jpeg":
        shrink = load_shrink(up_w, up_h, target_w, target_h, headroom)
        if shrink > 1:
            options["shrink"] = shrink
    elif fmt == "webp":
        scale = min(1.0, headroom * max(target_w / up_w, target_h / up_h))
        if scale < 0.5:
            options["scale"] = scale
    return open_image(path, fmt, **options), shrink


@contextmanager
def decode_errors(fmt: str) -> Iterator[None]:
    """libvips' decode errors as the readable, permanent `CorruptImage`."""
    try:
        yield
    except pyvips.Error as exc:
        raise CorruptImage(
            f"the {fmt} image is corrupt or truncated and cannot be decoded: {vips_message(exc)}"
        ) from exc


@dataclass(frozen=True)
class Header:
    orientation: int  # EXIF 1..8 (anything else counts as upright)
    up_w: int  # full-resolution size as displayed
    up_h: int
    placements: list[Placement]


def read_header(path: Path, fmt: str, spec: ThumbnailSpec) -> Header:
    """The source's header (nothing decoded) and the plan for every size of `spec`."""
    header = open_image(path, fmt, access="sequential")
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation not in range(1, 9):
        orientation = 1
    w, h = header.width, header.height
    up_w, up_h = (h, w) if orientation in SWAPS_AXES else (w, h)
    return Header(orientation, up_w, up_h, plan(up_w, up_h, spec))


def exact_extent(image: pyvips.Image, header: Header, shrink: int) -> tuple[float, float]:
    """The source's exact extent in decoded pixels (upright): a JPEG shrink drops the last side mod shrink pixels."""
    if shrink > 1:
        return header.up_w / shrink, header.up_h / shrink
    return decoded_upright(image, header.orientation)
