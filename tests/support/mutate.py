"""Seeded, format-aware mutations of valid images (for tests/test_fuzz.py).

Why a seeded random mutator and not `hypothesis`: every example here is an HTTP upload that then goes through Redis
to a worker process, so examples are slow (tens of milliseconds) and are best run many at a time; hypothesis runs
examples one after another, and its shrinking would replay hundreds of such round trips for each failure. What we
need from it (reproducible inputs, a seed to report) a `random.Random` per case gives directly: case `i` of base
seed `s` is always the same bytes, on any machine, whatever ran before it, so a failure is replayed from two
numbers (`THUMBIFY_FUZZ_SEED=s THUMBIFY_FUZZ_ONLY=i`).

Mutations are aimed where decoders break: besides blind ones (bit flips, byte runs, insertions, deletions,
duplications, truncations), each format's structure is parsed and its fields corrupted with values that matter
(0, 1, maxima, off-by-one lengths, the file's size): JPEG segment lengths, SOF dimensions and sampling factors,
Huffman and quantisation tables, markers; PNG chunk lengths and IHDR fields (with the CRC fixed so the decoder
reads on); GIF screen and frame sizes, colour tables and LZW code sizes; WebP RIFF and chunk sizes, VP8/VP8L/VP8X
dimensions; TIFF IFD entries (types, counts, values, offsets) and the IFD chain.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from support import images

INTERESTING_8 = [0, 1, 2, 7, 8, 15, 16, 0x7F, 0x80, 0xFE, 0xFF]
INTERESTING_16 = [0, 1, 2, 8, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 16383, 16384, 65500]
INTERESTING_32 = [0, 1, 2, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]


@dataclass
class Case:
    index: int
    seed: str  # the case's own random seed: "<base seed>:<index>"
    source: str  # which seed image it mutates
    format: str
    data: bytes
    ops: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"case {self.index} (seed {self.seed!r}) of {self.source}: {'; '.join(self.ops) or 'unchanged'}"


# -- the seed images: small, valid, one per interesting variant ------------------------------------------------


def seed_images() -> dict[str, tuple[str, bytes]]:
    """name -> (format, bytes). Small (about 64x48) so each decode is quick and mutations often land in headers."""
    photo = images.photo_like_image(64, 48, seed=1)
    rgba = images.rgba_image(48, 32)
    out: dict[str, tuple[str, bytes]] = {
        "jpeg": ("jpeg", photo.jpegsave_buffer(Q=80)),
        "jpeg-progressive": ("jpeg", photo.jpegsave_buffer(Q=80, interlace=True)),
        "jpeg-444-restart": ("jpeg", photo.jpegsave_buffer(Q=90, subsample_mode="off", restart_interval=2)),
        "jpeg-oriented": ("jpeg", images.oriented_jpeg(6, 64, 32)),
        "jpeg-cmyk": ("jpeg", images.cmyk_jpeg_without_profile(patch=16)),
        "jpeg-grey": ("jpeg", images.grey_jpeg([0, 128, 255], patch=16)),
        "png": ("png", photo.pngsave_buffer()),
        "png-rgba-interlaced": ("png", rgba.pngsave_buffer(interlace=True)),
        "png-16": ("png", images.png16([(10, 20, 30), (200, 100, 50)], patch=16)),
        "png-palette": ("png", photo.pngsave_buffer(palette=True)),
        "png-grey-1bit": ("png", images.zero_png(37, 19, depth=1)),
        "webp-lossy": ("webp", photo.webpsave_buffer(Q=70)),
        "webp-lossless": ("webp", rgba.webpsave_buffer(lossless=True)),
        "webp-animated": ("webp", images.animated("webp", width=24, height=16)),
        "gif": ("gif", photo.gifsave_buffer()),
        "gif-animated": ("gif", images.animated("gif", width=24, height=16)),
        "tiff": ("tiff", photo.tiffsave_buffer()),
        "tiff-deflate-tiled": (
            "tiff",
            photo.tiffsave_buffer(compression="deflate", tile=True, tile_width=16, tile_height=16),
        ),
        "tiff-jpeg": ("tiff", photo.tiffsave_buffer(compression="jpeg", Q=80)),
        "tiff-pages": ("tiff", images.tiff_with_pages(3, 16, 8)),
    }
    try:
        out["avif"] = ("heif", photo.heifsave_buffer(compression="av1", effort=0, Q=50))
    except Exception:  # no AVIF encoder in this libvips
        pass
    return out


# -- blind mutations ------------------------------------------------------------------------------------------


def _position(rng: random.Random, data: bytearray) -> int:
    """Anywhere, but half the time in the first 512 bytes, where the headers are."""
    if rng.random() < 0.5:
        return rng.randrange(min(len(data), 512))
    return rng.randrange(len(data))


def bit_flips(data: bytearray, rng: random.Random) -> str:
    at = _position(rng, data)
    flips = rng.choice([1, 1, 2, 4, 8])
    for _ in range(flips):
        data[at] ^= 1 << rng.randrange(8)
    return f"flip {flips} bit(s) at {at}"


def interesting_byte(data: bytearray, rng: random.Random) -> str:
    at = _position(rng, data)
    data[at] = rng.choice(INTERESTING_8)
    return f"byte {at} = {data[at]:#x}"


def byte_run(data: bytearray, rng: random.Random) -> str:
    at = _position(rng, data)
    length = rng.choice([1, 2, 4, 16, 64, 256])
    fill = rng.choice(["zero", "ff", "random"])
    run = bytes(length) if fill == "zero" else b"\xff" * length if fill == "ff" else rng.randbytes(length)
    data[at : at + length] = run
    return f"overwrite {length} {fill} bytes at {at}"


def insert_bytes(data: bytearray, rng: random.Random) -> str:
    at = _position(rng, data)
    length = rng.choice([1, 3, 16, 255, 4096])
    data[at:at] = rng.randbytes(length)
    return f"insert {length} random bytes at {at}"


def delete_bytes(data: bytearray, rng: random.Random) -> str:
    at = _position(rng, data)
    length = rng.choice([1, 2, 4, 16, 64, 512])
    del data[at : at + length]
    return f"delete {length} bytes at {at}"


def duplicate_range(data: bytearray, rng: random.Random) -> str:
    start = _position(rng, data)
    length = rng.choice([4, 16, 64, 512, 4096])
    chunk = bytes(data[start : start + length])
    at = rng.randrange(len(data) + 1)
    data[at:at] = chunk * rng.choice([1, 2, 8])
    return f"duplicate {len(chunk)} bytes from {start} at {at}"


def truncate(data: bytearray, rng: random.Random) -> str:
    keep = rng.choice([rng.randrange(8, 128), rng.randrange(len(data)), len(data) - rng.randrange(1, 16)])
    keep = max(8, min(keep, len(data) - 1))
    del data[keep:]
    return f"truncate to {keep} bytes"


def append_junk(data: bytearray, rng: random.Random) -> str:
    length = rng.choice([1, 16, 1024])
    data += rng.randbytes(length)
    return f"append {length} random bytes"


BLIND: list[Callable[[bytearray, random.Random], str]] = [
    bit_flips,
    interesting_byte,
    byte_run,
    insert_bytes,
    delete_bytes,
    duplicate_range,
    truncate,
    append_junk,
]


def _value(rng: random.Random, bits: int, current: int, size: int) -> int:
    table = {8: INTERESTING_8, 16: INTERESTING_16, 32: INTERESTING_32}[bits]
    mask = (1 << bits) - 1
    choice = rng.random()
    if choice < 0.5:
        return rng.choice(table)
    if choice < 0.75:
        return (current + rng.choice([-1, 1, -2, 2, 16, -16])) & mask
    if choice < 0.85:
        return min(size + rng.choice([-1, 0, 1]), mask) & mask
    return rng.getrandbits(bits)


# -- JPEG --------------------------------------------------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the 0xFF, marker, length field) for each segment up to the first SOS."""
    out, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0x01, *range(0xD0, 0xD8)):
            pos += 2
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        out.append((pos, marker, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def jpeg_structure(data: bytearray, rng: random.Random) -> str:
    segments = _jpeg_segments(bytes(data))
    if not segments:
        return bit_flips(data, rng)
    sofs = [s for s in segments if 0xC0 <= s[1] <= 0xCF and s[1] not in (0xC4, 0xC8, 0xCC)]
    what = rng.choice(["length", "sof-size", "sof-sampling", "sof-components", "table", "marker", "drop", "sos"])
    pos, marker, length = rng.choice(segments)
    if what == "sof-size" and sofs:
        pos = sofs[0][0]
        field_at = pos + 5 + 2 * rng.randrange(2)  # height, then width
        value = _value(rng, 16, struct.unpack_from(">H", data, field_at)[0], len(data))
        struct.pack_into(">H", data, field_at, value)
        return f"SOF {'height' if field_at == pos + 5 else 'width'} = {value}"
    if what == "sof-sampling" and sofs:
        pos = sofs[0][0]
        count = data[pos + 9]
        at = pos + 11 + 3 * rng.randrange(max(1, count))
        data[at] = rng.choice([0x00, 0x11, 0x12, 0x21, 0x22, 0x44, 0x41, 0x14, 0xFF, rng.getrandbits(8)])
        return f"SOF sampling factor at {at} = {data[at]:#x}"
    if what == "sof-components" and sofs:
        pos = sofs[0][0]
        data[pos + 9] = rng.choice([0, 1, 2, 4, 5, 255])
        return f"SOF component count = {data[pos + 9]}"
    if what == "table":
        tables = [s for s in segments if s[1] in (0xC4, 0xDB, 0xDD)]
        if tables:
            pos, marker, length = rng.choice(tables)
            at = pos + 4 + rng.randrange(max(1, length - 2))
            data[at] = rng.choice(INTERESTING_8 + [rng.getrandbits(8)])
            return f"table {marker:#x} byte {at} = {data[at]:#x}"
    if what == "marker":
        data[pos + 1] = rng.choice([0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCF, 0xD8, 0xD9, 0xDA, 0xDD, 0xE1, 0xFF, 0x00])
        return f"marker at {pos} = {data[pos + 1]:#x}"
    if what == "drop" and marker != 0xDA:
        del data[pos : pos + 2 + length]
        return f"drop segment {marker:#x} at {pos}"
    if what == "sos":
        sos = [s for s in segments if s[1] == 0xDA]
        if sos:
            pos = sos[0][0]
            at = pos + 4 + rng.randrange(max(1, sos[0][2] - 2))
            data[at] = rng.choice(INTERESTING_8 + [rng.getrandbits(8)])
            return f"SOS byte {at} = {data[at]:#x}"
    value = _value(rng, 16, length, len(data))
    struct.pack_into(">H", data, pos + 2, value)
    return f"segment {marker:#x} at {pos}: length {length} -> {value}"


# -- PNG ---------------------------------------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    out, pos = [], 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        out.append((pos, kind, length))
        if kind == b"IEND" or length > len(data):
            break
        pos += 12 + length
    return out


def _fix_crc(data: bytearray, pos: int, length: int) -> None:
    end = pos + 8 + length
    if end + 4 <= len(data):
        struct.pack_into(">I", data, end, zlib.crc32(bytes(data[pos + 4 : end])) & 0xFFFFFFFF)


def png_structure(data: bytearray, rng: random.Random) -> str:
    chunks = _png_chunks(bytes(data))
    if not chunks:
        return bit_flips(data, rng)
    what = rng.choice(["ihdr", "ihdr", "length", "chunk-data", "drop", "duplicate", "swap", "idat-data"])
    fix = rng.random() < 0.8
    if what == "ihdr" and chunks[0][1] == b"IHDR":
        pos = chunks[0][0]
        field_name, offset, bits = rng.choice(
            [
                ("width", 8, 32),
                ("height", 12, 32),
                ("depth", 16, 8),
                ("colour", 17, 8),
                ("interlace", 20, 8),
                ("compression", 18, 8),
                ("filter", 19, 8),
            ]
        )
        at = pos + offset
        if bits == 32:
            value = _value(rng, 32, struct.unpack_from(">I", data, at)[0], len(data))
            struct.pack_into(">I", data, at, value)
        else:
            value = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 255])
            data[at] = value
        if fix:
            _fix_crc(data, pos, 13)
        return f"IHDR {field_name} = {value}{' (CRC fixed)' if fix else ''}"
    pos, kind, length = rng.choice(chunks)
    if what == "length":
        value = _value(rng, 32, length, len(data))
        struct.pack_into(">I", data, pos, value)
        return f"{kind.decode('latin-1')} at {pos}: length {length} -> {value}"
    if what in ("chunk-data", "idat-data") and length:
        if what == "idat-data":
            idats = [c for c in chunks if c[1] == b"IDAT"]
            if idats:
                pos, kind, length = rng.choice(idats)
        at = pos + 8 + rng.randrange(max(1, length))
        data[at] = rng.getrandbits(8)
        if fix:
            _fix_crc(data, pos, length)
        return f"{kind.decode('latin-1')} byte {at} = {data[at]:#x}{' (CRC fixed)' if fix else ''}"
    if what == "drop" and kind != b"IEND":
        del data[pos : pos + 12 + length]
        return f"drop {kind.decode('latin-1')} at {pos}"
    if what == "duplicate":
        chunk = bytes(data[pos : pos + 12 + length])
        at = rng.choice(chunks)[0]
        data[at:at] = chunk * rng.choice([1, 2, 50])
        return f"duplicate {kind.decode('latin-1')} before {at}"
    if what == "swap" and len(chunks) > 2:
        (a, _, la), (b, _, lb) = sorted(rng.sample(chunks, 2))
        first, second = bytes(data[a : a + 12 + la]), bytes(data[b : b + 12 + lb])
        data[b : b + 12 + lb] = first
        data[a : a + 12 + la] = second
        return f"swap chunks at {a} and {b}"
    return bit_flips(data, rng)


# -- GIF ---------------------------------------------------------------------------------------------------------------


def _gif_descriptors(data: bytes) -> list[int]:
    return [i for i in range(13, len(data) - 10) if data[i] == 0x2C and data[i + 10] <= 8][:16]


def gif_structure(data: bytearray, rng: random.Random) -> str:
    what = rng.choice(["screen", "packed", "frame-size", "frame-pos", "lzw", "sub-block", "trailer"])
    if what == "screen":
        at = 6 + 2 * rng.randrange(2)
        value = _value(rng, 16, struct.unpack_from("<H", data, at)[0], len(data))
        struct.pack_into("<H", data, at, value)
        return f"screen {'width' if at == 6 else 'height'} = {value}"
    if what == "packed":
        data[10] = rng.getrandbits(8)
        return f"screen flags = {data[10]:#x}"
    if what == "trailer":
        data[-1] = rng.choice([0x00, 0x21, 0x2C, 0xFF])
        return f"trailer = {data[-1]:#x}"
    descriptors = _gif_descriptors(bytes(data))
    if not descriptors:
        return bit_flips(data, rng)
    pos = rng.choice(descriptors)
    if what in ("frame-size", "frame-pos"):
        at = pos + (5 if what == "frame-size" else 1) + 2 * rng.randrange(2)
        value = _value(rng, 16, struct.unpack_from("<H", data, at)[0], len(data))
        struct.pack_into("<H", data, at, value)
        return f"frame at {pos}: {what} field {at} = {value}"
    if what == "lzw":
        packed = data[pos + 9]
        at = pos + 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0)
        if at < len(data):
            data[at] = rng.choice([0, 1, 2, 8, 11, 12, 13, 255])
            return f"frame at {pos}: LZW minimum code size = {data[at]}"
    at = min(len(data) - 1, pos + 11)
    data[at] = rng.getrandbits(8)
    return f"frame at {pos}: sub-block byte {at} = {data[at]:#x}"


# -- WebP --------------------------------------------------------------------------------------------------------------


def _riff_chunks(data: bytes, start: int = 12, stop: int | None = None, nested: bool = False):
    """(offset, fourcc, size) of each chunk, with the chunks inside animation frames (ANMF) too."""
    stop = len(data) if stop is None else min(stop, len(data))
    out, pos = [], start
    while pos + 8 <= stop and len(out) < 64:
        kind, length = struct.unpack_from("<4sI", data, pos)
        out.append((pos, kind, length))
        if kind == b"ANMF" and not nested:  # 16 bytes of frame header, then the frame's own chunks
            out += _riff_chunks(data, pos + 8 + 16, pos + 8 + length, nested=True)
        pos += 8 + length + (length & 1)
    return out


def webp_structure(data: bytearray, rng: random.Random) -> str:
    what = rng.choice(["riff-size", "chunk-size", "dimensions", "dimensions", "flags"])
    if what == "riff-size":
        value = _value(rng, 32, struct.unpack_from("<I", data, 4)[0], len(data))
        struct.pack_into("<I", data, 4, value)
        return f"RIFF size = {value}"
    chunks = _riff_chunks(bytes(data))
    if not chunks:
        return bit_flips(data, rng)
    pos, kind, length = rng.choice(chunks)
    if what == "chunk-size":
        value = _value(rng, 32, length, len(data))
        struct.pack_into("<I", data, pos + 4, value)
        return f"{kind.decode('latin-1')} at {pos}: size {length} -> {value}"
    body = pos + 8
    if what == "dimensions":
        if kind == b"VP8 " and body + 10 <= len(data):  # key frame: 3-byte tag, start code, 14-bit w/h + scale
            at = body + 6 + 2 * rng.randrange(2)
            value = _value(rng, 16, struct.unpack_from("<H", data, at)[0], len(data))
            struct.pack_into("<H", data, at, value)
            return f"VP8 {'width' if at == body + 6 else 'height'} field = {value:#x}"
        if kind == b"VP8L" and body + 5 <= len(data):  # signature 0x2f, then 14-bit w-1, 14-bit h-1, ...
            bits = struct.unpack_from("<I", data, body + 1)[0] ^ (1 << rng.randrange(32))
            struct.pack_into("<I", data, body + 1, bits)
            return f"VP8L header bits = {bits:#x}"
        if kind in (b"VP8X", b"ANMF") and body + 10 <= len(data):  # 24-bit canvas or frame width-1, height-1
            at = body + (4 if kind == b"VP8X" else 6) + 3 * rng.randrange(2)
            value = rng.choice([0, 1, 0x3FFF, 0x4000, 0xFFFFFF, rng.getrandbits(24)])
            data[at : at + 3] = value.to_bytes(3, "little")
            return f"{kind.decode('latin-1')} dimension at {at} = {value}"
    if what == "flags" and body < len(data):
        data[body] = rng.getrandbits(8)
        return f"{kind.decode('latin-1')} first byte = {data[body]:#x}"
    return bit_flips(data, rng)


# -- TIFF --------------------------------------------------------------------------------------------------------------


def _tiff_entries(data: bytes) -> tuple[str, list[int], list[int]]:
    """(byte order, offsets of IFD entries, offsets of IFDs) along the IFD chain."""
    end = "<" if data[:2] == b"II" else ">"
    entries, ifds, offset = [], [], struct.unpack_from(end + "I", data, 4)[0]
    while offset and offset + 2 <= len(data) and offset not in ifds and len(ifds) < 8:
        ifds.append(offset)
        count = struct.unpack_from(end + "H", data, offset)[0]
        entries += [offset + 2 + 12 * i for i in range(count) if offset + 14 + 12 * i <= len(data)]
        next_at = offset + 2 + 12 * count
        if next_at + 4 > len(data):
            break
        offset = struct.unpack_from(end + "I", data, next_at)[0]
    return end, entries, ifds


def tiff_structure(data: bytearray, rng: random.Random) -> str:
    end, entries, ifds = _tiff_entries(bytes(data))
    what = rng.choice(["value", "value", "value", "type", "count", "ifd-count", "next-ifd", "first-ifd"])
    if what == "first-ifd" or not entries:
        value = _value(rng, 32, struct.unpack_from(end + "I", data, 4)[0], len(data))
        struct.pack_into(end + "I", data, 4, value)
        return f"first IFD offset = {value}"
    if what == "ifd-count":
        at = rng.choice(ifds)
        value = _value(rng, 16, struct.unpack_from(end + "H", data, at)[0], len(data))
        struct.pack_into(end + "H", data, at, value)
        return f"IFD at {at}: entry count = {value}"
    if what == "next-ifd":
        at = rng.choice(ifds)
        count = struct.unpack_from(end + "H", data, at)[0]
        next_at = at + 2 + 12 * count
        if next_at + 4 <= len(data):
            value = rng.choice([0, 4, 8, at, len(data), rng.choice(ifds), rng.getrandbits(32)])
            struct.pack_into(end + "I", data, next_at, value)
            return f"IFD at {at}: next IFD = {value}"
    at = rng.choice(entries)
    tag = struct.unpack_from(end + "H", data, at)[0]
    if what == "type":
        value = rng.choice([0, 1, 2, 3, 4, 5, 7, 11, 12, 13, 16, 17, 255])
        struct.pack_into(end + "H", data, at + 2, value)
        return f"tag {tag}: type = {value}"
    if what == "count":
        value = _value(rng, 32, struct.unpack_from(end + "I", data, at + 4)[0], len(data))
        struct.pack_into(end + "I", data, at + 4, value)
        return f"tag {tag}: count = {value}"
    value = _value(rng, 32, struct.unpack_from(end + "I", data, at + 8)[0], len(data))
    struct.pack_into(end + "I", data, at + 8, value)
    return f"tag {tag}: value/offset = {value}"


STRUCTURED = {
    "jpeg": jpeg_structure,
    "png": png_structure,
    "gif": gif_structure,
    "webp": webp_structure,
    "tiff": tiff_structure,
}


def mutate(data: bytes, fmt: str, rng: random.Random) -> tuple[bytes, list[str]]:
    """One to four mutations, structured ones (in the format's own fields) about half the time."""
    out, ops = bytearray(data), []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        if len(out) < 16:
            break
        structured = STRUCTURED.get(fmt)
        op = structured if structured and rng.random() < 0.5 else rng.choice(BLIND)
        try:
            ops.append(op(out, rng))
        except (struct.error, IndexError, ValueError) as exc:  # a field ran off a file already cut short
            ops.append(f"{op.__name__}: skipped ({type(exc).__name__})")
    return bytes(out), ops


def cases(base_seed: int, count: int, only: set[int] | None = None) -> list[Case]:
    """The `count` cases of `base_seed` (or just those in `only`), each built from its own seeded generator."""
    seeds = seed_images()
    names = sorted(seeds)
    out = []
    for index in range(count):
        if only is not None and index not in only:
            continue
        case_seed = f"{base_seed}:{index}"
        rng = random.Random(case_seed)
        source = names[rng.randrange(len(names))]
        fmt, original = seeds[source]
        data, ops = mutate(original, fmt, rng)
        out.append(Case(index, case_seed, source, fmt, data, ops))
    return out
