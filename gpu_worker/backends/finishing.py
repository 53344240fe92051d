"""The host-side steps every backend finishes a job with (imgproxy's finishing list), shared so that every backend
obeys the spec the same way: per size, resize → upright → sRGB → crop or pad → flatten → metadata (`keep`) → encode.

`vips` runs them on its streamed (shrunk-on-load) decode, `tiles` on the intermediate its strips resampled to,
`dali` on the small image its GPU pipeline resampled: each hands its `Source` to `render_sizes`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import pyvips

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.context import RenderContext
from gpu_worker.backends.crops import crop, decoded_rect, focal_point, window_start
from gpu_worker.backends.decode import Source, decoded, decoded_upright
from gpu_worker.backends.metadata import keep_metadata, save_options
from gpu_worker.backends.plan import SWAPS_AXES, overflow_budget
from gpu_worker.backends.turbo import turbo_encode
from thumbify.geometry import Placement
from thumbify.spec import ALPHA_FORMATS, Format, Keep, ThumbnailSpec, thumbnail_name


def render_sizes(ctx: RenderContext, source: Source) -> list[Rendition]:
    return each_size(ctx, lambda placement, facts: render_one(ctx, source, placement, facts))


def each_size(ctx: RenderContext, render: Callable[[Placement, bool], Rendition]) -> list[Rendition]:
    """`render(placement, facts)` for every size, each thumbnail once (two boxes may make the same one); with
    `facts`, the smallest size reads the image's facts off its pixels."""
    out: dict[str, Rendition] = {}
    areas = [p.resize_w * p.resize_h for p in ctx.placements]
    facts_at = areas.index(min(areas)) if ctx.spec.facts else -1
    for i, placement in enumerate(ctx.placements):
        with ctx.stage("finish+encode"):
            one = render(placement, i == facts_at)
        if one.name not in out:
            out[one.name] = one
        elif one.facts:  # the same thumbnail as an earlier size's: that one carries the facts
            out[one.name] = replace(out[one.name], facts=one.facts)
    return list(out.values())


def render_one(ctx: RenderContext, source: Source, placement: Placement, facts: bool = False) -> Rendition:
    spec = ctx.spec
    img, found = finish(ctx, source, placement, facts=facts)
    img = keep_metadata(img, ctx.header, spec.keep)
    with ctx.stage("encode"):
        data = encode(img, spec, ctx.turbo)
    return rendition(ctx, img, img.height, data, found)


def rendition(ctx: RenderContext, img: pyvips.Image, height: int, data: bytes, facts: dict | None = None) -> Rendition:
    name = thumbnail_name(ctx.stem, img.width, height, ctx.spec.format)
    return Rendition(name, img.width, height, ctx.spec.format, data, facts=facts)


def finish(
    ctx: RenderContext, source: Source, placement: Placement, at: tuple[int, int] | None = None, facts: bool = False
) -> tuple[pyvips.Image, dict | None]:
    """The pixels of one size, not yet encoded: resized, upright, sRGB, cropped (at `at`, the left and top of the
    crop, where given: an animation's frames are all cut where its first was) or padded, flattened, 8-bit; and with
    `facts`, the image's facts (`facts.image_facts`), read upright and sRGB before any crop, pad or flatten, so they
    describe the whole picture whatever the size's fit (else None)."""
    spec = ctx.spec
    img, placement, (extent_w, extent_h), point = cut_overflow(source, placement, focal_point(spec))
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
    found = None
    if facts:
        from gpu_worker.backends.facts import image_facts  # numpy: imported by the jobs that ask for facts only

        with ctx.stage("facts"):
            found = image_facts(img).as_dict()
    if placement.crops:
        if at is None:
            img = crop(img, spec, placement.out_w, placement.out_h, point)
        else:
            img = img.crop(*at, placement.out_w, placement.out_h)
    background = spec.background_rgba
    if placement.pads:
        img = _pad(img, placement, background, keep_alpha=spec.format in ALPHA_FORMATS)
    if img.hasalpha() and spec.format not in ALPHA_FORMATS:
        img = img.flatten(background=list(background[:3]))
    if img.format != "uchar":
        img = img.cast("uchar")
    return img, found


def cut_overflow(
    source: Source, placement: Placement, point: tuple[float, float] = (0.5, 0.5)
) -> tuple[pyvips.Image, Placement, tuple[float, float], tuple[float, float]]:
    """`cover` of an extreme aspect ratio (a 2x4000 strip into a 512 box) would resample the whole source at the
    output's scale, a gigapixel image from a tiny upload. Past a budget, keep only the source's band that resamples
    to at most `OVERFLOW_BUDGET` pixels (or twice the box), centred as near the focal `point` (fractions of the
    upright source) as fits, and crop within that. Also returns `point` within what is kept."""
    img, orientation, extent = source.image, source.orientation, (source.extent_w, source.extent_h)
    budget = overflow_budget(placement)
    if not placement.crops or placement.resize_w * placement.resize_h <= budget:
        return img, placement, extent, point
    dec_w, dec_h = decoded_upright(img, orientation)
    sx, sy = placement.resize_w / extent[0], placement.resize_h / extent[1]
    # Only one axis overflows the box in cover: shorten that one.
    if placement.resize_w > placement.out_w:
        keep_w, keep_h = min(dec_w, max(1, math.ceil(budget / placement.resize_h / sx))), dec_h
    else:
        keep_w, keep_h = dec_w, min(dec_h, max(1, math.ceil(budget / placement.resize_w / sy)))
    resize_w = max(placement.out_w, min(placement.resize_w, round(keep_w * sx)))
    resize_h = max(placement.out_h, min(placement.resize_h, round(keep_h * sy)))
    left, top = window_start(dec_w, keep_w, point[0]), window_start(dec_h, keep_h, point[1])
    img = img.crop(*decoded_rect(orientation, (left, top, keep_w, keep_h), (dec_w, dec_h)))
    point = ((point[0] * dec_w - left) / keep_w, (point[1] * dec_h - top) / keep_h)
    # The kept band is whole decoded pixels on the cut axis; the other axis keeps its exact extent.
    kept = (keep_w if keep_w < dec_w else extent[0], keep_h if keep_h < dec_h else extent[1])
    return img, Placement(resize_w, resize_h, placement.out_w, placement.out_h), kept, point


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


def encode(img: pyvips.Image, spec: ThumbnailSpec, turbo: bool = False) -> bytes:
    """`img` in the spec's format with its encoder options. libjpeg-turbo (`turbo_encode`) takes only the JPEGs it
    makes exactly as libvips would: baseline, standard Huffman tables, no metadata; libvips the rest."""
    saved = save_options(img, spec.keep)
    fmt, quality = spec.format, spec.quality
    if fmt is Format.jpeg:
        plain = not spec.progressive and not spec.optimize_coding and spec.keep is Keep.none
        data = turbo_encode(img, quality) if turbo and plain else None
        return data or img.jpegsave_buffer(
            Q=quality, optimize_coding=spec.optimize_coding, interlace=spec.progressive, **saved
        )
    if fmt is Format.webp:
        return img.webpsave_buffer(Q=quality, effort=spec.effort, **saved)
    if fmt is Format.png:
        return img.pngsave_buffer(compression=6, interlace=spec.progressive, **saved)
    if fmt is Format.gif:  # an animation's frames, delays and loop count ride in its metadata (`animated`)
        return img.gifsave_buffer(effort=spec.effort, **saved)
    return img.heifsave_buffer(Q=quality, compression="av1", effort=spec.effort, **saved)


__all__ = [
    "cut_overflow",
    "each_size",
    "encode",
    "finish",
    "render_one",
    "render_sizes",
    "rendition",
    "resize",
    "to_srgb",
]
