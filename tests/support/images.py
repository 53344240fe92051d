"""Real test images, made by the tests with pyvips and numpy (no binary fixtures are committed).

Every generator is deterministic. `*_image`, `from_array`, `with_orientation`, `zone_plate` and `checkerboard`
return a `pyvips.Image` (uchar/ushort, with its interpretation set); the others return the encoded file as `bytes`
(write it with `write(path, data)`). The main ones:

- `photo_like(w, h, seed)`: JPEG of gradients, noise at several scales and hard edges (`photo_like_image` unencoded)
- `oriented_jpeg(orientation)`: shows as a landscape image with a MARK top-left quadrant, stored per its EXIF tag
- `cmyk_jpeg()`, `cmyk_jpeg_without_profile()`, `p3_tagged(colours)`: colour-managed sources of known sRGB patches
- `png16`, `grey_png`, `grey_jpeg`, `grey16_png`, `rgba_png`: bit depths and band layouts
- `animated("gif" | "webp")`: three frames of FRAME_COLOURS; `encode(image, container)` for every container
- `truncated_jpeg()`, `corrupt_jpeg()`, `jpeg_with_sof_size(w, h)`: broken or lying files
- `make_jpeg`, `make_png`: noise payloads for service tests (entropy, so a JPEG has a long scan)
- support/corpus.py: a PngSuite-like corpus written chunk by chunk, its corruptions, and EXIF-oriented JPEGs
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pyvips

# Solid colours that lie well inside the gamut of libvips' built-in CMYK profile, so a CMYK round trip keeps them.
CMYK_PATCHES: list[tuple[int, int, int]] = [
    (180, 70, 60),  # brick red
    (70, 140, 90),  # leaf green
    (60, 90, 150),  # slate blue
    (128, 128, 128),  # mid grey
    (210, 190, 90),  # ochre
    (235, 235, 235),  # near white
]
MARK = (220, 30, 30)  # the marked corner's colour
GREY = (120, 120, 120)  # the rest of a marked image (not 128: DALI doubts a last MCU of exactly that grey)
FRAME_COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]  # an animation's three frames, in order


# -- building blocks ---------------------------------------------------------------------------------------------


def from_array(array: np.ndarray, interpretation: str | None = None) -> pyvips.Image:
    """A pyvips image from an HxW or HxWxB array, with the interpretation the array's dtype and bands imply."""
    array = np.ascontiguousarray(array)
    image = pyvips.Image.new_from_array(array)
    if interpretation is None:
        bands = 1 if array.ndim == 2 else array.shape[2]
        sixteen = array.dtype == np.uint16
        if bands <= 2:
            interpretation = "grey16" if sixteen else "b-w"
        else:
            interpretation = "rgb16" if sixteen else "srgb"
    return image.copy(interpretation=interpretation)


def solid_image(width: int, height: int, rgb: tuple[int, ...]) -> pyvips.Image:
    array = np.empty((height, width, len(rgb)), np.uint8)
    array[:] = rgb
    return from_array(array)


def patches_image(colours: list[tuple[int, int, int]], patch: int = 64, columns: int = 3) -> pyvips.Image:
    """Solid square patches in a grid, row-major: patch i's centre is at `patch_centre(i, patch, columns)`."""
    rows = -(-len(colours) // columns)
    array = np.zeros((rows * patch, columns * patch, 3), np.uint8)
    for i, colour in enumerate(colours):
        r, c = divmod(i, columns)
        array[r * patch : (r + 1) * patch, c * patch : (c + 1) * patch] = colour
    return from_array(array)


def patch_centre(i: int, patch: int = 64, columns: int = 3) -> tuple[int, int]:
    """(x, y) of patch i's centre in a `patches_image`."""
    r, c = divmod(i, columns)
    return c * patch + patch // 2, r * patch + patch // 2


def _noise_field(width: int, height: int, cells: int, rng: np.random.Generator) -> pyvips.Image:
    """Gaussian noise on a grid of about `cells` cells along the long side, blown up with a smooth (bicubic)
    interpolator to `width`x`height`: band-limited to its own scale, like texture in a photograph."""
    cw = max(2, cells * width // max(width, height))
    ch = max(2, cells * height // max(width, height))
    field = pyvips.Image.new_from_array(rng.normal(0.0, 1.0, (ch, cw, 3)).astype(np.float32))
    big = field.resize(width / cw, vscale=height / ch, kernel="cubic")
    big = big.crop(0, 0, min(width, big.width), min(height, big.height))
    return big.embed(0, 0, width, height, extend="copy")


def photo_like_image(width: int, height: int, seed: int = 0) -> pyvips.Image:
    """An 8-bit sRGB photo stand-in: smooth gradients, noise at several scales down to single-pixel grain, and a few
    hard edges (a rectangle, a disc, a thin diagonal bar). Built as one lazy libvips pipeline, so a 12 MP image
    costs well under a second."""
    rng = np.random.default_rng(seed)
    xy = pyvips.Image.xyz(width, height).cast("float")
    x, y = xy[0] / max(1, width - 1), xy[1] / max(1, height - 1)  # 0..1
    red = 60 + 120 * x + 30 * (y * 170).sin()  # libvips' sin takes degrees
    green = 50 + 90 * y + 40 * x * y
    blue = 170 - 100 * x * (1 - y) + 20 * (x * 230).cos()
    out = red.bandjoin([green, blue])
    for cells, amplitude in ((4, 30.0), (16, 18.0), (64, 10.0), (256, 6.0), (1024, 4.0)):
        out = out + amplitude * _noise_field(width, height, cells, rng)
    grain = pyvips.Image.gaussnoise(width, height, sigma=3.0, mean=0.0, seed=int(rng.integers(1 << 30)))
    out = out + grain.gaussblur(0.6)
    # Hard edges.
    short = min(width, height)
    rect = (x > 1 / 6) & (x < 1 / 3) & (y > 1 / 5) & (y < 1 / 2)
    out = rect.ifthenelse([235, 225, 40], out)
    disc = ((xy[0] - 0.7 * width) ** 2 + (xy[1] - 0.6 * height) ** 2) < (0.12 * short) ** 2
    out = disc.ifthenelse([20, 35, 90], out)
    bar = (((xy[0] - 0.1 * width) - (xy[1] - 0.55 * height) * 0.8).abs() < max(2.0, 0.01 * width)) & (
        xy[1] > 0.55 * height
    )
    out = bar.ifthenelse([250, 250, 250], out)
    return (out + 0.5).cast("uchar").copy(interpretation="srgb")  # cast clips to 0..255


def photo_like(width: int, height: int, seed: int = 0, quality: int = 95) -> bytes:
    """A photo-like JPEG."""
    return photo_like_image(width, height, seed).jpegsave_buffer(Q=quality)


def marked_image(width: int, height: int) -> pyvips.Image:
    """Upright: the top-left quadrant is MARK, the rest GREY."""
    array = np.empty((height, width, 3), np.uint8)
    array[:] = GREY
    array[: height // 2, : width // 2] = MARK
    return from_array(array)


def zone_plate(size: int) -> pyvips.Image:
    """A 0..255 zone plate whose frequency rises to Nyquist at the edges: downscaling it aliases unless filtered."""
    zone = pyvips.Image.zone(size, size)  # float, -1..1
    return ((zone + 1) * 127.5).cast("uchar").copy(interpretation="b-w")


def checkerboard(size: int) -> pyvips.Image:
    """A 1-px black/white checkerboard: all its energy is at Nyquist."""
    yy, xx = np.mgrid[0:size, 0:size]
    return from_array(np.where((xx + yy) % 2 == 0, 0, 255).astype(np.uint8))


# -- orientation -------------------------------------------------------------------------------------------------

# What must be done to an upright image to get the pixels a file with this EXIF orientation stores
# (the inverse of what a viewer does when it shows the file).
_STORE = {
    1: lambda im: im,
    2: lambda im: im.fliphor(),
    3: lambda im: im.rot180(),
    4: lambda im: im.flipver(),
    5: lambda im: im.rot90().fliphor(),  # transpose
    6: lambda im: im.rot270(),
    7: lambda im: im.rot270().fliphor(),  # transverse
    8: lambda im: im.rot90(),
}


def with_orientation(upright: pyvips.Image, orientation: int) -> pyvips.Image:
    """The stored pixels and the EXIF tag a camera would write for an image that displays as `upright`."""
    stored = _STORE[orientation](upright).copy()
    stored.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    return stored


def oriented_jpeg(orientation: int, width: int = 320, height: int = 160) -> bytes:
    """A JPEG that a viewer shows as `width`x`height` with the top-left quadrant MARK, tagged `orientation`."""
    return with_orientation(marked_image(width, height), orientation).jpegsave_buffer(Q=95)


# -- colour management -------------------------------------------------------------------------------------------


def cmyk_jpeg(colours: list[tuple[int, int, int]] = CMYK_PATCHES, patch: int = 64) -> bytes:
    """A CMYK JPEG with libvips' built-in CMYK profile embedded; it shows as `patches_image(colours)`."""
    cmyk = patches_image(colours, patch).icc_transform("cmyk", intent="relative")
    assert cmyk.interpretation == "cmyk" and cmyk.bands == 4
    return cmyk.jpegsave_buffer(Q=98, keep="icc")


def cmyk_jpeg_without_profile(colours: list[tuple[int, int, int]] = CMYK_PATCHES, patch: int = 64) -> bytes:
    cmyk = patches_image(colours, patch).icc_transform("cmyk", intent="relative")
    return cmyk.jpegsave_buffer(Q=98, keep="none")


def p3_tagged(colours: list[tuple[int, int, int]], patch: int = 64, fmt: str = "png") -> bytes:
    """RGB values in Display P3 with the P3 profile embedded; it shows as `patches_image(colours)` (sRGB).
    Raises pyvips.Error where this libvips has no built-in P3 profile."""
    p3 = patches_image(colours, patch).icc_transform("p3", intent="relative")
    if fmt == "png":
        return p3.pngsave_buffer(keep="icc")
    return p3.jpegsave_buffer(Q=98, keep="icc")


# -- bit depth, bands ----------------------------------------------------------------------------------------------


def png16(colours: list[tuple[int, int, int]], patch: int = 32) -> bytes:
    """A 16-bit RGB PNG of solid patches; 8-bit level v is stored as v * 257."""
    eight = patches_image(colours, patch, columns=len(colours))
    sixteen = (eight.cast("ushort") * 257).cast("ushort").copy(interpretation="rgb16")
    return sixteen.pngsave_buffer(bitdepth=16)


def grey_levels_image(levels: list[int], patch: int = 32) -> pyvips.Image:
    array = np.zeros((patch, patch * len(levels)), np.uint8)
    for i, level in enumerate(levels):
        array[:, i * patch : (i + 1) * patch] = level
    return from_array(array)


def grey_png(levels: list[int], patch: int = 32) -> bytes:
    return grey_levels_image(levels, patch).pngsave_buffer()


def grey_jpeg(levels: list[int], patch: int = 32) -> bytes:
    image = grey_levels_image(levels, patch)
    assert image.bands == 1
    return image.jpegsave_buffer(Q=98)


def grey16_png(levels16: list[int], patch: int = 32) -> bytes:
    array = np.zeros((patch, patch * len(levels16)), np.uint16)
    for i, level in enumerate(levels16):
        array[:, i * patch : (i + 1) * patch] = level
    return from_array(array).pngsave_buffer(bitdepth=16)


def rgba_image(width: int = 200, height: int = 100, rgb=(40, 90, 200), hidden=(0, 255, 0)) -> pyvips.Image:
    """Left half opaque `rgb`; right half fully transparent (its colour, `hidden`, must never show)."""
    array = np.zeros((height, width, 4), np.uint8)
    array[:, : width // 2] = (*rgb, 255)
    array[:, width // 2 :] = (*hidden, 0)
    return from_array(array, "srgb")


def rgba_png(width: int = 200, height: int = 100, rgb=(40, 90, 200)) -> bytes:
    return rgba_image(width, height, rgb).pngsave_buffer()


# -- containers and encodings --------------------------------------------------------------------------------------


def animated(
    fmt: str,
    colours: list[tuple[int, int, int]] = FRAME_COLOURS,
    width: int = 64,
    height: int = 48,
    delays: list[int] | None = None,
    loop: int = 0,
) -> bytes:
    """An animation (GIF or WebP), one solid colour per frame (three by default), frames stacked as libvips pages,
    each shown for its `delays` ms (100 each by default), played `loop` times (0: for ever)."""
    frames = [solid_image(width, height, c) for c in colours]
    strip = pyvips.Image.arrayjoin(frames, across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.gint_type, "n-pages", len(colours))
    strip.set_type(pyvips.GValue.array_int_type, "delay", delays or [100] * len(colours))
    strip.set_type(pyvips.GValue.gint_type, "loop", loop)
    if fmt == "gif":
        return strip.gifsave_buffer()
    if fmt == "webp":
        return strip.webpsave_buffer(Q=95)
    raise ValueError(fmt)


def encode(image: pyvips.Image, fmt: str, **options) -> bytes:
    """`image` in one container: jpeg, progressive-jpeg, png, webp, tiff, gif, heic, avif."""
    if fmt == "jpeg":
        return image.jpegsave_buffer(Q=options.pop("Q", 95), **options)
    if fmt == "progressive-jpeg":
        return image.jpegsave_buffer(Q=options.pop("Q", 95), interlace=True, **options)
    if fmt == "png":
        return image.pngsave_buffer(**options)
    if fmt == "webp":
        return image.webpsave_buffer(Q=options.pop("Q", 95), **options)
    if fmt == "tiff":
        return image.tiffsave_buffer(**options)
    if fmt == "gif":
        return image.gifsave_buffer(**options)
    if fmt == "heic":  # libvips' own HEVC encoder is often left out (the bundled one's is): libheif from pillow-heif
        return heic_of(image, quality=options.pop("Q", 90))
    if fmt == "avif":
        return image.heifsave_buffer(Q=options.pop("Q", 90), compression="av1", effort=2, **options)
    raise ValueError(fmt)


COPYRIGHT = "(c) 2026 Jane Photographer, all rights reserved"
ARTIST = "Jane Photographer"


def jpeg_with_rights_and_gps(width: int = 320, height: int = 240) -> bytes:
    """A camera-like JPEG: EXIF Copyright and Artist beside GPS coordinates and camera make, plus an ICC profile."""
    image = photo_like_image(width, height, seed=21).icc_transform("p3")
    for field, value in {
        "exif-ifd0-Copyright": COPYRIGHT,
        "exif-ifd0-Artist": ARTIST,
        "exif-ifd0-Make": "SecretCam",
        "exif-ifd3-GPSLatitudeRef": "N",
        "exif-ifd3-GPSLatitude": "52/1 31/1 12/1",
        "exif-ifd3-GPSLongitudeRef": "E",
        "exif-ifd3-GPSLongitude": "13/1 24/1 36/1",
    }.items():
        image.set_type(pyvips.GValue.gstr_type, field, value)
    return image.jpegsave_buffer(Q=90, keep="all")


IPTC_NOTICE = b"(c) 2026 IPTC Jane"


def jpeg_with_iptc_notice(width: int = 200, height: int = 150) -> bytes:
    """A JPEG whose IPTC record (APP13, Photoshop 3.0 resource 0x0404) holds a copyright notice (dataset 2:116)."""
    record = b"\x1c\x02\x74" + struct.pack(">H", len(IPTC_NOTICE)) + IPTC_NOTICE
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(record)) + record + b"\x00" * (len(record) % 2)
    image = photo_like_image(width, height, seed=22).copy()
    image.set_type(pyvips.GValue.blob_type, "iptc-data", b"Photoshop 3.0\x00" + resource)
    return image.jpegsave_buffer(Q=90, keep="all")


def is_srgb_profile(profile: bytes) -> bool:
    """An RGB display profile whose description names sRGB (libvips' own writes it in UTF-16, as `mluc`)."""
    return profile[16:20] == b"RGB " and (b"sRGB" in profile or "sRGB".encode("utf-16-be") in profile)


def jpeg_sof(data: bytes) -> int:
    """The JPEG's start-of-frame marker (0xC0 baseline, 0xC1 extended, 0xC2 progressive), read segment by segment."""
    at = 2
    while at + 4 <= len(data):
        marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        at += 2 + length
    raise ValueError("no start-of-frame marker")


def png_interlace(data: bytes) -> int:
    """IHDR's interlace method: 0 none, 1 Adam7 (IHDR is always the first chunk: its data starts at byte 16)."""
    assert data[12:16] == b"IHDR"
    return data[16 + 12]


# -- broken files ----------------------------------------------------------------------------------------------------


def _scan_start(jpeg: bytes) -> int:
    """Offset of the first entropy-coded byte: just after the SOS segment."""
    sos = jpeg.index(b"\xff\xda")
    length = int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    return sos + 2 + length


def truncated_jpeg(
    width: int = 640,
    height: int = 480,
    keep: float = 0.5,
    restart_interval: int = 0,
    quality: int = 90,
    progressive: bool = False,
) -> bytes:
    """A photo-like JPEG cut off part-way through its (first) scan's image data and what follows (no EOI); with
    restart markers every `restart_interval` MCUs if given. Quality 90 and up is 4:4:4, below is 4:2:0 (libvips'
    choice)."""
    data = photo_like_image(width, height, seed=3).jpegsave_buffer(
        Q=quality, restart_interval=restart_interval, interlace=progressive
    )
    start = _scan_start(data)
    return data[: start + int((len(data) - start) * keep)]


def cut_scan(jpeg: bytes, drop: int = 0, in_last_interval: bool = False) -> bytes:
    """`jpeg` (one scan) with an end-of-image marker put back after a cut: `drop` bytes of image data before it, or
    `in_last_interval`, a third of the way into the image data after its last restart marker."""
    end = jpeg.rindex(b"\xff\xd9")
    if in_last_interval:  # stuffing makes every 0xFF 0xD0-0xD7 in the image data a restart marker
        last = max(jpeg.rfind(bytes([0xFF, 0xD0 + n]), 0, end) for n in range(8))
        assert last > 0, "no restart markers"
        return jpeg[: last + 2 + (end - last - 2) // 3] + b"\xff\xd9"
    return jpeg[: end - drop] + b"\xff\xd9"


def corrupt_jpeg(width: int = 640, height: int = 480) -> bytes:
    """A photo-like JPEG whose entropy-coded data is damaged a third of the way in: 4 KiB of garbage with a stray
    restart marker inside, the file's length, headers and EOI intact. (Garbage alone often decodes silently into
    wrong pixels: a Huffman decoder cannot tell; the stray marker is what any decoder notices.)"""
    data = bytearray(photo_like(width, height, seed=4, quality=90))
    start = _scan_start(bytes(data))
    mid = start + (len(data) - start) // 3
    rng = np.random.default_rng(5)
    garbage = bytearray(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes().replace(b"\xff", b"\xfe"))
    garbage[2048:2050] = b"\xff\xd3"  # RST3 where no restart interval was declared
    data[mid : mid + len(garbage)] = garbage
    return bytes(data)


def jpeg_with_sof_size(width: int, height: int, source: bytes | None = None) -> bytes:
    """A tiny valid JPEG (`source`, or 16x16 of grey) whose SOF says it is `width`x`height`: a header-only reader
    sees the big size, any decoder runs out of image data. The cheap way to make a 'huge' upload; and, over a
    64x48 photo, the lie that shrink-on-load once decoded into a grey thumbnail."""
    data = bytearray(source or solid_image(16, 16, (90, 90, 90)).jpegsave_buffer(Q=50))
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = data.find(marker)
        if at >= 0:
            break
    else:  # pragma: no cover
        raise AssertionError("no SOF in the JPEG")
    data[at + 5 : at + 7] = height.to_bytes(2, "big")
    data[at + 7 : at + 9] = width.to_bytes(2, "big")
    return bytes(data)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- bombs and liars: tiny files whose headers promise enormous work (tests/test_bombs.py) ----------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG header (8-bit RGB) declaring `width`x`height`, with a few bytes of pixel data."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def zero_png(width: int, height: int, depth: int = 1, colour: int = 0, interlace: bool = False) -> bytes:
    """A complete, valid all-zero PNG (a zip bomb: deflate packs zeros ~1000:1), compressed row by row so building
    it never holds the raw image. depth 1 grey: 20000x20000 is 50 MB raw, ~50 KB on disk; depth 8 RGB (colour 2)
    8000x8000 is 192 MB raw, ~190 KB on disk. `interlace`: Adam7, which decoders hold whole in memory."""
    import struct
    import zlib

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    squeeze = zlib.compressobj(9)
    parts = []
    for x0, y0, dx, dy in passes if interlace else [(0, 0, 1, 1)]:
        pass_w, pass_h = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if not pass_w or not pass_h:
            continue
        row = b"\x00" + bytes(-(-pass_w * channels * depth // 8))
        per_block = max(1, (1 << 20) // len(row))
        full, rest = divmod(pass_h, per_block)
        block = row * per_block
        parts += [squeeze.compress(block) for _ in range(full)]
        parts.append(squeeze.compress(row * rest))
    parts.append(squeeze.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 1 if interlace else 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def gif_with_frames(frames: int, width: int = 1, height: int = 1) -> bytes:
    """A looping GIF of `frames` frames, each `width`x`height` of one colour (a few bytes each: 5000 frames of
    1x1 are about 115 KB). Also, with frames=1 and a large size, a GIF declaring a huge frame in 60 bytes."""
    import struct

    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff")
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    frame = (
        b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, width, height, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW, minimum code size 2: clear, index 0, end
    )
    out += frame * frames + b"\x3b"
    return bytes(out)


def tiff_with_pages(pages: int, width: int = 1, height: int = 1, **options) -> bytes:
    """A multi-page TIFF: `pages` black pages of `width`x`height` (1x1 pages cost ~230 bytes each); `options` go
    to tiffsave (e.g. compression="deflate" for big pages)."""
    strip = pyvips.Image.black(width, height * pages).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    return strip.tiffsave_buffer(**options)


def tiff_declaring_tiles(width: int, height: int, tile: int, bands: int = 3) -> bytes:
    """A TIFF header (uncompressed, tiled) declaring `width`x`height` in `tile`x`tile` tiles, with no pixel data
    behind it: for header checks only."""
    import struct

    tiles = -(-width // tile) * -(-height // tile)
    head = bytearray(b"II*\x00\x08\x00\x00\x00")
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 2 if bands >= 3 else 1),
        (277, 3, 1, bands),
        (284, 3, 1, 1),
        (322, 4, 1, tile),
        (323, 4, 1, tile),
        (324, 4, tiles, 0),  # offsets: patched below
        (325, 4, tiles, 0),
    ]
    ifd_size = 2 + 12 * len(entries) + 4
    arrays_at = 8 + ifd_size
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag in (324, 325):
            value = arrays_at + (0 if tag == 324 else 4 * tiles)
        body += struct.pack("<HHII", tag, kind, count, value)
    body += struct.pack("<I", 0)
    data_at = arrays_at + 8 * tiles
    arrays = struct.pack(f"<{tiles}I", *([data_at] * tiles)) + struct.pack(f"<{tiles}I", *([16] * tiles))
    return bytes(head + body + arrays + bytes(16))


def progressive_jpeg_declaring(width: int, height: int, subsample: bool = True) -> bytes:
    """A tiny progressive JPEG whose SOF2 says `width`x`height`. libjpeg allocates (and zeroes) every DCT
    coefficient of a progressive image before it reads the first scan: ~3 bytes per pixel (4:2:0), 6 (4:4:4)."""
    image = solid_image(16, 16, (90, 90, 90))
    data = bytearray(image.jpegsave_buffer(Q=50, interlace=True, subsample_mode="auto" if subsample else "off"))
    at = data.index(b"\xff\xc2")
    data[at + 5 : at + 7] = height.to_bytes(2, "big")
    data[at + 7 : at + 9] = width.to_bytes(2, "big")
    return bytes(data)


def avif_declaring(width: int, height: int) -> bytes:
    """A tiny AVIF whose `ispe` (image spatial extent) box says `width`x`height`. Raises pyvips.Error where this
    libvips cannot write AVIF."""
    import struct

    data = bytearray(solid_image(64, 64, (90, 90, 90)).heifsave_buffer(compression="av1", effort=0, Q=30))
    at = data.index(b"ispe")
    data[at + 8 : at + 16] = struct.pack(">II", width, height)
    return bytes(data)


# Files in formats we never open, each named and typed as a JPEG by the tests: only ImageMagick, libvips' untrusted
# loaders or a sniffing loader would read them.
DISGUISED = {
    "bmp": b"BM" + (70).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little") + bytes(56),
    "psd": b"8BPS\x00\x01" + bytes(6) + b"\x00\x03" + (64).to_bytes(4, "big") * 2 + b"\x00\x08\x00\x03" + bytes(64),
    "xcf": b"gimp xcf v011\x00" + bytes(64),
    "ppm": b"P6\n4 4\n255\n" + bytes(48),
    "fits": b"SIMPLE  =                    T" + b" " * 50 + b"END" + b" " * 77,
    "matlab": b"MATLAB 5.0 MAT-file, Platform: GLNXA64" + b" " * 78 + b"\x00\x01IM",
    "vips": b"\x08\xf2\xa6\xb6" + bytes(60),
    "ico": b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00" + bytes(40),
    "jxl": b"\xff\x0a" + bytes(30),
    "jp2": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(20),
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n",
    "svgz": b"\x1f\x8b\x08\x00" + bytes(20),
    "mvg": b"viewbox 0 0 640 480\nfill red\nrectangle 0 0 640 480\n",
    "msl": b'<?xml version="1.0"?><image><read filename="/etc/passwd"/></image>',
}
# Polyglots: a real magic number of a format we accept, then something else; the format's own loader refuses them.
POLYGLOTS = {
    "jpeg-svg": b"\xff\xd8\xff\xe0"
    + b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"><rect width="9" height="9"/></svg>',
    "png-svg": b"\x89PNG\r\n\x1a\n" + b'<svg xmlns="http://www.w3.org/2000/svg"/>' * 4,
    "gif-html": b"GIF89a" + b"<html><script>alert(1)</script></html>",
    "tiff-pdf": b"II*\x00" + b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
}


def webp_with_frames(frames: int, width: int = 2, height: int = 2) -> bytes:
    """An animated lossless WebP of `frames` frames, each a different solid colour (the encoder merges identical
    frames); 1500 frames of 2x2 are about 75 KB."""
    array = np.zeros((height * frames, width, 3), np.uint8)
    for i in range(frames):
        array[i * height : (i + 1) * height, :, 0] = i % 256
        array[i * height : (i + 1) * height, :, 1] = (i // 256) % 256
    strip = from_array(array)
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    return strip.webpsave_buffer(lossless=True)


def slow_avif_source() -> bytes:
    """A 1.2 MB 5000x5000 PNG of fine periodic stripes whose 4096 px AVIF takes seconds to encode (about 9 s on a
    2-core CI machine; smooth gradients took only 1.4 s there, too close to the timeouts the tests set)."""
    n = 5000
    xy = pyvips.Image.xyz(n, n)
    img = (
        ((xy[0] % 7) * 36)
        .cast("uchar")
        .bandjoin([((xy[1] % 5) * 50).cast("uchar"), ((xy[0] + xy[1]) % 11 * 23).cast("uchar")])
    )
    return img.copy(interpretation="srgb").pngsave_buffer(compression=6)


# -- payloads for service tests ----------------------------------------------------------------------------------------


def noise_image(width: int, height: int, bands: int = 3) -> pyvips.Image:
    """An sRGB image with real entropy (so a JPEG of it has a long, meaningful scan)."""
    planes = [
        pyvips.Image.gaussnoise(width, height, mean=128, sigma=48, seed=i + 1).cast("uchar") for i in range(bands)
    ]
    image = planes[0].bandjoin(planes[1:]) if bands > 1 else planes[0]
    return image.copy(interpretation="srgb" if bands >= 3 else "b-w")


def make_jpeg(width: int = 640, height: int = 480, quality: int = 85) -> bytes:
    return noise_image(width, height).jpegsave_buffer(Q=quality)


def make_png(width: int = 64, height: int = 48, alpha: bool = False) -> bytes:
    return noise_image(width, height, 4 if alpha else 3).pngsave_buffer()


# -- crops -----------------------------------------------------------------------------------------------------------


def marker_at(width: int, height: int, fx: float, fy: float, side: int, rgb=(220, 30, 30)) -> pyvips.Image:
    """A slate image with a `side`-px square of `rgb` centred at (`fx`, `fy`) (fractions of the width and height).
    Not mid-grey: a flat mid-grey last MCU is what a decoder fills a cut JPEG with (DALI hands those to vips)."""
    array = np.full((height, width, 3), (90, 110, 130), np.uint8)
    x, y = round(fx * width - side / 2), round(fy * height - side / 2)
    array[max(y, 0) : y + side, max(x, 0) : x + side] = rgb
    return from_array(array)


def drawn_face(size: int) -> np.ndarray:
    """A `size`-px face drawn as an RGB array (skin oval, brows, dark eyes, nose shadow, mouth, softened): OpenCV's
    frontal-face Haar cascade finds it, from about 24 px up."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    face = np.zeros((size, size, 3), np.float32)
    face[:] = (120, 90, 60)

    def paint(cx: float, cy: float, rx: float, ry: float, rgb: tuple[int, int, int]) -> None:
        face[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = rgb

    paint(0.5, 0.5, 0.36, 0.46, (225, 180, 150))  # skin
    for cx in (0.35, 0.65):
        paint(cx, 0.30, 0.10, 0.025, (60, 50, 40))  # brow
        paint(cx, 0.40, 0.07, 0.04, (30, 30, 30))  # eye
    paint(0.5, 0.55, 0.04, 0.10, (190, 140, 110))  # nose shadow
    paint(0.5, 0.72, 0.14, 0.035, (140, 60, 60))  # mouth
    return np.asarray(from_array(face.astype(np.uint8)).gaussblur(size / 60).numpy(), np.uint8)


def face_at(width: int, height: int, left: int, top: int, size: int) -> pyvips.Image:
    """A plain grey-blue canvas with one `drawn_face` of `size` px at (`left`, `top`)."""
    array = np.full((height, width, 3), (170, 180, 190), np.uint8)
    array[top : top + size, left : left + size] = drawn_face(size)
    return from_array(array)


def heic_of(image: pyvips.Image, quality: int = 90) -> bytes:
    """`image` (8-bit RGB) as a HEIC as phones write it (HEVC in a HEIF container, `ftypheic`): libheif with x265,
    from the pillow-heif wheel (a test dependency; the bundled libvips has no HEVC encoder)."""
    import io

    import pillow_heif

    out = io.BytesIO()
    pillow_heif.from_bytes("RGB", (image.width, image.height), image.numpy().tobytes()).save(out, quality=quality)
    return out.getvalue()


def hevc_heic(width: int = 96, height: int = 64) -> bytes:
    """A phone-like HEIC, left half red, right half blue."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2] = (200, 30, 30)
    array[:, width // 2 :] = (30, 30, 200)
    return heic_of(from_array(array))


def decoded_corner(data: bytes) -> np.ndarray:
    """The bottom-right corner (at most `damage.MAX_MCU` square) of a JPEG as libjpeg-turbo decodes it, damage and
    all, RGB: what DALI's checks after decoding are handed."""
    from gpu_worker.backends.damage import MAX_MCU

    decoded = pyvips.Image.new_from_buffer(data, "", fail_on="none")
    if decoded.bands == 1:
        decoded = decoded.bandjoin([decoded, decoded])
    w, h = min(MAX_MCU, decoded.width), min(MAX_MCU, decoded.height)
    return decoded.crop(decoded.width - w, decoded.height - h, w, h).numpy()
