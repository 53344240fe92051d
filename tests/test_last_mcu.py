"""The decoded last MCU held against its codes (`gpu_worker.backends.last_mcu`): the check after decoding for the one
cut the parse of a scan's last bytes cannot tell, a scan that lost exactly its last MCU (cut where the MCU before it
ends, one-bits after as an encoder's fill would be), whose last MCU a decoder reads from those bits and the zeros past
the end. Sound files of every coding must decode as their codes say, on libjpeg-turbo and on DALI's cpu decoder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from support import images
from support.backends import needs_dali
from support.renditions import item

from benchmarks import corpus
from gpu_worker.backends.damage import JpegFrame, grey_filled, jpeg_check, jpeg_frame
from gpu_worker.backends.last_mcu import LastMcu, too_few_shown
from gpu_worker.backends.vips import VipsBackend
from thumbify.errors import CorruptImage
from thumbify.probe import jpeg_segments


def jpeg(width: int, height: int, seed: int, grey: bool = False, clipped: bool = False, **options) -> bytes:
    image = images.photo_like_image(width, height, seed)
    if clipped:  # saturated colours, highlights and shadows clipped
        image = (image.cast("float") * 1.6 - 60).cast("uchar")
    return (image.colourspace("b-w") if grey else image).jpegsave_buffer(**options)


SOUND = {
    "420": jpeg(640, 480, 1, Q=80),
    "420-partial-mcu": jpeg(197, 251, 207, Q=68),
    "444-q100": jpeg(1147, 440, 184, Q=100, restart_interval=5),
    "444-clipped": jpeg(531, 829, 143, clipped=True, Q=89, subsample_mode="off"),
    "grey": jpeg(333, 217, 3, grey=True, Q=90),
    "optimised": jpeg(820, 964, 14, Q=77, optimize_coding=True),
    "restarts": jpeg(912, 1101, 230, Q=89, restart_interval=27),
    "clipped-420": jpeg(400, 300, 5, clipped=True, Q=95),
    # A last MCU that shows one pixel: the MCU before it is held against its codes.
    "444-one-pixel-shown": jpeg(521, 737, 0, Q=90, subsample_mode="off"),
    "420-one-pixel-shown": jpeg(337, 209, 1, Q=80),
    "grey-one-row-shown": jpeg(402, 233, 8, grey=True, Q=85),
}


@pytest.mark.parametrize("name", list(SOUND))
def test_sound_files_decode_as_their_codes_say(name: str) -> None:
    data = SOUND[name]
    damage, last = jpeg_check(data)
    assert damage is None and last is not None
    assert not last.lost(images.decoded_corner(data), jpeg_frame(data))


def lost_last_mcu(data: bytes) -> bytes:
    """`data` cut where the MCU before its last one ends (its end-of-image marker put back): found as the cut that
    neither the parse of the last bytes refuses nor leaves grey (more than one MCU lost)."""
    frame = jpeg_frame(data)
    for drop in range(1, 400):
        cut = images.cut_scan(data, drop=drop)
        if jpeg_check(cut)[0] is None and not grey_filled(images.decoded_corner(cut), frame):
            return cut
    raise AssertionError("no cut lost exactly the last MCU")


# Files whose cuts of a few bytes include one that loses exactly the last MCU (found by `benchmarks.damage_cost`).
LOST = {
    "444": lost_last_mcu(jpeg(523, 746, 43, Q=88, subsample_mode="off")),
    "420": lost_last_mcu(jpeg(398, 197, 114, grey=True, Q=56)),
    "optimised-420": lost_last_mcu(jpeg(646, 543, 22, Q=60, optimize_coding=True)),
    # The lost MCU shows one pixel, as its codes would by chance: the MCU before it decodes as the codes say.
    "444-one-pixel-shown": lost_last_mcu(SOUND["444-one-pixel-shown"]),
    "420-one-pixel-shown": lost_last_mcu(SOUND["420-one-pixel-shown"]),
}


@pytest.mark.parametrize("name", list(LOST))
def test_a_scan_that_lost_its_last_mcu_decodes_unlike_its_codes(tmp_path: Path, name: str) -> None:
    cut = LOST[name]
    damage, last = jpeg_check(cut)
    assert damage is None and last is not None  # the walk and the parse cannot tell
    assert last.lost(images.decoded_corner(cut), jpeg_frame(cut))
    with pytest.raises(CorruptImage):  # the vips backend refuses it
        VipsBackend().render(*item(tmp_path, f"{name}.jpg", cut, sizes="256"))


def test_no_backend_doubts_a_sound_file(any_backend, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On the GPU too (`-m gpu`): nvJPEG's decode of each sound file's last MCU is what its codes say (a false alarm
    would send it to vips, logged)."""
    caplog.set_level(logging.INFO, logger="gpu_worker.backends.dali")
    for name, data in SOUND.items():
        any_backend.render(*item(tmp_path, f"{name}.jpg", data, sizes="128"))
    assert not [r.message for r in caplog.records if "last MCU" in r.message]


def test_every_backend_refuses_a_scan_that_lost_its_last_mcu(any_backend, tmp_path: Path) -> None:
    """On the GPU too (`-m gpu`): whether nvJPEG decodes the lost MCU as libjpeg-turbo does, the job fails."""
    for name, cut in LOST.items():
        with pytest.raises(CorruptImage, match="corrupt"):
            any_backend.render(*item(tmp_path, f"{name}.jpg", cut, sizes="256"))


# A scan that lost its last MCU, which shows one pixel: nothing in the decoded pixels tells it (neither that pixel nor
# the MCU before it, found by `benchmarks.damage_cost`): DALI leaves every such file to vips before decoding.
UNTOLD = images.cut_scan(corpus.photo(362, 465, 177).jpegsave_buffer(Q=90), drop=3)


def test_a_lost_mcu_that_shows_too_few_pixels_is_left_to_the_strict_decoder(any_backend, tmp_path: Path) -> None:
    frame = jpeg_frame(UNTOLD)
    damage, last = jpeg_check(UNTOLD)
    assert damage is None and last is not None and frame.last_mcu() == (1, 1)
    decoded = images.decoded_corner(UNTOLD)
    assert not grey_filled(decoded, frame) and not last.lost(decoded, frame)  # decoding cannot tell
    assert too_few_shown(frame)
    with pytest.raises(CorruptImage, match="corrupt"):
        any_backend.render(*item(tmp_path, "untold.jpg", UNTOLD, sizes="256"))


def test_which_last_mcus_show_too_few_pixels() -> None:
    """Four pixels or fewer, in an image of more than one MCU (one MCU's scan is read whole by the parse)."""
    shows = {(17, 9, 1): True, (18, 10, 1): True, (19, 10, 1): False, (33, 33, 2): True, (35, 34, 2): False}
    for (width, height, factor), expected in shows.items():
        assert too_few_shown(JpegFrame(0xC0, width, height, ((factor, factor), (1, 1), (1, 1)))) is expected
    assert too_few_shown(JpegFrame(0xC0, 9, 1, ((1, 1),)))  # one row: the MCU before is to the left
    assert not too_few_shown(JpegFrame(0xC0, 1, 1, ((1, 1),)))
    assert not too_few_shown(JpegFrame(0xC0, 16, 16, ((2, 2), (1, 1), (1, 1))))


@needs_dali
@pytest.mark.parametrize("name", [name for name in LOST if not too_few_shown(jpeg_frame(LOST[name]))])
def test_dali_leaves_a_scan_that_lost_its_last_mcu_to_vips(tmp_path: Path, name: str) -> None:
    from support.dali import cpu_dali

    dali = cpu_dali()
    with pytest.raises(CorruptImage, match="corrupt"):
        dali.render(*item(tmp_path, f"{name}.jpg", LOST[name], sizes="256"))
    assert dali.runs and dali.fallback.calls == [f"{name}.jpg"]  # DALI decoded it, held it against its codes


@needs_dali
def test_dali_renders_sound_files_itself(tmp_path: Path) -> None:
    """No false alarm on DALI's own decoder: every sound file is rendered by DALI, none referred to vips, but those
    whose last MCU shows too few pixels, which vips renders without DALI decoding them."""
    from support.dali import cpu_dali

    dali = cpu_dali()
    items = [item(tmp_path, f"{name}.jpg", data, sizes="128") for name, data in SOUND.items()]
    results = dali.render_batch(items)
    assert all(not isinstance(r, Exception) for r in results), results
    few = [f"{name}.jpg" for name, data in SOUND.items() if too_few_shown(jpeg_frame(data))]
    assert few == ["444-one-pixel-shown.jpg", "420-one-pixel-shown.jpg", "grey-one-row-shown.jpg"]
    assert dali.fallback.calls == few
    assert sum(dali.runs) == len(SOUND) - len(few)


def test_blocks_are_compared_less_their_level_and_where_unclipped() -> None:
    """A block of one horizontal cosine, as its codes say: the decoded pixels match whatever their level, and pixels
    clipped at white are left out; a flat block, or the cosine's opposite, do not match."""
    coefficients = np.zeros((1, 64))
    coefficients[0, 1] = 40  # the first horizontal frequency
    last = LastMcu.of(coefficients, np.full(64, 10.0), (1, 1))
    wave = last.pixels
    assert np.isclose(np.nanmean(wave), 0) and np.ptp(wave) > 50

    def rgb(luma: np.ndarray) -> np.ndarray:
        return np.repeat(np.clip(np.round(luma), 0, 255)[:, :, None], 3, axis=2).astype(np.uint8)

    assert not last.differs(rgb(wave + 100), 8, 8)
    assert not last.differs(rgb(wave + 230), 8, 8)  # its bright half clipped at 255: left out
    assert last.differs(rgb(np.full((8, 8), 100.0)), 8, 8)
    assert last.differs(rgb(100 - wave), 8, 8)
    assert last.differs(rgb(100 - wave)[:1, :2], 1, 2)  # two pixels: judged by their median
    assert not last.differs(rgb(100 - wave)[:1, :1], 1, 1)  # one pixel: too few to judge


def test_pixels_clipped_in_every_channel_bound_their_blocks_level() -> None:
    """A pixel white in every channel was decoded from luma at white or above, a black one from black or below: flat
    codes cannot give both in one block (a lost MCU decoded so, its last MCU showing 6 pixels, each clipped), nor a
    white pixel beside mid-grey ones; a corner all black, or white beside near-white, they can."""
    flat = LastMcu.of(np.zeros((1, 64)), np.full(64, 10.0), (1, 1))
    black = np.zeros((2, 3, 3), np.uint8)
    white_and_black = black.copy()
    white_and_black[1, 1] = 255
    assert flat.differs(white_and_black, 2, 3)
    assert not flat.differs(black, 2, 3)
    grey = np.full((2, 3, 3), 100, np.uint8)
    grey[1, 2] = 255
    assert flat.differs(grey, 2, 3)
    near_white = np.full((2, 3, 3), 253, np.uint8)
    near_white[1, 2] = 255
    assert not flat.differs(near_white, 2, 3)


def test_files_coded_as_rgb_are_not_checked() -> None:
    """An Adobe segment saying the components are R, G and B (no JFIF): the lead component is red, not luma, and the
    check is left out rather than judged on the wrong channel."""
    data = SOUND["444-clipped"]
    assert not any(marker == 0xE0 for marker, _, _ in jpeg_segments(data))  # libvips writes no JFIF segment
    adobe = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"  # transform 0: RGB
    assert jpeg_check(data[:2] + adobe + data[2:]) == (None, None)
    assert jpeg_check(data)[1] is not None


def test_the_mcu_before_a_last_mcu_too_small_to_judge_is_held_against_the_codes() -> None:
    """A last MCU that shows one pixel (an 8x8-MCU image 17 x 9 pixels): the codes are the MCU before it's, as decoded
    (left, or above where the image is one MCU wide), when that MCU decodes as they say; not where it decodes
    otherwise, nor where the codes are flat (any flat MCU would match them)."""
    coefficients = np.zeros((1, 64))
    coefficients[0, 1] = 40  # the first horizontal frequency
    last = LastMcu.of(coefficients, np.full(64, 10.0), (1, 1))
    flat = LastMcu.of(np.zeros((1, 64)), np.full(64, 10.0), (1, 1))
    wave = np.repeat(np.clip(np.round(last.pixels + 120), 0, 255)[:, :, None], 3, axis=2).astype(np.uint8)

    def corner(before: np.ndarray) -> np.ndarray:  # 9 x 17: the MCU before the last one at the left of its row
        out = np.full((9, 17, 3), 90, np.uint8)
        out[8:, 8:16] = before[:1]
        out[:8, :8] = out[:8, 8:16] = before  # the row above, as much like it
        return out

    wide, tall = JpegFrame(0xC0, 17, 9, ((1, 1),)), JpegFrame(0xC0, 1, 17, ((1, 1),))
    assert wide.last_mcu() == (1, 1)
    assert last.lost(corner(wave), wide)
    assert not last.lost(corner(255 - wave), wide)
    assert not last.lost(corner(np.full((8, 8, 3), 120, np.uint8)), wide)
    assert not flat.lost(corner(np.full((8, 8, 3), 120, np.uint8)), wide)
    coefficients[0, 1], coefficients[0, 8] = 0, 40  # the first vertical frequency
    upright = LastMcu.of(coefficients, np.full(64, 10.0), (1, 1))
    column = np.full((17, 1, 3), 90, np.uint8)
    column[8:16] = np.transpose(wave, (1, 0, 2))[:, :1]  # the MCU above, as the codes say
    assert upright.lost(column, tall)
    assert not last.lost(column, tall)  # the horizontal wave's column is flat: no pattern to tell by
