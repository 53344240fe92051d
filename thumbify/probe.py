"""What an upload is, judged by its magic bytes and its header alone (no pixel is decoded here).

Every limit is checked before a decoder runs, in this order: frames (a bounded walk of the container, before
libvips even opens it), a PNG's chunk structure and checksums, then libvips' header read (the format's own loader:
never the generic sniffing one), then pixels, the longest side and the memory the decoder would need to hold at once
(from the header's layout).
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import re
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from thumbify.errors import CorruptImage, SideTooLong, TooManyFrames, TooManyPixels, UnsupportedMedia

if TYPE_CHECKING:  # render processes import this module, and never pydantic-settings
    from thumbify.settings import Settings

# libvips reads this when it starts: set before the first `import pyvips` of a process (and inherited by the
# processes it starts), so loaders libvips marks untrusted (ImageMagick, PDF, Matlab, FITS, ...) stay off even
# where `block_untrusted_set` is not called. `_vips()` blocks them explicitly as well.
os.environ.setdefault("VIPS_BLOCK_UNTRUSTED", "1")

# Formats we accept, each with the one libvips loader allowed to open it (never the generic sniffing loader,
# so a file that claims to be a JPEG can never reach the SVG, PDF or ImageMagick loaders).
LOADERS = {
    "jpeg": "jpegload",
    "png": "pngload",
    "webp": "webpload",
    "tiff": "tiffload",
    "gif": "gifload",
    "heif": "heifload",
}
_HEIF_BRANDS = {
    b"heic",
    b"heix",
    b"hevc",
    b"hevx",
    b"heim",
    b"heis",
    b"hevm",
    b"hevs",
    b"mif1",
    b"msf1",
    b"avif",
    b"avis",
}
SNIFF_BYTES = 32
NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP", "tiff": "TIFF", "gif": "GIF", "heif": "HEIF/AVIF"}
_UNITS = {"tiff": "pages", "heif": "images"}  # frames otherwise
# Bytes per pixel a whole-image decode holds (measured with libvips 8.18 on 8000x8000 images: a GIF frame is
# composited in RGBA next to the previous one for disposal; libheif keeps the YCbCr planes and the RGB result).
GIF_BYTES_PER_PIXEL = 8
HEIF_BYTES_PER_PIXEL = 16
# A container walk gives up (and calls the file over the limit) past this many chunks or blocks beyond max_frames:
# real files have a handful besides their frames.
_SPARE_CHUNKS = 64


def sniff(head: bytes) -> str | None:
    """The format named by the first bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp" and (head[8:12] in _HEIF_BRANDS):
        return "heif"
    return None


@dataclass(frozen=True)
class SourceInfo:
    format: str
    width: int  # as displayed, after EXIF orientation
    height: int
    bytes: int
    pages: int = 1
    has_alpha: bool = False
    orientation: int = 1

    def public(self, filename: str) -> dict:
        data = asdict(self)
        data.pop("orientation")
        return {"filename": filename, **data}


def configure_vips(concurrency: int = 0) -> None:
    """Process-wide libvips settings for a long-running server handling untrusted input: untrusted loaders blocked,
    no operation cache (a cached load keeps the file open and its memory held after the upload is gone; memory that
    never returns is the peers' most common complaint), a log message sent from inside pyvips' log handler not
    fatal (`_recursed_logs_not_fatal`), and, where given, a bounded thread pool per image."""
    import pyvips

    if hasattr(pyvips, "block_untrusted_set"):
        pyvips.block_untrusted_set(True)
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    _recursed_logs_not_fatal(pyvips)
    if concurrency:
        pyvips.vips_lib.vips_concurrency_set(concurrency)


_G_LOG_LEVEL_ERROR = 1 << 2


def _recursed_logs_not_fatal(pyvips) -> None:
    """GLib aborts the process on a log message sent while a log handler runs in the same thread (a recursion), and
    pyvips' handler is Python: a garbage collection it sets off (any allocation may) can free the last reference to
    an image of a damaged JPEG (held in a cycle, by an exception's traceback), whose loader warns as it closes
    ("read gave 1 warnings"), and the whole worker aborted mid-decode. GLib's fallback then prints such a message to
    stderr instead. The GLib functions are reached through pyvips' compiled module (ctypes: pyvips declares neither);
    where pyvips runs without one (ABI mode), the process keeps GLib's default."""
    import ctypes

    module = sys.modules.get("_libvips") if getattr(pyvips, "API_mode", False) else None
    if module is None or not getattr(module, "__file__", None):
        return
    glib = ctypes.CDLL(module.__file__)  # symbols resolve as they do for pyvips: to the GLib its libvips uses
    glib.g_log_set_always_fatal.argtypes = [ctypes.c_int]
    glib.g_log_set_fatal_mask.argtypes = [ctypes.c_char_p, ctypes.c_int]
    glib.g_log_set_always_fatal(_G_LOG_LEVEL_ERROR)  # was ERROR | RECURSION; errors stay fatal, as GLib insists
    glib.g_log_set_fatal_mask(b"VIPS", _G_LOG_LEVEL_ERROR)


@functools.cache
def _vips():
    """pyvips, configured once per process (`configure_vips`)."""
    import pyvips

    configure_vips()
    return pyvips


def open_image(source: Path | str | bytes, fmt: str, **options):
    """Open a file (or bytes in memory) with the format's own loader; libvips reads only the header until pixels are
    asked for."""
    if isinstance(source, bytes):
        return getattr(_vips().Image, f"{LOADERS[fmt]}_buffer")(source, **options)
    return getattr(_vips().Image, LOADERS[fmt])(str(source), **options)


def probe_for(source: Path | bytes, settings: Settings) -> SourceInfo:
    """`probe` with every limit taken from the settings."""
    return probe(source, **probe_limits(settings))


def probe_limits(settings: Settings) -> dict[str, int]:
    """`probe`'s limits from the settings, as plain values (what a render process is handed instead of them)."""
    names = ("max_pixels", "max_side", "max_frames", "max_decode_bytes")
    return {name: getattr(settings, name) for name in names}


def _default(name: str) -> int:
    """The settings' default for a limit a caller left out (read here, not at import: see the import above)."""
    from thumbify.settings import Settings

    return Settings.model_fields[name].default


def probe(
    source: Path | bytes,
    max_pixels: int,
    *,
    max_side: int | None = None,
    max_frames: int | None = None,
    max_decode_bytes: int | None = None,
) -> SourceInfo:
    """The upload's format and size from its header (a file, or a small upload held in memory), or the typed error
    that refuses it. Limits left at None take the settings' defaults."""
    limits = _limits(max_pixels, max_side, max_frames, max_decode_bytes)
    with _contents(source) as buf:
        fmt = format_of(bytes(buf[:SNIFF_BYTES]))
        size = len(buf)
        # Before libvips opens it: libvips counts a GIF's frames or a TIFF's pages by reading them all, which
        # for millions of tiny frames costs seconds and hundreds of megabytes.
        frames = count_frames(buf, fmt, limits.max_frames)
        if frames > limits.max_frames:
            raise TooManyFrames(
                f"the {NAMES[fmt]} has more than {limits.max_frames:,} {_UNITS.get(fmt, 'frames')} (or more blocks "
                f"than that many need); the limit is {limits.max_frames:,}",
                limit=limits.max_frames,
            )
        damage = png_damage(buf) if fmt == "png" else None
        if damage:
            raise CorruptImage(f"the PNG is corrupt: {damage}")
        layout = _layout(buf, fmt)
    return _judged(lambda: open_image(source, fmt, access="sequential"), fmt, size, layout, limits)


def probe_header(head: bytes, size: int, open_header: Callable[[str], object], limits: dict[str, int]) -> SourceInfo:
    """A stored object judged from its first bytes (`head`, of its `size`) and libvips' header read through
    `open_header(fmt)` (which may read further): the format, pixels, sides and pages. The walks that need the whole
    file (frame blocks, PNG checksums, a layout past `head`) are left to whoever holds it whole (the worker)."""
    lim = _limits(**limits)
    fmt = format_of(head[:SNIFF_BYTES])
    return _judged(lambda: open_header(fmt), fmt, size, _layout(head, fmt), lim)


@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    max_side: int
    max_frames: int
    max_decode_bytes: int


def _limits(max_pixels: int, max_side=None, max_frames=None, max_decode_bytes=None) -> _Limits:
    return _Limits(
        max_pixels,
        max_side or _default("max_side"),
        max_frames or _default("max_frames"),
        max_decode_bytes or _default("max_decode_bytes"),
    )


def format_of(head: bytes) -> str:
    """The format the magic bytes say; UnsupportedMedia for anything else (or nothing)."""
    if not head:
        raise UnsupportedMedia("the upload is empty")
    fmt = sniff(head)
    if fmt is None:
        raise UnsupportedMedia("not an image we accept: JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF (judged by content)")
    return fmt


def _judged(open_header: Callable[[], object], fmt: str, size: int, layout: _Layout, limits: _Limits) -> SourceInfo:
    """libvips' header read (through `open_header`) judged against the limits."""
    pyvips = _vips()
    try:
        image = open_header()
        width, height = image.width, image.height
        pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
        orientation = image.get("orientation") if image.get_typeof("orientation") else 1
        has_alpha = bool(image.hasalpha())
        bits = image.get("bits-per-sample") if image.get_typeof("bits-per-sample") else 8
    except pyvips.Error as exc:
        raise CorruptImage(f"cannot read the {fmt} header: {vips_message(exc)}") from exc
    max_frames, max_pixels, max_side = limits.max_frames, limits.max_pixels, limits.max_side
    if pages > max_frames:
        raise TooManyFrames(
            f"the {NAMES[fmt]} has {pages:,} {_UNITS.get(fmt, 'frames')}; the limit is {max_frames:,}",
            frames=pages,
            limit=max_frames,
        )
    if width * height > max_pixels:
        raise TooManyPixels(
            f"{width}x{height} is {width * height:,} pixels; the limit is {max_pixels:,}",
            width=width,
            height=height,
        )
    if max(width, height) > max_side:
        raise SideTooLong(
            f"{width}x{height} has a side of {max(width, height):,} pixels; the limit is {max_side:,}",
            width=width,
            height=height,
        )
    need, why = decode_bytes(fmt, width, height, layout, bits)
    if need > limits.max_decode_bytes:
        raise TooManyPixels(
            f"{width}x{height} is too large for a {why}, which must be held in memory to decode: about "
            f"{need / 2**20:,.0f} MiB; the limit is {limits.max_decode_bytes / 2**20:,.0f} MiB",
            width=width,
            height=height,
        )
    if fmt == "heif":
        check_heif_codec(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return SourceInfo(fmt, width, height, size, max(1, int(pages)), has_alpha, int(orientation))


# Whether this libvips' libheif decodes each HEIF codec, learnt from the first upload of it in this process.
# pyvips-binary's has AV1 (AVIF) but no HEVC decoder (libde265, left out for HEVC's patents): a phone's HEIC reads
# its header and then fails to decode, so it is refused at upload rather than failing as a job.
_HEIF_DECODES: dict[str, bool] = {}
_DECODERS = {"hevc": "libde265"}  # the decoder plugin libheif names for a codec it lacks
# The largest first image of a codec whose pixel is decoded to learn it: a phone's HEIC (≤ 48 MP) decodes one grid
# tile for it, but an image without a grid (most AVIFs) decodes whole, and the API must not decode a large one.
CODEC_PROBE_MAX_PIXELS = 50_000_000
NOT_BUILT_IN = re.compile(r"has not been built in: (\w+)")  # libheif's words for a codec it lacks


def check_heif_codec(image) -> None:
    """UnsupportedMedia for a HEIF whose codec this libvips cannot decode; the first image of each codec (of at most
    `CODEC_PROBE_MAX_PIXELS`) tells, by decoding one pixel (a tile, or an AVIF whole, once per process), where
    libheif says the codec was not built in. Any other failure (damage, a header-only read of a stored object)
    decides nothing: the worker's decode says what is wrong."""
    codec = str(image.get("heif-compression")) if image.get_typeof("heif-compression") else None
    if codec is None:
        return
    if codec not in _HEIF_DECODES:
        if image.width * image.height > CODEC_PROBE_MAX_PIXELS:
            return  # decides nothing: a smaller image of the codec will, and the worker refuses this one if need be
        try:
            image.crop(0, 0, 1, 1).avg()
            _HEIF_DECODES[codec] = True
        except _vips().Error as exc:
            if not NOT_BUILT_IN.search(str(exc)):
                return
            _HEIF_DECODES[codec] = False
    if not _HEIF_DECODES[codec]:
        raise heif_refusal(codec)


def heif_refusal(codec: str) -> UnsupportedMedia:
    """The refusal of a HEIF whose codec this libvips cannot decode (at upload, or where a worker meets one)."""
    decoder = _DECODERS.get(codec, f"a {codec} decoder")
    return UnsupportedMedia(
        f"a HEIF/HEIC image compressed with {codec.upper()} cannot be decoded here: this server's libvips "
        f"(libheif) has no {codec.upper()} decoder ({decoder}); send JPEG, PNG, WebP, TIFF, GIF or AVIF",
        compression=codec,
        missing_decoder=decoder,
    )


def vips_message(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text


# -- container walks: bounded, stop at the first thing they do not understand (libvips then judges the file) --------


@contextlib.contextmanager
def _contents(source: Path | bytes) -> Iterator[bytes | mmap.mmap]:
    """The bytes to walk: as given, or the file mapped (an empty file, which mmap refuses, as no bytes)."""
    if isinstance(source, bytes):
        yield source
        return
    with open(source, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            yield b""
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            yield buf


def count_frames(buf, fmt: str, limit: int) -> int:
    """Frames (GIF, animated WebP) or pages (TIFF) in the file, counting no further than `limit + 1`; 1 for the
    formats not walked here (their libvips header gives `n-pages` cheaply)."""
    walk = {"gif": _gif_frames, "tiff": _tiff_pages, "webp": _webp_frames}.get(fmt)
    try:
        return walk(buf, limit) if walk else 1
    except (struct.error, IndexError, ValueError):
        return 1  # a damaged container: libvips' header read says so


def _gif_frames(buf, limit: int) -> int:
    n = len(buf)
    if n < 13:
        return 1
    pos = 13
    if buf[10] & 0x80:  # global colour table
        pos += 3 << ((buf[10] & 7) + 1)
    # Steps (blocks and sub-blocks) the walk may take: encoders write 255-byte sub-blocks, so a real file needs
    # about one step per 255 bytes plus a few per frame; a file of 1-byte sub-blocks is refused, not walked.
    budget = n // 128 + 8 * (limit + 1) + 4096
    frames = 0
    while pos < n and frames <= limit and budget > 0:
        kind = buf[pos]
        if kind == 0x3B:  # trailer
            break
        if kind == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif kind == 0x2C:  # image descriptor, local colour table, LZW minimum code size, then sub-blocks
            if pos + 10 > n:
                break
            packed = buf[pos + 9]
            pos += 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0) + 1
            frames += 1
        else:
            break
        budget -= 1
        while pos < n and budget > 0:  # sub-blocks: a length byte, then that many bytes; 0 ends them
            length = buf[pos]
            pos += 1 + length
            budget -= 1
            if length == 0:
                break
    if budget <= 0:
        return limit + 1
    return max(1, frames)


def _tiff_pages(buf, limit: int) -> int:
    if len(buf) < 8:
        return 1
    end = "<" if buf[:2] == b"II" else ">"
    offset = struct.unpack_from(end + "I", buf, 4)[0]
    pages, seen = 0, set()
    while offset and offset not in seen and offset + 2 <= len(buf) and pages <= limit:
        seen.add(offset)
        pages += 1
        entries = struct.unpack_from(end + "H", buf, offset)[0]
        next_at = offset + 2 + 12 * entries
        if next_at + 4 > len(buf):
            break
        offset = struct.unpack_from(end + "I", buf, next_at)[0]
    return max(1, pages)


def _webp_frames(buf, limit: int) -> int:
    if len(buf) < 12:
        return 1
    end = min(len(buf), 8 + struct.unpack_from("<I", buf, 4)[0])
    pos, frames, chunks = 12, 0, 0
    while pos + 8 <= end and frames <= limit and chunks <= limit + _SPARE_CHUNKS:
        kind = bytes(buf[pos : pos + 4])
        length = struct.unpack_from("<I", buf, pos + 4)[0]
        frames += kind == b"ANMF"
        chunks += 1
        pos += 8 + length + (length & 1)
    if chunks > limit + _SPARE_CHUNKS:
        return limit + 1
    return max(1, frames)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# No encoder writes this many chunks (libpng writes 8 KiB of image data per IDAT: 25,000 for the largest upload);
# a file of millions of empty chunks is refused rather than walked for seconds.
PNG_MAX_CHUNKS = 1_000_000


def png_damage(buf) -> str | None:
    """What is wrong with a PNG's chunks, or None: a length that runs past the end, a type that is not four letters,
    a CRC that does not match (every chunk's, the image data's too: zlib's crc32 reads ~3 GB/s, under 0.1 s for the
    largest upload), IHDR not first, no IDAT, or no IEND. libvips' header read checks none of these, and libpng,
    left to itself, drops an ancillary chunk whose CRC fails and decodes a file cut after its image data."""
    n, pos, idat = len(buf), len(PNG_SIGNATURE), False
    with memoryview(buf) as view:
        for _ in range(PNG_MAX_CHUNKS):
            if pos + 8 > n:
                return "the file ends before its IEND chunk"
            length, kind = struct.unpack_from(">I4s", buf, pos)
            name = kind.decode("latin-1")
            if not kind.isalpha():
                return f"bytes at offset {pos} are not a chunk header (its type would be {name!r})"
            if pos == len(PNG_SIGNATURE) and kind != b"IHDR":
                return f"its first chunk is {name}, not IHDR"
            if length > 0x7FFFFFFF or pos + 12 + length > n:
                return f"its {name} chunk at offset {pos} runs past the end of the file"
            if zlib.crc32(view[pos + 4 : pos + 8 + length]) != struct.unpack_from(">I", buf, pos + 8 + length)[0]:
                return f"its {name} chunk at offset {pos} fails its CRC check"
            if kind == b"IEND":
                return None if idat else "it has no image data (no IDAT chunk)"
            idat = idat or kind == b"IDAT"
            pos += 12 + length
    return f"more than {PNG_MAX_CHUNKS:,} chunks"


# -- what a decoder must hold whole ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The header facts that decide whether a decoder streams or holds the image whole."""

    buffered: bool = False  # progressive / multi-scan JPEG, interlaced PNG, JPEG-compressed TIFF strips
    components: tuple[tuple[int, int], ...] = ()  # JPEG: (h, v) sampling factor per component
    bands: int = 0  # PNG: bands after expansion
    sample_bytes: int = 1
    tile: tuple[int, int] = (0, 0)  # TIFF: a tile, or a strip (width 0 = the image's width)


def _layout(buf, fmt: str) -> _Layout:
    try:
        if fmt == "jpeg":
            return _jpeg_layout(buf)
        if fmt == "png":
            return _png_layout(buf)
        if fmt == "tiff":
            return _tiff_layout(buf)
    except (struct.error, IndexError, ValueError):
        pass  # a damaged header: libvips' header read says so
    return _Layout()


def _jpeg_layout(buf) -> _Layout:
    comps, progressive = (), False
    with contextlib.suppress(JpegDamage):  # damage before the first scan: libvips' header read judges it
        for count, (marker, at, _) in enumerate(jpeg_segments(buf)):
            if count > 4096:
                break
            if marker in JPEG_SOF:
                nf = buf[at + 5]
                comps = tuple((buf[at + 7 + 3 * i] >> 4, buf[at + 7 + 3 * i] & 15) for i in range(nf))
                progressive = marker in (0xC2, 0xC6, 0xCA, 0xCE)
            elif marker == 0xDA:
                # libjpeg holds every coefficient when the scans are progressive or the first one is not interleaved.
                multi = progressive or (bool(comps) and buf[at] < len(comps))
                return _Layout(buffered=multi, components=comps)
    return _Layout()


# -- a JPEG's markers ------------------------------------------------------------------------------------------------

JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
JPEG_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x00, 0x01}  # RSTn, SOI, TEM (and a stuffed zero): no length


class JpegDamage(ValueError):
    """The structure of a JPEG cannot be walked further: the message says where and why."""


def jpeg_segments(buf, scan_end: Callable[[int], int] | None = None) -> Iterator[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment's body after the start-of-image marker, in order, up to the
    end-of-image marker; a standalone marker (RSTn, TEM) yields an empty body. After a start-of-scan segment the walk
    goes on at `scan_end(end)`, where its image data ends (stops there without one). Raises `JpegDamage` where the
    structure breaks: the file ends first, bytes where a marker should be, a segment that runs past the end."""
    n, pos = len(buf), 2
    while True:
        if pos >= n:
            raise JpegDamage("the file ends before its end-of-image marker")
        if buf[pos] != 0xFF:
            raise JpegDamage(f"bytes where a marker should be, at offset {pos}")
        while pos < n and buf[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            raise JpegDamage("the file ends before its end-of-image marker")
        marker = buf[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            return
        if marker in JPEG_STANDALONE:
            yield marker, pos - 2, pos - 2
            continue
        if pos + 2 > n:
            raise JpegDamage("the file ends inside a segment")
        length = int.from_bytes(buf[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            raise JpegDamage(f"segment 0xFF{marker:02X} runs past the end of the file")
        yield marker, pos + 2, pos + length
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded image data follows
            if scan_end is None:
                return
            pos = scan_end(pos)


def _png_layout(buf) -> _Layout:
    width, height, depth, colour, _, _, interlace = struct.unpack_from(">IIBBBBB", buf, 16)
    if interlace != 1:
        return _Layout()
    bands = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour, 4)
    pos = 8
    for _ in range(10_000):  # a tRNS chunk (before IDAT) adds an alpha band
        if pos + 8 > len(buf):
            break
        length, kind = struct.unpack_from(">I4s", buf, pos)
        if kind == b"IDAT":
            break
        if kind == b"tRNS" and colour in (0, 2, 3):
            bands += 1
        pos += 12 + length
    return _Layout(buffered=True, bands=bands, sample_bytes=2 if depth == 16 else 1)


def _tiff_layout(buf) -> _Layout:
    end = "<" if buf[:2] == b"II" else ">"
    offset = struct.unpack_from(end + "I", buf, 4)[0]
    count = struct.unpack_from(end + "H", buf, offset)[0]
    tags: dict[int, int] = {}
    for i in range(min(count, 4096)):
        tag, kind, n, value = struct.unpack_from(end + "HHI4s", buf, offset + 2 + 12 * i)
        if kind == 3:  # SHORT: the first value sits in the entry (several shorts fit; BitsPerSample's first is it)
            tags[tag] = struct.unpack_from(end + "H", value)[0] if n <= 2 else _first_short(buf, end, value)
        elif kind == 4 and n == 1:
            tags[tag] = struct.unpack_from(end + "I", value)[0]
    spp, bits = tags.get(277, 1), tags.get(258, 1)
    sample_bytes = max(1, (bits + 7) // 8)
    if 322 in tags and 323 in tags:  # tiled: libvips reads a row of tiles at a time
        return _Layout(buffered=True, bands=spp, sample_bytes=sample_bytes, tile=(tags[322], tags[323]))
    if tags.get(259) in (6, 7):  # JPEG-compressed strips are decoded a whole strip at a time
        height = tags.get(257, 0)
        return _Layout(
            buffered=True, bands=spp, sample_bytes=sample_bytes, tile=(0, min(tags.get(278, height), height))
        )
    return _Layout()


def _first_short(buf, end: str, value: bytes) -> int:
    at = struct.unpack_from(end + "I", value)[0]
    return struct.unpack_from(end + "H", buf, at)[0]


def decode_bytes(fmt: str, width: int, height: int, layout: _Layout, bits: int = 8) -> tuple[int, str]:
    """About how many bytes the decoder holds at once for this image (0 where it streams), and what kind of image
    makes it do so."""
    if fmt == "jpeg" and layout.buffered and layout.components:
        hmax = max(h for h, _ in layout.components)
        vmax = max(v for _, v in layout.components)
        mcus_x, mcus_y = -(-width // (8 * hmax)), -(-height // (8 * vmax))
        blocks = sum(mcus_x * h * mcus_y * v for h, v in layout.components)
        return blocks * 64 * 2, "progressive JPEG"  # 64 coefficients of 2 bytes per 8x8 block
    if fmt == "png" and layout.buffered:
        return width * height * layout.bands * layout.sample_bytes, "interlaced PNG"
    if fmt == "gif":
        return width * height * GIF_BYTES_PER_PIXEL, "GIF frame"
    if fmt == "heif":
        return width * height * HEIF_BYTES_PER_PIXEL * (2 if bits > 8 else 1), "HEIF/AVIF image"
    if fmt == "tiff" and layout.buffered:
        tile_w, tile_h = layout.tile
        row = (-(-width // tile_w) * tile_w if tile_w else width) * max(1, tile_h)
        # libvips keeps about three rows of tiles (measured: 2.7x on 4096x4096 tiles), one strip
        rows = 3 if tile_w else 1
        return rows * row * layout.bands * layout.sample_bytes, "TIFF with tiles or strips this large"
    return 0, ""
