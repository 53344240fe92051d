"""libjpeg-turbo 3 through `simplejpeg`, for plain 8-bit JPEGs: faster than libvips' own JPEG loader and saver (its
bundled mozjpeg) at the same DCT scale and the same quantisation tables, and as strict. libvips keeps everything
else: CMYK, 16-bit, sources too large to hold whole, and every install without simplejpeg.

Measured by `python -m benchmarks.render_cpu` (benchmarks/README.md, "The render's CPU"): the decode of a 1024×768
JPEG at 1/2 costs ~0.5 ms less, the encode of a 256 px thumbnail ~0.45 ms less, of a ~5 ms render.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pyvips

if TYPE_CHECKING:
    from gpu_worker.backends.context import RenderContext

# `turbo_jpeg` holds the whole file and the whole decoded image in memory, where libvips streams both: only sources
# within these bounds take it (a 12 MP photo is ~4 MB and decodes at 1/8 to 0.2 MP); larger ones stream.
TURBO_MAX_FILE_BYTES = 32 << 20
TURBO_MAX_DECODED_PIXELS = 4_000_000
# The header fields the finishing steps read from the decoded image (`autorot`, `to_srgb`), copied onto the turbo
# decode so that it finishes exactly as libvips' own.
TURBO_METADATA = ("orientation", "icc-profile-data")


@functools.cache
def _simplejpeg():
    """simplejpeg (and NumPy with it), imported on first use: `thumbify thumbnail --help` should not pay for them.
    None in an install without it (the GPU check's bare machine): libvips decodes and encodes every JPEG."""
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


def turbo_jpeg(ctx: RenderContext, shrink: int) -> pyvips.Image | None:
    """The JPEG decoded by libjpeg-turbo 3 at 1/`shrink` into a libvips image in memory, carrying the header's
    orientation and ICC profile; None for what it does not cover (CMYK, 16-bit, a large source), which libvips
    decodes as before. Strict as libvips' loader at `fail_on="warning"`: simplejpeg's `strict` turns every libjpeg
    warning (a scan cut short, bytes where a marker should be) into an error, raised as `pyvips.Error` for
    `decode_errors`.

    libjpeg-turbo sizes a side of n pixels at 1/s as ceil(n / s), libvips as floor(n / s) with the same pixels
    before it: the last partial pixel is cut, so the two decodes are pixel for pixel the same (libvips' `resize`
    fits its factor to whole pixels, and one more row would stretch the thumbnail by a fraction of a pixel)."""
    header, simplejpeg = ctx.header, _simplejpeg()
    if simplejpeg is None or header.format != "uchar":
        return None
    colorspace = {(3, "srgb"): "RGB", (1, "b-w"): "GRAY"}.get((header.bands, header.interpretation))
    out_w, out_h = -(-header.width // shrink), -(-header.height // shrink)
    if colorspace is None or out_w * out_h > TURBO_MAX_DECODED_PIXELS:
        return None
    with ctx.path.open("rb") as f:
        data = f.read(TURBO_MAX_FILE_BYTES + 1)
    if len(data) > TURBO_MAX_FILE_BYTES:
        return None
    try:
        # The smallest of libjpeg-turbo's scales (M/8) at least this large is exactly 1/shrink.
        pixels = simplejpeg.decode_jpeg(data, colorspace, min_width=out_w, min_height=out_h, strict=True)
    except ValueError as exc:
        raise pyvips.Error("libjpeg-turbo refused the JPEG", str(exc)) from None
    height, width, bands = pixels.shape
    if (width, height) != (out_w, out_h):  # a header libjpeg reads otherwise than libvips: let libvips judge it
        return None
    image = pyvips.Image.new_from_memory(pixels.data, width, height, bands, "uchar")
    image = image.crop(0, 0, header.width // shrink, header.height // shrink).copy(interpretation=header.interpretation)
    for name in TURBO_METADATA:
        if gtype := header.get_typeof(name):
            image.set_type(gtype, name, header.get(name))
    return image


def turbo_encode(img: pyvips.Image, quality: int) -> bytes | None:
    """An 8-bit sRGB image as a baseline JPEG with no metadata but JFIF's (as libvips' `jpegsave(keep="none")`),
    chroma subsampled below quality 90 as libvips' default does; None where libvips must encode it."""
    simplejpeg = _simplejpeg()
    if simplejpeg is None or img.format != "uchar" or img.bands != 3 or img.interpretation != "srgb":
        return None
    return simplejpeg.encode_jpeg(img.numpy(), quality, "RGB", "444" if quality >= 90 else "420")


__all__ = ["TURBO_MAX_DECODED_PIXELS", "TURBO_MAX_FILE_BYTES", "turbo_encode", "turbo_jpeg"]
