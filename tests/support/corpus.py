"""A PngSuite-like corpus written by the tests: valid PNGs of every colour type, bit depth, interlacing, colour chunk
and odd size, each with the 8-bit RGBA a viewer shows for it; and the PngSuite's corruptions of them.

The files are written here chunk by chunk (zlib and struct, no encoder in between), so every field and checksum is
ours to set, and to break. `Png` holds a file as its chunks; `Png.encode()` gives the bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pyvips

from support import images

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Adam7's seven passes: (first column, first row, column step, row step).
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


@dataclass(frozen=True)
class Chunk:
    kind: bytes
    data: bytes
    crc_delta: int = 0  # XORed into the stored CRC: non-zero for a bad checksum
    length_delta: int = 0  # added to the stored length: non-zero for a length that lies

    def encode(self) -> bytes:
        crc = zlib.crc32(self.kind + self.data) ^ self.crc_delta
        return struct.pack(">I", len(self.data) + self.length_delta) + self.kind + self.data + struct.pack(">I", crc)


@dataclass(frozen=True)
class Png:
    chunks: tuple[Chunk, ...]
    signature: bytes = SIGNATURE
    cut: int = 0  # bytes cut off the end

    def encode(self) -> bytes:
        data = self.signature + b"".join(c.encode() for c in self.chunks)
        return data[: len(data) - self.cut]

    def kinds(self) -> list[bytes]:
        return [c.kind for c in self.chunks]

    def changed(self, kind: bytes, **fields) -> Png:
        """This file with the first `kind` chunk's fields changed."""
        at = self.kinds().index(kind)
        chunks = list(self.chunks)
        chunks[at] = replace(chunks[at], **fields)
        return replace(self, chunks=tuple(chunks))

    def without(self, kind: bytes) -> Png:
        return replace(self, chunks=tuple(c for c in self.chunks if c.kind != kind))


@dataclass(frozen=True)
class Case:
    """One valid PNG of the corpus and what a viewer shows for it."""

    png: Png
    rgba: np.ndarray  # H x W x 4, uint8: the displayed colours, alpha 255 where the file has no transparency
    has_alpha: bool
    notes: list[str] = field(default_factory=list)


# -- writing ---------------------------------------------------------------------------------------------------------


def _scanlines(samples: np.ndarray, depth: int) -> bytes:
    """Rows of samples (H x W x C, values below 2**depth) as PNG scanlines: filter type 0, then the samples packed
    most significant bit first, each row padded to a whole byte."""
    rows = samples.reshape(samples.shape[0], -1)
    out = bytearray()
    for row in rows:
        if depth == 16:
            packed = row.astype(">u2").tobytes()
        elif depth == 8:
            packed = row.astype(np.uint8).tobytes()
        else:
            bits = np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - depth :]
            packed = np.packbits(bits.ravel()).tobytes()
        out += b"\x00" + packed
    return bytes(out)


def image_data(samples: np.ndarray, depth: int, interlace: bool) -> bytes:
    """The uncompressed image data: the rows in order, or Adam7's seven reduced images in turn (an empty one, which
    a small image has, contributes nothing)."""
    if not interlace:
        return _scanlines(samples, depth)
    passes = (samples[y0::dy, x0::dx] for x0, y0, dx, dy in ADAM7)
    return b"".join(_scanlines(reduced, depth) for reduced in passes if reduced.size)


def write(
    samples: np.ndarray,
    colour: int,
    depth: int,
    *,
    interlace: bool = False,
    palette: np.ndarray | None = None,
    trns: bytes | None = None,
    colour_chunks: tuple[Chunk, ...] = (),
    idat_parts: int = 1,
) -> Png:
    """A PNG of `samples` (H x W x channels raw sample values; palette indices for colour type 3), with its image
    data split over `idat_parts` IDAT chunks; the colour chunks (gAMA, sRGB, iCCP) come before PLTE and IDAT."""
    h, w = samples.shape[:2]
    ihdr = Chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, int(interlace)))
    chunks = [ihdr, *colour_chunks]
    if palette is not None:
        chunks.append(Chunk(b"PLTE", palette.astype(np.uint8).tobytes()))
    if trns is not None:
        chunks.append(Chunk(b"tRNS", trns))
    compressed = zlib.compress(image_data(samples, depth, interlace), 9)
    step = -(-len(compressed) // idat_parts)
    chunks += [Chunk(b"IDAT", compressed[i : i + step]) for i in range(0, len(compressed), step)]
    chunks.append(Chunk(b"IEND", b""))
    return Png(tuple(chunks))


# -- what it shows -----------------------------------------------------------------------------------------------------


def _to8(values: np.ndarray, depth: int) -> np.ndarray:
    """Samples of `depth` bits as the 8-bit levels they show as."""
    return np.rint(values.astype(np.float64) * 255.0 / (2**depth - 1)).astype(np.uint8)


def displayed(
    samples: np.ndarray, colour: int, depth: int, palette: np.ndarray | None = None, trns: bytes | None = None
) -> np.ndarray:
    """The 8-bit RGBA a viewer shows for these samples."""
    h, w = samples.shape[:2]
    out = np.full((h, w, 4), 255, np.uint8)
    if colour == 3:
        index = samples[..., 0]
        out[..., :3] = palette[index]
        if trns is not None:
            alpha = np.full(256, 255, np.uint8)
            alpha[: len(trns)] = np.frombuffer(trns, np.uint8)
            out[..., 3] = alpha[index]
        return out
    colours = 1 if colour in (0, 4) else 3
    out[..., :3] = _to8(samples[..., :colours], depth)
    if colour in (4, 6):
        out[..., 3] = _to8(samples[..., -1], depth)
    elif trns is not None:  # one colour (grey level or RGB triple, 16 bits each) is fully transparent
        key = np.array(struct.unpack(f">{colours}H", trns))
        out[..., 3] = np.where(np.all(samples[..., :colours] == key, axis=-1), 0, 255)
    return out


# -- the corpus -------------------------------------------------------------------------------------------------------


def _samples(h: int, w: int, channels: int, depth: int, seed: int) -> np.ndarray:
    """Deterministic samples that use the whole range: a gradient plus noise, so rows and columns all differ."""
    rng = np.random.default_rng(seed)
    top = 2**depth - 1
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (xx * 7 + yy * 3)[..., None] + np.arange(channels) * 5
    values = (ramp + rng.integers(0, max(1, top // 4) + 1, (h, w, channels))) % (top + 1)
    return values.astype(np.uint16 if depth == 16 else np.uint8)


def srgb_profile() -> bytes:
    """libvips' built-in sRGB ICC profile."""
    tagged = pyvips.Image.black(1, 1, bands=3).copy(interpretation="srgb").icc_transform("srgb")
    return tagged.get("icc-profile-data")


def colour_chunk(kind: str) -> Chunk:
    """gAMA (1/2.2, as sRGB), sRGB (perceptual), or iCCP (the sRGB profile, deflated): none changes the colours."""
    if kind == "gAMA":
        return Chunk(b"gAMA", struct.pack(">I", 45455))
    if kind == "sRGB":
        return Chunk(b"sRGB", b"\x00")
    if kind == "iCCP":
        return Chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(srgb_profile()))
    raise ValueError(kind)


def case(
    colour: int,
    depth: int,
    size: tuple[int, int] = (32, 32),
    *,
    interlace: bool = False,
    transparency: bool = False,
    colour_chunks: tuple[str, ...] = (),
    seed: int = 0,
    idat_parts: int = 1,
) -> Case:
    """One file: colour type, bit depth and size (w, h); `transparency` adds a tRNS chunk (palette alpha, or a
    colour key that matches the top-left pixel's colour)."""
    w, h = size
    palette = trns = None
    if colour == 3:
        entries = 2**depth
        palette = _samples(1, entries, 3, 8, seed + 1)[0]
        samples = _samples(h, w, 1, depth, seed)
        if transparency:  # alpha falls across the entries; fewer entries than the palette, as the spec allows
            trns = bytes(int(a) for a in np.linspace(0, 255, max(1, entries - 1)).round())
    else:
        samples = _samples(h, w, CHANNELS[colour], depth, seed)
        if transparency and colour in (0, 2):
            trns = struct.pack(f">{CHANNELS[colour]}H", *(int(v) for v in samples[0, 0]))
    png = write(
        samples,
        colour,
        depth,
        interlace=interlace,
        palette=palette,
        trns=trns,
        colour_chunks=tuple(colour_chunk(k) for k in colour_chunks),
        idat_parts=idat_parts,
    )
    has_alpha = colour in (4, 6) or trns is not None
    return Case(png, displayed(samples, colour, depth, palette, trns), has_alpha)


def suite() -> dict[str, Case]:
    """The PngSuite's categories: every colour type at every bit depth it allows, interlaced and not; palettes with
    and without tRNS; colour keys; gAMA, sRGB and iCCP; odd sizes (1x1, 1x33, 33x1, 7x5 ...), Adam7 on sizes where
    some passes are empty; image data split over many IDAT chunks."""
    names = {0: "grey", 2: "rgb", 3: "palette", 4: "grey-alpha", 6: "rgba"}
    out: dict[str, Case] = {}
    for colour, depths in DEPTHS.items():
        for depth in depths:
            for interlace in (False, True):
                name = f"{names[colour]}-{depth}{'-adam7' if interlace else ''}"
                out[name] = case(colour, depth, (33, 29), interlace=interlace, seed=depth + 10 * colour)
    for depth in DEPTHS[3]:
        out[f"palette-{depth}-trns"] = case(3, depth, (31, 17), transparency=True, seed=depth)
    out["grey-8-key"] = case(0, 8, (20, 12), transparency=True, seed=3)
    out["grey-16-key"] = case(0, 16, (20, 12), transparency=True, seed=4)
    out["rgb-8-key"] = case(2, 8, (20, 12), transparency=True, seed=5)
    out["rgb-16-key"] = case(2, 16, (20, 12), transparency=True, seed=6)
    for kind in ("gAMA", "sRGB", "iCCP"):
        out[f"rgb-8-{kind}"] = case(2, 8, (24, 16), colour_chunks=(kind,), seed=7)
    out["palette-8-gAMA-sRGB"] = case(3, 8, (24, 16), colour_chunks=("gAMA", "sRGB"), seed=8)
    for w, h in ((1, 1), (1, 33), (33, 1), (7, 5), (2, 2), (3, 9)):
        for interlace in (False, True):
            out[f"size-{w}x{h}{'-adam7' if interlace else ''}"] = case(2, 8, (w, h), interlace=interlace, seed=w * h)
    out["grey-1-size-1x1"] = case(0, 1, (1, 1), seed=9)
    out["rgba-16-size-7x5-adam7"] = case(6, 16, (7, 5), interlace=True, seed=11)
    out["many-idats"] = case(2, 8, (40, 30), idat_parts=37, seed=12)
    return out


# -- corruptions -------------------------------------------------------------------------------------------------------

# How each corruption breaks the valid file (the PngSuite file it stands for, where there is one).
CORRUPTIONS: dict[str, Callable[[Png], Png]] = {
    "bad-signature": lambda p: replace(p, signature=b"\x89PNG\r\n\x1a\x00"),
    "signature-cr-lf-mangled": lambda p: replace(p, signature=b"\x89PNG\n\r\x1a\n"),  # PngSuite xcrn / xlfn
    "ihdr-bad-crc": lambda p: p.changed(b"IHDR", crc_delta=0x5A),  # PngSuite xhdn0g08
    "idat-bad-crc": lambda p: p.changed(b"IDAT", crc_delta=0x01),  # PngSuite xcsn0g01
    "ancillary-bad-crc": lambda p: p.changed(b"gAMA", crc_delta=0x80),
    "iend-bad-crc": lambda p: p.changed(b"IEND", crc_delta=0x01),
    "idat-length-too-long": lambda p: p.changed(b"IDAT", length_delta=1),
    "idat-length-too-short": lambda p: p.changed(b"IDAT", length_delta=-1),
    "idat-length-huge": lambda p: p.changed(b"IDAT", length_delta=0x7FFF0000),
    "missing-idat": lambda p: p.without(b"IDAT"),  # PngSuite xdtn0g01
    "missing-iend": lambda p: p.without(b"IEND"),
    "truncated-idat": lambda p: replace(p, cut=12 + len(p.chunks[-2].data) // 2),
    "idat-data-damaged": lambda p: p.changed(b"IDAT", data=_damaged(p.chunks[p.kinds().index(b"IDAT")].data)),
}


def _damaged(data: bytes) -> bytes:
    """Deflated data with bytes in its middle changed (its CRC is then written to match: only zlib can tell)."""
    out = bytearray(data)
    mid = len(out) // 2
    out[mid : mid + 8] = bytes(b ^ 0xA5 for b in out[mid : mid + 8])
    return bytes(out)


def corruption_base() -> Png:
    """The valid file every corruption breaks: 8-bit RGB with a gAMA chunk, its image data in one IDAT."""
    return case(2, 8, (48, 32), colour_chunks=("gAMA",), seed=21).png


def corrupted() -> dict[str, bytes]:
    base = corruption_base()
    return {name: make(base).encode() for name, make in CORRUPTIONS.items()}


# -- EXIF orientation ----------------------------------------------------------------------------------------------

UP_LEFT = (220, 30, 30)  # the top-left quadrant of an upright image
UP_RIGHT = (30, 170, 60)  # the top-right quadrant; the bottom half is GREY
GREY = (128, 128, 128)


def up_marked_image(width: int, height: int) -> pyvips.Image:
    """Upright: the top half red (left) and green (right), the bottom half grey. Any rotation or mirror of it, even of
    a square, moves a colour out of its quadrant."""
    array = np.empty((height, width, 3), np.uint8)
    array[:] = GREY
    array[: height // 2, : width // 2] = UP_LEFT
    array[: height // 2, width // 2 :] = UP_RIGHT
    return pyvips.Image.new_from_array(array).copy(interpretation="srgb")


def oriented(orientation: int, width: int, height: int, quality: int = 92) -> bytes:
    """A JPEG that shows as `up_marked_image(width, height)`, its pixels stored as a camera held that way stores
    them, with the EXIF tag that says so."""
    return images.with_orientation(up_marked_image(width, height), orientation).jpegsave_buffer(Q=quality)


def quadrant_colours(array: np.ndarray) -> dict[str, np.ndarray]:
    """The mean colour of the middle of each quadrant (away from the edges a resampler softens)."""
    h, w = array.shape[:2]
    out = {}
    for name, (y, x) in {"tl": (0, 0), "tr": (0, 1), "bl": (1, 0), "br": (1, 1)}.items():
        y0, x0 = y * h // 2 + h // 8, x * w // 2 + w // 8
        block = array[y0 : y0 + max(1, h // 4), x0 : x0 + max(1, w // 4), :3]
        out[name] = block.reshape(-1, 3).mean(axis=0)
    return out


def is_upright(array: np.ndarray, tol: float = 14) -> bool:
    q = quadrant_colours(array)
    want = {"tl": UP_LEFT, "tr": UP_RIGHT, "bl": GREY, "br": GREY}
    return all(np.all(np.abs(q[k] - np.asarray(v)) <= tol) for k, v in want.items())
