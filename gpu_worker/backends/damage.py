"""What DALI's decoders would paper over, found before and after they decode.

DALI's decoders (libjpeg-turbo on cpu, nvJPEG on the GPU) fill missing or damaged JPEG data with grey and say so
only on stderr, where libvips fails (`fail_on`). What these checks flag is refused (`base.Refused`), and the strict
vips backend then gives the readable `CorruptImage` (or renders the file, where a check was wrong about a sound one:
a false alarm costs a detour through vips, never a wrong answer):

- before decoding, a walk over the file's structure (`file_damage`), with, for a baseline JPEG, a parse of its scan's
  last bytes (`scan_end`: a scan cut inside an MCU, which the decoders would decode from zero bits): nothing is
  decoded;
- after decoding, the last coding unit (MCU) of a sequential JPEG (`grey_filled`): a scan cut where an MCU ends,
  whatever marker follows the cut, leaves its remaining MCUs without coefficients, which a decoder turns into flat
  mid-grey (luma 128 exactly), the bottom-right MCU among them; where only one MCU is lost, it decodes from the
  zero bits the decoder reads past the end instead, unlike what its codes say (`last_mcu`, from `jpeg_check`). A
  sound photo whose last MCU is that exact flat grey is rare.

Progressive JPEGs are not DALI's (`JpegFrame.progressive`): a cut in a later scan leaves a blurred, not a grey,
image, which nothing short of a strict decode can tell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpu_worker.backends.last_mcu import LastMcu
from gpu_worker.backends.scan_end import ZIGZAG, ScanCoding, huffman_tables, read_end
from thumbify.probe import JPEG_SOF, JPEG_STANDALONE, JpegDamage, jpeg_segments

# The largest MCU a JPEG can have (sampling factors go up to 4): the corner of the decoded image `grey_filled` reads.
MAX_MCU = 32
_HUFFMAN_SEQUENTIAL = frozenset({0xC0, 0xC1})
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_LUMA = np.array([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class JpegFrame:
    """What a JPEG's start-of-frame segment declares."""

    marker: int
    width: int
    height: int
    factors: tuple[tuple[int, int], ...]  # (horizontal, vertical) sampling of each component
    ids: tuple[int, ...] = ()  # each component's id, which a scan names it by
    quant: tuple[int, ...] = ()  # each component's quantisation table

    @classmethod
    def parse(cls, marker: int, sof: bytes) -> JpegFrame:
        count = sof[5] if len(sof) > 5 else 0
        listed = [i for i in range(count) if 8 + 3 * i < len(sof)]
        factors = tuple((sof[7 + 3 * i] >> 4, sof[7 + 3 * i] & 15) for i in listed)
        ids, quant = tuple(sof[6 + 3 * i] for i in listed), tuple(sof[8 + 3 * i] for i in listed)
        return cls(marker, int.from_bytes(sof[3:5], "big"), int.from_bytes(sof[1:3], "big"), factors, ids, quant)

    @property
    def sequential(self) -> bool:
        return self.marker in _HUFFMAN_SEQUENTIAL

    @property
    def progressive(self) -> bool:
        return self.marker in _PROGRESSIVE

    def mcu(self) -> tuple[int, int]:
        """An MCU's (width, height) in pixels: one 8x8 block where the scan is not interleaved (one component)."""
        if len(self.factors) <= 1:
            return 8, 8
        return 8 * (max(h for h, _ in self.factors) or 1), 8 * (max(v for _, v in self.factors) or 1)

    def coding_units(self) -> tuple[int, int]:
        """(MCUs, 8x8 blocks) of an image coded in one scan, as the decoder counts them; (0, 0) where the height is
        left to a DNL marker (nothing to check)."""
        if not self.factors or not self.width or not self.height:
            return 0, 0
        mcu_w, mcu_h = self.mcu()
        mcus = math.ceil(self.width / mcu_w) * math.ceil(self.height / mcu_h)
        per_mcu = 1 if len(self.factors) == 1 else sum(h * v for h, v in self.factors)
        return mcus, mcus * per_mcu

    def last_mcu(self) -> tuple[int, int]:
        """(rows, columns) of the bottom-right MCU that lie inside the image."""
        mcu_w, mcu_h = self.mcu()
        # What is left of each side after its whole MCUs but the last (a multiple of the MCU leaves a whole one).
        rows = self.height - (math.ceil(self.height / mcu_h) - 1) * mcu_h
        columns = self.width - (math.ceil(self.width / mcu_w) - 1) * mcu_w
        return rows, columns


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The frame a JPEG declares (a walk over its header segments, up to the first scan), or None if it has none."""
    try:
        for marker, at, end in jpeg_segments(data):
            if marker in JPEG_SOF:
                return JpegFrame.parse(marker, data[at:end])
    except JpegDamage:
        pass
    return None


def grey_filled(corner: np.ndarray, frame: JpegFrame) -> bool:
    """Whether the decoded image's bottom-right corner (`corner`: RGB, at most `MAX_MCU` square, cut from the
    stored, not yet upright, pixels) shows the decoder's fill for a scan that ended early: the part of the last MCU
    inside the image flat at luma 128 (chroma may blend in from a neighbour; luma cannot)."""
    rows, cols = frame.last_mcu()
    if corner.ndim != 3 or corner.shape[0] < rows or corner.shape[1] < cols:
        return False
    luma = corner[-rows:, -cols:, :3].astype(np.float64) @ _LUMA
    return bool(np.all(np.abs(luma - 128.0) <= 1.0))


def file_check(fmt: str, data: bytes) -> tuple[str | None, LastMcu | None]:
    """What is wrong with the structure of this file (None: nothing found), the damage DALI's decoders would paper
    over; and for a baseline JPEG, its last MCU as its codes decode, for `LastMcu.lost` after decoding."""
    if fmt == "jpeg":
        return jpeg_check(data)
    if fmt == "png" and data.rfind(b"IEND", max(0, len(data) - 1024)) < 0:
        return "the PNG ends before its IEND chunk", None
    if fmt == "webp" and len(data) < int.from_bytes(data[4:8], "little") + 8:
        return "the WebP is shorter than its RIFF header says", None
    return None, None


def jpeg_damage(data: bytes) -> str | None:
    """`jpeg_check`'s finding alone."""
    return jpeg_check(data)[0]


def jpeg_check(data: bytes) -> tuple[str | None, LastMcu | None]:
    """A cheap walk over a JPEG's markers (nothing is decoded) for the damage libvips refuses and DALI's decoders
    fill with grey: a file that ends before its end-of-image marker, a segment that runs past the end, a marker that
    may not stand where it does (a restart marker where no restart interval was declared, or out of sequence), and,
    for a baseline image coded in one scan, image data too short to hold the blocks its header declares (every
    8x8 block takes at least 2 bits: a DC code and an end-of-block code) or with fewer restart markers than its
    restart interval needs (an encoder writes one between every two intervals: a scan cut short, even with its
    end-of-image marker put back, has lost some) or whose last code does not end an MCU (`scan_end`: a cut inside
    the last MCU, which a decoder would decode from zero bits). With it, for a sound baseline YCbCr or grey JPEG,
    its last MCU as the codes decode (`last_mcu`), where the parse of the last bytes tells which MCU is last."""
    if data[:2] != b"\xff\xd8":
        return "it does not start with a JPEG start-of-image marker", None
    markers = _Markers(data)
    restart = 0
    frame: JpegFrame | None = None
    tables: dict[tuple[int, int], np.ndarray | None] = {}
    quant: dict[int, np.ndarray] = {}
    jfif, transform = False, None  # the JFIF segment; the Adobe segment's colour transform
    scans: list[tuple[bytes, int, int, int, int]] = []  # (SOS segment, image data's start, last interval's, end, RSTs)
    sos = b""  # of the scan being walked

    def scan_end(start: int) -> int:
        end, restarts, last, damage = markers.scan_end(start, restart)
        if damage:
            raise JpegDamage(damage)
        scans.append((sos, start, last, end, restarts))
        return end

    try:
        for marker, at, end in jpeg_segments(data, scan_end):
            body = data[at:end]
            if marker in JPEG_STANDALONE:
                return f"a stray marker 0xFF{marker:02X} at offset {at}", None
            if marker == 0xE0 and body[:5] == b"JFIF\x00":
                jfif = True
            elif marker == 0xEE and body[:5] == b"Adobe" and len(body) >= 12:
                transform = body[11]
            elif marker == 0xDB:  # DQT
                quant |= quant_tables(body)
            elif marker == 0xDD and len(body) >= 2:  # DRI
                restart = int.from_bytes(body[:2], "big")
            elif marker in JPEG_SOF and len(body) >= 6:
                frame = JpegFrame.parse(marker, body)
            elif marker == 0xC4:  # DHT
                tables |= huffman_tables(body)
            elif marker == 0xDA:  # SOS: the walk reads its image data with `scan_end`
                sos = body
    except JpegDamage as exc:
        return str(exc), None
    if not (frame and frame.sequential and len(scans) == 1 and scans[0][0][:1] == bytes([len(frame.factors)])):
        return None, None
    (mcus, blocks), (sos, start, last, end, restarts) = frame.coding_units(), scans[0]
    if (end - start) * 4 < blocks:
        return (
            f"its image data ({end - start} bytes) is too short for the {frame.width}x{frame.height} it declares",
            None,
        )
    if restart and restarts < math.ceil(mcus / restart) - 1:
        return f"its image data ends after {restarts + 1} of the {math.ceil(mcus / restart)} restart intervals", None
    if not mcus:
        return None, None  # a height left to a DNL marker: nothing to count
    coding = ScanCoding.of(sos, dict(zip(frame.ids, frame.factors, strict=True)), tables)
    left = mcus - restarts * restart  # MCUs in the last interval (the whole scan without restart markers)
    if coding is None:
        return "its scan names a component or Huffman table its headers do not define", None
    ended = read_end(data, last, end, coding, left)
    if ended.cut is None:
        return "the end of its image data could not be told from its last bytes", None
    if ended.cut:
        return "its image data stops short of its last MCU", None
    # Coded as RGB, not YCbCr (libjpeg's rule, jdapimin.c): the lead component is then red, not luma.
    rgb = transform == 0 if transform is not None else not jfif and frame.ids == (82, 71, 66)  # 'R', 'G', 'B'
    if ended.last is None or rgb or coding.lead_id != frame.ids[0] or frame.quant[0] not in quant:
        return None, None
    return None, LastMcu.of(ended.last, quant[frame.quant[0]], frame.factors[0] if len(frame.ids) > 1 else (1, 1))


def quant_tables(dqt: bytes) -> dict[int, np.ndarray]:
    """The quantisation tables a DQT segment defines, by destination, in natural (row-major) order."""
    tables, at = {}, 0
    while at < len(dqt):
        wide = dqt[at] >> 4  # 16-bit entries
        size = 128 if wide else 64
        if at + 1 + size > len(dqt):
            break
        values = np.frombuffer(dqt[at + 1 : at + 1 + size], ">u2" if wide else np.uint8).astype(np.float64)
        table = np.empty(64)
        table[ZIGZAG] = values
        tables[dqt[at] & 15] = table
        at += 1 + size
    return tables


class _Markers:
    """Every real marker in the file (0xFF followed by neither a stuffed 0x00 nor a fill 0xFF), found once, so that
    each scan's end is a lookup however many scans a progressive JPEG has."""

    def __init__(self, data: bytes) -> None:
        buf = np.frombuffer(data, np.uint8)
        ff = np.flatnonzero(buf[:-1] == 0xFF)
        after = buf[ff + 1]
        real = (after != 0x00) & (after != 0xFF)
        self.offsets, self.codes = ff[real], after[real]
        self.stops = np.flatnonzero((self.codes < 0xD0) | (self.codes > 0xD7))  # markers that are not RSTn

    def scan_end(self, start: int, restart: int) -> tuple[int, int, int, str | None]:
        """Where the image data starting at `start` ends (the offset of its next marker that is not a restart
        marker), how many restart markers it holds and where its last interval starts, or why it is damaged."""
        first = int(np.searchsorted(self.offsets, start))
        at = int(np.searchsorted(self.stops, first))
        if at == len(self.stops):
            return 0, 0, 0, "the file ends in the middle of its image data"
        stop = int(self.stops[at])
        restarts = self.codes[first:stop]
        if len(restarts):
            if not restart:
                return 0, 0, 0, "a restart marker in image data that declares no restart interval"
            if not np.array_equal(restarts, 0xD0 + np.arange(len(restarts)) % 8):
                return 0, 0, 0, "restart markers out of sequence"
        last = int(self.offsets[stop - 1]) + 2 if len(restarts) else start
        return int(self.offsets[stop]), len(restarts), last, None
