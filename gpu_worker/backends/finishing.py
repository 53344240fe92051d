"""The host-side steps every backend finishes a job with (imgproxy's finishing list), shared so that every backend
obeys the spec the same way: per size, resize → upright → sRGB → crop or pad → flatten → encode, metadata stripped.

`vips` runs them on its streamed (shrunk-on-load) decode, `tiles` on the intermediate its strips resampled to,
`dali` on the small image its GPU pipeline resampled: each hands its `Source` to `render_sizes`.
"""

from __future__ import annotations

import math

import pyvips

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.context import RenderContext
from gpu_worker.backends.decode import Source, decoded, decoded_upright
from gpu_worker.backends.plan import SWAPS_AXES, overflow_budget
from gpu_worker.backends.turbo import turbo_encode
from thumbify.geometry import Placement
from thumbify.spec import ALPHA_FORMATS, Format, thumbnail_name


def render_sizes(ctx: RenderContext, source: Source) -> list[Rendition]:
    out: list[Rendition] = []
    seen: set[str] = set()
    for placement in ctx.placements:
        with ctx.stage("finish+encode"):
            rendition = render_one(ctx, source, placement)
        if rendition.name not in seen:
            seen.add(rendition.name)
            out.append(rendition)
    return out


def render_one(ctx: RenderContext, source: Source, placement: Placement) -> Rendition:
    spec = ctx.spec
    img, placement, (extent_w, extent_h) = cut_overflow(source, placement)
    hscale, vscale = placement.resize_w / extent_w, placement.resize_h / extent_h
    if source.orientation in SWAPS_AXES:
        hscale, vscale = vscale, hscale
    img = resize(img, hscale, vscale)
    # The thumbnail is small now: hold it in memory so the steps below may read it in any order.
    img = decoded(img.copy_memory)
    if source.orientation != 1:
        img = img.autorot()
    img = to_srgb(img)
    img = _exact(img, placement.resize_w, placement.resize_h)
    if placement.crops:
        img = img.smartcrop(placement.out_w, placement.out_h, interesting=spec.crop.value)
    background = spec.background_rgba
    if placement.pads:
        img = _pad(img, placement, background, keep_alpha=spec.format in ALPHA_FORMATS)
    if img.hasalpha() and spec.format not in ALPHA_FORMATS:
        img = img.flatten(background=list(background[:3]))
    if img.format != "uchar":
        img = img.cast("uchar")
    with ctx.stage("encode"):
        data = encode(img, spec.format, spec.quality, ctx.turbo)
    name = thumbnail_name(ctx.stem, img.width, img.height, spec.format)
    return Rendition(name, img.width, img.height, spec.format, data)


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


def encode(img: pyvips.Image, fmt: Format, quality: int, turbo: bool = False) -> bytes:
    if fmt is Format.jpeg:
        data = turbo_encode(img, quality) if turbo else None
        return data or img.jpegsave_buffer(Q=quality, keep="none", optimize_coding=False)
    if fmt is Format.webp:
        return img.webpsave_buffer(Q=quality, keep="none", effort=4)
    if fmt is Format.png:
        return img.pngsave_buffer(compression=6, keep="none")
    # AVIF: effort 2 keeps the AV1 encoder from being the slowest step by an order of magnitude.
    return img.heifsave_buffer(Q=quality, compression="av1", effort=2, keep="none")


__all__ = ["cut_overflow", "encode", "render_one", "render_sizes", "resize", "to_srgb"]
