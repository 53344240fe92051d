"""The parse of a baseline JPEG's last bytes (`gpu_worker.backends.scan_end`), which tells DALI's path a scan cut
inside its last MCU (DALI's decoders decode the missing bits as zeros, without a word) from a sound one.

Files of every coding libjpeg-turbo writes (4:2:0, 4:2:2, 4:4:4, grey; standard and optimised Huffman tables; restart
intervals; qualities 1 to 100; sizes from one pixel), by libvips and by Pillow. A sound file must never be refused
(each false alarm is a detour through vips); a cut must be, wherever the whole scan or interval is parsed; from a
tail, every cut but those that end exactly where an earlier MCU ends (no count is known there).
"""

from __future__ import annotations

import functools
import io

import numpy as np
import pytest
from PIL import Image
from support import images

from gpu_worker.backends import damage, scan_end
from gpu_worker.backends.damage import jpeg_check, jpeg_damage
from gpu_worker.backends.scan_end import ScanCoding, huffman_table, huffman_tables, read_end
from thumbify.probe import JPEG_SOF, jpeg_segments

CUT = "its image data stops short of its last MCU"


def vips_jpeg(width: int, height: int, seed: int = 0, grey: bool = False, **options) -> bytes:
    image = images.photo_like_image(width, height, seed)
    return (image.colourspace("b-w") if grey else image).jpegsave_buffer(**options)


def pillow_jpeg(width: int, height: int, seed: int = 0, **options) -> bytes:
    pixels = images.photo_like_image(width, height, seed).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", **options)
    return out.getvalue()


SOUND = {
    "420-q75": vips_jpeg(640, 480, Q=75),
    "444-q95": vips_jpeg(640, 480, Q=95),
    "444-q100": vips_jpeg(333, 217, Q=100),
    "420-q1": vips_jpeg(640, 480, Q=1),
    "grey-q85": vips_jpeg(500, 301, grey=True, Q=85),
    "optimised-420": vips_jpeg(777, 555, seed=4, Q=60, optimize_coding=True),
    "optimised-444": vips_jpeg(777, 555, seed=5, Q=92, optimize_coding=True),
    "restarts-every-mcu": vips_jpeg(200, 150, Q=80, restart_interval=1),
    "restarts-every-37": vips_jpeg(1000, 700, Q=90, restart_interval=37),
    "one-pixel": vips_jpeg(1, 1, Q=90),
    "one-row": vips_jpeg(1999, 1, Q=90),
    "one-column": vips_jpeg(1, 1999, Q=50),
    "odd-17x9": vips_jpeg(17, 9, Q=90),
    "pillow-422": pillow_jpeg(640, 480, subsampling=1, quality=85),
    "pillow-420-optimised": pillow_jpeg(801, 603, subsampling=2, quality=70, optimize=True),
    "pillow-444-q100": pillow_jpeg(300, 200, subsampling=0, quality=100),
}


def scan_of(data: bytes) -> tuple[int, int, ScanCoding, int]:
    """(start, end, coding, MCUs) of a one-scan JPEG without restart markers, read plainly (not as `damage` does)."""
    tables: dict = {}
    for marker, at, end in jpeg_segments(data):
        body = data[at:end]
        if marker == 0xC4:
            tables |= huffman_tables(body)
        elif marker in JPEG_SOF:
            count = body[5]
            ids = [body[6 + 3 * i] for i in range(count)]
            factors = {body[6 + 3 * i]: (body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15) for i in range(count)}
            width, height = int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big")
        elif marker == 0xDA:
            coding = ScanCoding.of(body, factors, tables)
            start = end
    h, v = max(f[0] for f in factors.values()), max(f[1] for f in factors.values())
    mcu_w, mcu_h = (8 * h, 8 * v) if len(ids) > 1 else (8, 8)
    mcus = -(-width // mcu_w) * -(-height // mcu_h)
    return start, data.rindex(b"\xff\xd9"), coding, mcus


@pytest.fixture
def whole_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Room to parse whole scans of these files (the service parses at most 4 KiB of a scan from its start)."""
    monkeypatch.setattr(scan_end, "_BUDGET", (scan_end._BUDGET[0], 10**7))


@pytest.mark.usefixtures("whole_scans")
@pytest.mark.parametrize("name", list(SOUND))
def test_sound_files_pass(name: str) -> None:
    data = SOUND[name]
    assert jpeg_damage(data) is None
    if b"\xff\xdd" not in data[: data.index(b"\xff\xda")]:  # no restart interval: parse it every way
        start, end, coding, mcus = scan_of(data)
        assert read_end(data, start, end, coding, mcus, tail=end - start).cut is False  # the whole scan, counted
        for tail in (16, 64, 256):  # tails whose start is unknown
            assert read_end(data, start, end, coding, mcus, tail=tail).cut is False, tail


# Small files of each coding, for cuts at every length a whole scan is parsed for.
SMALL = {
    "420": vips_jpeg(160, 120, Q=75),
    "444": vips_jpeg(120, 90, Q=95),
    "grey": vips_jpeg(150, 101, grey=True, Q=85),
    "optimised-420": vips_jpeg(177, 155, seed=4, Q=60, optimize_coding=True),
    "pillow-422": pillow_jpeg(140, 100, subsampling=1, quality=85),
    "odd-17x9": SOUND["odd-17x9"],
}


@pytest.mark.usefixtures("whole_scans")
@pytest.mark.parametrize("name", list(SMALL))
def test_every_cut_is_refused_where_the_whole_scan_is_parsed(name: str) -> None:
    data = SMALL[name]
    start, end, coding, mcus = scan_of(data)
    assert read_end(data, start, end, coding, mcus, tail=end - start).cut is False
    for drop in range(1, min(100, end - start)):
        cut = images.cut_scan(data, drop=drop)
        assert read_end(cut, start, end - drop, coding, mcus, tail=end - start).cut, drop


def test_cuts_are_refused_from_the_last_bytes_alone() -> None:
    """Cuts of 1 to 24 bytes from 36 files of every coding: refused by `jpeg_damage` (tails of 256 bytes), all but
    those ending exactly where an MCU ends, after which at most seven one-bits follow (no tail can tell those from
    a sound end: the MCUs lost then decode grey, which DALI's path checks, or, only the last one lost, from zero
    bits)."""
    refused = passed = 0
    for n in range(36):
        options = {"Q": 30 + 2 * n, "subsample_mode": "off" if n % 3 == 0 else "auto", "optimize_coding": n % 4 == 1}
        data = vips_jpeg(320 + 37 * n, 900 - 19 * n, seed=n, grey=n % 5 == 2, **options)
        for drop in range(1, 25):
            if jpeg_damage(images.cut_scan(data, drop=drop)):
                refused += 1
            else:
                passed += 1
    assert refused / (refused + passed) > 0.98, (refused, passed)


def test_the_cut_inside_the_last_mcu_that_dali_decoded_silently() -> None:
    data = images.photo_like(640, 480, seed=3, quality=90)
    assert jpeg_damage(data) is None
    for drop in (1, 2, 3):
        assert jpeg_damage(images.cut_scan(data, drop=drop)) == CUT


def test_an_empty_last_restart_interval_is_refused() -> None:
    """Every restart marker there, the image data after the last one lost: the last interval is counted."""
    data = vips_jpeg(200, 150, Q=80, restart_interval=1)
    last = max(data.rfind(bytes([0xFF, 0xD0 + n])) for n in range(8))
    assert jpeg_damage(data[: last + 2] + b"\xff\xd9") == CUT
    assert jpeg_damage(data[: last + 2 + 1] + b"\xff\xd9") == CUT


def test_a_scan_naming_a_table_never_defined_is_refused() -> None:
    data = bytearray(SOUND["420-q75"])
    sos = data.index(b"\xff\xda")
    data[sos + 6] = 0x33  # the first component's DC and AC tables: 3, which no DHT defines
    assert "Huffman table" in jpeg_damage(bytes(data))


def test_a_table_is_read_as_canonical_codes() -> None:
    """The standard luminance tables (ITU T.81 K.3): DC category 0 is 00, 1 is 010, ..., 11 is 111111110; AC 0x01
    (a 1 after no zeros) is 00, the end of block 1010, sixteen zeros 11111111001."""
    dc = huffman_table(bytes([0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]), bytes(range(12)), ac=False)
    assert dc[0b00 << 14] == 0 << 16 | 1 << 8 | 2  # symbol 0: one coefficient on, 2 bits (no value bits)
    assert dc[0b010 << 13] == 1 << 16 | 1 << 8 | 3 + 1
    assert dc[0b110 << 13] == 5 << 16 | 1 << 8 | 3 + 5
    assert dc[0b111111110 << 7] == 11 << 16 | 1 << 8 | 9 + 11
    assert dc[0xFFFF] == 0  # no code is all ones
    counts = bytes([0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D])
    symbols = bytes.fromhex(
        "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a3435"
        "363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a92939495969798"
        "999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4"
        "f5f6f7f8f9fa"
    )
    ac = huffman_table(counts, symbols, ac=True)
    assert ac[0b00 << 14] == 0x01 << 16 | 1 << 8 | 2 + 1
    assert ac[0b1010 << 12] == 0x00 << 16 | 64 << 8 | 4  # the end of the block
    assert ac[0b11111111001 << 5] == 0xF0 << 16 | 16 << 8 | 11  # sixteen zeros
    assert huffman_table(bytes([3] + [0] * 15), bytes(3), ac=False) is None  # three codes of one bit do not exist


def test_work_over_budget_is_left_undecided(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parse's work is bounded: where it would run over, the file is left to vips (never passed)."""
    monkeypatch.setattr(scan_end, "_BUDGET", (100, 100))
    assert jpeg_damage(SOUND["420-q75"]) == "the end of its image data could not be told from its last bytes"


def flat_below(width: int, height: int, flat: float, grey: bool = False, **options) -> bytes:
    """A photo whose bottom `flat` fraction is one flat colour (a product shot on white): every MCU there is coded
    alike, so the scan ends in a run of repeating bytes."""
    photo = images.photo_like_image(width, height, seed=9)
    white = images.solid_image(width, int(height * flat), (250, 250, 250))
    image = photo.insert(white, 0, height - white.height)
    return (image.colourspace("b-w") if grey else image).jpegsave_buffer(**options)


@pytest.mark.parametrize(
    "data",
    [
        flat_below(1200, 900, 0.4, Q=85),
        flat_below(1200, 900, 0.4, Q=95, subsample_mode="off"),
        flat_below(999, 701, 0.6, grey=True, Q=70),
        flat_below(1200, 900, 0.4, Q=80, optimize_coding=True),
        images.solid_image(4000, 3000, (128, 128, 128)).jpegsave_buffer(Q=50),
    ],
    ids=["420", "444", "grey-odd", "optimised", "all-flat"],
)
def test_a_flat_end_is_told_through_its_repeating_run(data: bytes) -> None:
    """Parses out of step stay so through a flat area however long: the check starts before it and skips its
    cycles; a sound file passes, a cut inside its last MCU does not. (A flat grey MCU codes in 6 bits: a cut of 3
    bytes ends where an MCU does, and loses four: the grey of those is what DALI's path sees.)"""
    assert jpeg_damage(data) is None
    for drop in (1, 2):
        assert jpeg_damage(images.cut_scan(data, drop=drop)) == CUT, drop


# A tail whose wrong parse and the true one end in the same state, where an MCU starts, having begun the last MCU in
# different places: read from 256 bytes, its last MCU's codes were another MCU's (a false alarm after decoding).
SAME_END_OTHER_LAST = vips_jpeg(96, 174, seed=7019, Q=100, restart_interval=21)


@pytest.mark.usefixtures("whole_scans")
@pytest.mark.parametrize("name", [*SOUND, "same-end-other-last"])
def test_the_last_mcu_read_from_a_tail_is_the_one_the_whole_scan_ends_in(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    data = SOUND.get(name, SAME_END_OTHER_LAST)
    from_tail = jpeg_check(data)[1]
    monkeypatch.setattr(damage, "read_end", functools.partial(read_end, tail=len(data)))
    whole = jpeg_check(data)[1]
    assert whole is not None
    # (where the parses of a tail disagree on it, it is not read: no check rather than a wrong one)
    assert from_tail is None or np.allclose(from_tail.pixels, whole.pixels, equal_nan=True)
