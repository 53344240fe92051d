"""Corrupt inputs are refused, never rendered into garbage: at upload where the API's check can tell (415 for what
is not a PNG at all, 422 `corrupt-image` for a PNG whose chunks are broken), else by the decoder in the worker (the
job ends `failed` with `corrupt-image`, never `done`).

- JPEGs whose scan is too short for the size their header claims (a 64x48 photo patched to say 65500x10, 20000x10
  or 6400x48), which shrink-on-load once decoded into a grey thumbnail: libvips' `fail_on` misses damage met in
  the last strip it decodes (`decode.decoded`), which with shrink-on-load is often the whole image;
- JPEGs whose scan ends early (cut, an end-of-image marker put back; 4:4:4 and 4:2:0, with and without restart
  markers, baseline and progressive): the damage is met in the last strip at every size; DALI's decoders decode
  the missing bits as zeros or fill whole MCUs with grey, so DALI's path parses the scan's last bytes before
  decoding (`scan_end`: a cut that stops inside an MCU) and, after it, finds grey in the decoded image's last MCU
  (`damage.grey_filled`: a cut where an MCU ends, more than one lost) or a last MCU unlike its codes (one lost:
  tests/test_last_mcu.py);
- the PngSuite's corruptions of a valid PNG (`corpus.CORRUPTIONS`): bad signature, bad CRC in IHDR, IDAT, an
  ancillary chunk and IEND, chunk lengths that lie, missing IDAT, missing IEND, truncated IDAT, damaged deflate data.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips
from support import corpus, images
from support.backends import needs_dali
from support.problems import assert_problem, is_failed_corrupt
from support.renditions import item
from support.service import ROOT, Service

from gpu_worker.backends.damage import grey_filled, jpeg_damage, jpeg_frame
from gpu_worker.backends.vips import VipsBackend, configure_vips
from thumbify.errors import CorruptImage, UnsupportedMedia
from thumbify.probe import png_damage, probe

pytestmark = pytest.mark.timeout(300)

PHOTO_64x48 = images.photo_like(64, 48, seed=1, quality=90)
# name: the file; each is refused by every backend, whatever sizes are asked for.
LYING_JPEGS = {
    f"claims-{w}x{h}": images.jpeg_with_sof_size(w, h, PHOTO_64x48) for w, h in ((65500, 10), (20000, 10), (6400, 48))
}
SPECS = [{"sizes": "256"}, {"sizes": "64,512"}, {"sizes": "32x32", "fit": "cover"}]


def cut_at_an_mcu_end(jpeg: bytes) -> bytes:
    """`jpeg` cut (its end-of-image marker put back) where an MCU ends, at least 512 bytes of image data lost: a
    cut that the parse of the scan's last bytes cannot tell from a sound end (found by trying cuts in turn)."""
    for drop in range(512, len(jpeg) // 2):
        if jpeg_damage(cut := images.cut_scan(jpeg, drop=drop)) is None:
            return cut
    raise AssertionError("no cut ends where an MCU does")


def cut_in_a_flat_area(width: int = 1024, height: int = 768) -> bytes:
    """A photo whose bottom 40% is flat near-white (a product shot), cut where an MCU ends a few MCUs short: the codes
    left end in that flat area, so only the fill of the lost MCUs tells the cut (their grey on libjpeg-turbo; what
    nvJPEG fills them with is what the GPU run of this file shows)."""
    photo = images.photo_like_image(width, height, seed=9)
    flat = pyvips.Image.black(width, height * 2 // 5, bands=3) + 250
    jpeg = photo.insert(flat.cast("uchar"), 0, height - flat.height).jpegsave_buffer(Q=90)
    for drop in range(1, 64):
        cut = images.cut_scan(jpeg, drop=drop)
        if jpeg_damage(cut) is None and grey_filled(images.decoded_corner(cut), jpeg_frame(cut)):
            return cut
    raise AssertionError("no cut loses whole MCUs of the flat area")


# Scans that end early, an end-of-image marker put back where needed: libjpeg meets the damage in the last strip it
# decodes (libvips' `fail_on` needs `decode.decoded`); DALI's path finds a cut inside an MCU in the scan's last bytes
# and a cut where an MCU ends by the grey its decoders fill the lost MCUs with (`damage.grey_filled`); a progressive
# file cut in a later scan decodes blurred (DALI leaves those to vips).
SHORT_SCANS = {
    "cut-before-eoi": images.truncated_jpeg(keep=0.999) + b"\xff\xd9",
    "cut-halfway": images.truncated_jpeg(keep=0.5) + b"\xff\xd9",
    "cut-420-odd-size": images.truncated_jpeg(333, 217, keep=0.9, quality=75) + b"\xff\xd9",
    "cut-in-last-restart-interval": images.cut_scan(
        images.photo_like_image(640, 480, seed=3).jpegsave_buffer(Q=90, restart_interval=4), in_last_interval=True
    ),
    "claims-64x96": images.jpeg_with_sof_size(64, 96, images.photo_like(64, 48, seed=2, quality=95)),
    "progressive-cut": images.truncated_jpeg(keep=0.8, progressive=True) + b"\xff\xd9",
    "cut-at-an-mcu-end": cut_at_an_mcu_end(images.photo_like(640, 480, seed=6, quality=85)),
    "cut-in-a-flat-area": cut_in_a_flat_area(),
}
# The same cut in a JPEG with restart markers (as cameras write them): DALI's structure walk counts them and sends
# it to vips, which refuses it.
RESTARTED_CUT = images.truncated_jpeg(keep=0.99, restart_interval=4) + b"\xff\xd9"
# Damage the API's check can tell (the rest is for the decoder): 415 where the file is not a PNG at all.
AT_UPLOAD = {name: 422 for name in corpus.CORRUPTIONS if name != "idat-data-damaged"}
AT_UPLOAD |= {"bad-signature": 415, "signature-cr-lf-mangled": 415}
# What the decoder itself refuses (the rest leave the pixels whole: only the upload check refuses those).
DECODER_REFUSES = {
    "ihdr-bad-crc",
    "idat-bad-crc",
    "idat-length-too-long",
    "idat-length-too-short",
    "idat-length-huge",
    "missing-idat",
    "truncated-idat",
    "idat-data-damaged",
}
CORRUPTED = corpus.corrupted()


# -- JPEG: at the backend ------------------------------------------------------------------------------------------


def test_the_lies_are_read_as_the_header_says(tmp_path: Path) -> None:
    """Sanity: the upload check believes each header (nothing is decoded there), so the worker must refuse them."""
    for name, data in LYING_JPEGS.items():
        info = probe(images.write(tmp_path / f"{name}.jpg", data), 10**9)
        assert f"claims-{info.width}x{info.height}" == name


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: ",".join(s.values()))
@pytest.mark.parametrize("name", list(LYING_JPEGS))
def test_a_jpeg_lying_about_its_size_is_refused(
    any_backend,
    tmp_path: Path,
    name: str,
    spec: dict,
) -> None:
    with pytest.raises(CorruptImage) as caught:
        any_backend.render(*item(tmp_path, f"{name}.jpg", LYING_JPEGS[name], **spec))
    assert caught.value.status == 422 and "premature end of data" in caught.value.detail, caught.value.detail


def test_a_scan_cut_with_restart_markers_is_refused_by_every_backend(any_backend, tmp_path: Path) -> None:
    assert "restart intervals" in jpeg_damage(RESTARTED_CUT)
    sound = images.photo_like_image(640, 480, seed=3).jpegsave_buffer(Q=90, restart_interval=4)
    assert jpeg_damage(sound) is None
    for n, spec in enumerate(SPECS):
        with pytest.raises(CorruptImage, match="corrupt"):
            any_backend.render(*item(tmp_path, f"restarted-{n}.jpg", RESTARTED_CUT, **spec))


@pytest.mark.parametrize("name", list(SHORT_SCANS))
def test_a_scan_that_ends_early_is_refused(any_backend, tmp_path: Path, name: str) -> None:
    for n, spec in enumerate(SPECS):
        with pytest.raises(CorruptImage, match="corrupt"):
            any_backend.render(*item(tmp_path, f"{name}-{n}.jpg", SHORT_SCANS[name], **spec))


# A scan cut inside its last MCU, an end-of-image marker put back: vips refuses it; DALI's decoders would decode the
# missing bits as zeros (no MCU is left to fill with grey): the walk parses the scan's last bytes (`scan_end`).
LAST_MCU_CUT = images.cut_scan(images.photo_like(640, 480, seed=3, quality=90), drop=2)


def test_a_scan_cut_inside_its_last_mcu_is_refused(any_backend, tmp_path) -> None:
    assert jpeg_damage(LAST_MCU_CUT) == "its image data stops short of its last MCU"
    with pytest.raises(CorruptImage, match="corrupt"):
        any_backend.render(*item(tmp_path, "last-mcu.jpg", LAST_MCU_CUT, sizes="256"))


# Cuts nothing in the file's structure tells: only the decoded pixels do.
GREY_FILLED = ["claims-64x96", "cut-at-an-mcu-end", "cut-in-a-flat-area"]


@needs_dali
@pytest.mark.parametrize("name", GREY_FILLED)
def test_dali_sees_the_grey_of_a_scan_cut_short_and_leaves_it_to_vips(tmp_path: Path, name: str) -> None:
    from support.dali import cpu_dali

    assert jpeg_damage(SHORT_SCANS[name]) is None  # the walk and the parse of the last bytes cannot tell
    dali = cpu_dali()
    with pytest.raises(CorruptImage, match="corrupt"):
        dali.render(*item(tmp_path, f"{name}.jpg", SHORT_SCANS[name], sizes="256"))
    assert dali.runs and dali.fallback.calls == [f"{name}.jpg"]  # DALI decoded it, saw the grey, referred it


@needs_dali
def test_a_sound_jpeg_whose_last_mcu_is_that_grey_renders_right_through_the_detour(tmp_path: Path) -> None:
    """A false alarm costs a detour, never a wrong answer: vips renders the sound file DALI's check doubted."""
    from support.dali import cpu_dali

    dali = cpu_dali()
    data = images.solid_image(333, 217, (128, 128, 128)).jpegsave_buffer(Q=75)
    frame = jpeg_frame(data)
    assert frame is not None and frame.mcu() == (16, 16) and frame.last_mcu() == (217 - 13 * 16, 333 - 20 * 16)
    (rendition,) = dali.render(*item(tmp_path, "grey.jpg", data, sizes="100"))
    assert dali.fallback.calls == ["grey.jpg"]
    grey = pyvips.Image.new_from_buffer(rendition.data, "").numpy()
    assert grey.shape == (65, 100, 3) and np.abs(grey.astype(int) - 128).max() <= 1


def test_sound_jpegs_still_render_at_every_shrink(tmp_path: Path) -> None:
    """The check is on what libjpeg reports, not a guess: sound files of every shape pass at shrinks 1 to 8."""
    configure_vips(1)
    backend = VipsBackend()
    for w, h in ((64, 48), (4000, 10), (10, 3000), (1283, 851)):
        data = images.photo_like(w, h, seed=w, quality=80)
        for sizes in ("8", "100", "64,300", str(max(w, h))):
            assert backend.render(*item(tmp_path, f"ok-{w}x{h}.jpg", data, sizes=sizes))


# A garbage collection inside pyvips' GLib log handler (a Python callback: any allocation there may set one off) that
# frees the last reference to a damaged JPEG's image, as an exception's traceback holds it in a cycle: its loader
# warns as it closes, a log message sent from inside a log handler, which GLib makes fatal (a test worker aborted so,
# mid-decode). Here the collection is forced there, in a process of its own with a worker's libvips settings.
_FREED_INSIDE_THE_LOG_HANDLER = """
import gc, sys
import pyvips
from thumbify.probe import configure_vips
configure_vips(1)
handle = pyvips.logger.log
def collect_then_log(*args, **kwargs):
    gc.collect()
    return handle(*args, **kwargs)
pyvips.logger.log = collect_then_log
gc.disable()
damaged = pyvips.Image.new_from_buffer(sys.stdin.buffer.read(), "", access="sequential")
damaged.avg()
cycle = [damaged]
cycle.append(cycle)
del damaged, cycle
print(pyvips.Image.black(8, 8).avg())
"""


@pytest.mark.service
def test_a_damaged_jpeg_freed_inside_the_libvips_log_handler_does_not_abort_the_process() -> None:
    run = subprocess.run(
        [sys.executable, "-c", _FREED_INSIDE_THE_LOG_HANDLER],
        input=SHORT_SCANS["cut-before-eoi"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    assert run.stdout.strip() == b"0.0"
    assert b"(recursed)" in run.stderr  # the loader's warning, printed by GLib's fallback instead


# -- PNG: at upload and at the backend -----------------------------------------------------------------------------


def test_the_corruptions_break_a_file_that_is_valid() -> None:
    base = corpus.corruption_base()
    assert png_damage(base.encode()) is None
    assert all(png_damage(c.png.encode()) is None for c in corpus.suite().values())


@pytest.mark.parametrize("name", list(CORRUPTED))
def test_the_upload_check_refuses_what_it_can_tell(tmp_path: Path, name: str) -> None:
    path = images.write(tmp_path / f"{name}.png", CORRUPTED[name])
    if name not in AT_UPLOAD:
        assert probe(path, 10**8).format == "png"  # only decoding can tell
        return
    expected = UnsupportedMedia if AT_UPLOAD[name] == 415 else CorruptImage
    with pytest.raises(expected) as caught:
        probe(path, 10**8)
    assert caught.value.status == AT_UPLOAD[name], caught.value.detail


@pytest.mark.parametrize("name", sorted(DECODER_REFUSES))
def test_the_decoder_refuses_damaged_image_data(any_backend, tmp_path: Path, name: str) -> None:
    with pytest.raises(CorruptImage):
        any_backend.render(*item(tmp_path, f"{name}.png", CORRUPTED[name], sizes="4096", format="png"))


# -- end to end ----------------------------------------------------------------------------------------------------


def test_through_the_service_nothing_corrupt_ends_done(service: Service) -> None:
    """The lying JPEG is accepted (its header is sound) and its job fails `corrupt-image`; every PNG corruption is
    refused at upload or fails in the worker; and the worker goes on rendering."""
    for name, data in LYING_JPEGS.items():
        r = service.submit(data, f"{name}.jpg", sizes="256")
        assert r.status_code == 202, r.text
        job = service.wait(r.json()["id"])
        is_failed_corrupt(job)
        assert "premature end of data" in job["error"]["detail"], job
    for name, data in CORRUPTED.items():
        before = service.snapshot()
        r = service.submit(data, f"{name}.png", content_type="image/png")
        if name in AT_UPLOAD:
            slug = "unsupported-media" if AT_UPLOAD[name] == 415 else "corrupt-image"
            assert_problem(r, AT_UPLOAD[name], slug)
            assert service.snapshot() == before, f"{name}: the refused upload left something behind"
        else:
            assert r.status_code == 202, r.text
            is_failed_corrupt(service.wait(r.json()["id"]))
    assert service.run_job(PHOTO_64x48, "sound.jpg")["status"] == "done"
