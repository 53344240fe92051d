"""Decoding with libvips, shared by the vips and tiles backends: strict about damage, shrunk on load where the
format allows, and the `Source` the finishing steps take (pixels as decoded, plus the exact extent they cover).
Plain 8-bit JPEGs of a bounded size may instead be decoded by libjpeg-turbo 3 (`turbo.turbo_jpeg`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import pyvips

from gpu_worker.backends.context import RenderContext
from gpu_worker.backends.plan import SWAPS_AXES
from gpu_worker.backends.turbo import turbo_jpeg
from thumbify.errors import CorruptImage
from thumbify.geometry import load_shrink
from thumbify.probe import NOT_BUILT_IN, heif_refusal, open_image, vips_message

T = TypeVar("T")

# How strictly each decoder reads (libvips' `fail_on`): damaged data fails, never turns into pixels. libjpeg reports
# damaged scan data only as warnings and fills the gaps with grey (sharp's default is the same, failOn: 'warning');
# libpng checks chunk CRCs and zlib's Adler-32 only at "error" or stricter (below it libvips turns both checks off).
# The other formats fail on truncation; their decoders raise errors for damage of their own.
FAIL_ON = {"jpeg": "warning", "png": "error"}


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


def load_source(ctx: RenderContext, headroom: float) -> tuple[Source, int]:
    """The source opened for sequential reading, shrunk on load where the format allows (JPEG's DCT scaling, WebP's
    scaled decode) to keep `headroom`× the largest size; and the JPEG shrink it was decoded at (1 for none). With
    `ctx.turbo`, a JPEG `turbo_jpeg` covers is decoded by it instead, at the same shrink."""
    fmt, (target_w, target_h) = ctx.fmt, ctx.largest
    options: dict[str, object] = {"access": "sequential", "fail_on": FAIL_ON.get(fmt, "truncated")}
    shrink = 1
    if fmt == "jpeg":
        shrink = load_shrink(ctx.up_w, ctx.up_h, target_w, target_h, headroom)
        if ctx.turbo and (image := turbo_jpeg(ctx, shrink)) is not None:
            return Source(image, ctx.orientation, ctx.up_w, ctx.up_h, ctx.up_w / shrink, ctx.up_h / shrink), shrink
        if shrink > 1:
            options["shrink"] = shrink
    elif fmt == "webp":
        scale = min(1.0, headroom * max(target_w / ctx.up_w, target_h / ctx.up_h))
        if scale < 0.5:
            options["scale"] = scale
    image = open_image(ctx.path, fmt, **options)
    # The exact extent in decoded pixels (upright): a JPEG shrink drops the last side mod shrink pixels.
    extent = (ctx.up_w / shrink, ctx.up_h / shrink) if shrink > 1 else decoded_upright(image, ctx.orientation)
    return Source(image, ctx.orientation, ctx.up_w, ctx.up_h, *extent), shrink


def decoded_upright(img: pyvips.Image, orientation: int) -> tuple[int, int]:
    return (img.height, img.width) if orientation in SWAPS_AXES else (img.width, img.height)


@contextmanager
def decode_errors(fmt: str) -> Iterator[None]:
    """libvips' decode errors as the readable, permanent `CorruptImage`; a HEIF codec this libvips lacks (a phone's
    HEVC that reached a worker unprobed) as `UnsupportedMedia`, as the API refuses it."""
    try:
        yield
    except pyvips.Error as exc:
        missing = NOT_BUILT_IN.search(str(exc))
        if missing:
            raise heif_refusal(missing.group(1).lower()) from exc
        raise CorruptImage(
            f"the {fmt} image is corrupt or truncated and cannot be decoded: {vips_message(exc)}"
        ) from exc


__all__ = ["FAIL_ON", "Source", "decode_errors", "decoded", "decoded_upright", "load_source"]
