"""Decompression bombs and liars: tiny files whose headers promise enormous work.

Each is refused at upload from its header alone (413/422 problem+json, nothing left behind), so the worker never
sees it: its processes' peak memory (VmHWM in /proc) does not move, and neither does the API's. One accepted big
image (8000x8000 of zeros, 192 MB of pixels in a 190 KB PNG) goes through the worker, whose render process's peak
stays far below the image's size. Files in formats we never open, disguised as JPEGs, are 415; polyglots (a real
magic number, then SVG/HTML/PDF) are 422 from the format's own loader, never handed to another one.

The decode-memory estimates (progressive JPEG, interlaced PNG, GIF frame, TIFF tiles, HEIF) are checked by
calling `probe` on the real files with a small `max_decode_bytes`, and end to end with a service so configured.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from support import images
from support.problems import assert_problem
from support.processes import descendants, render_children
from support.service import MAX_PIXELS, MAX_UPLOAD_BYTES, Service, start_service, stop_service

from thumbify.errors import SideTooLong, TooManyFrames, TooManyPixels
from thumbify.probe import count_frames, probe

MiB = 1024 * 1024
# A refused upload may cost the API a little (the spool write, the header read); never the image's size.
API_GROWTH_LIMIT = 64 * MiB
# An idle worker's processes do not grow at all while the API refuses uploads; allow for allocator noise.
IDLE_GROWTH_LIMIT = 16 * MiB
# The one big accepted image: 8000x8000 RGB is 192 MB decoded; streamed, the render process needs far less.
BIG_RENDER_LIMIT = 300 * MiB


# -- the service and its processes' memory -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bombs(redis_server: str, tmp_path_factory: pytest.TempPathFactory):
    """A service of our own with one render process, so its peak memory is this module's alone."""
    svc = start_service(tmp_path_factory.mktemp("bombs"), redis_server, extra_env={"image_processes": 1})
    try:
        job = svc.run_job(images.photo_like(320, 240), "warmup.jpg")
        assert job["status"] == "done", job
        yield svc
    finally:
        stop_service(svc)


def _status(pid: int) -> dict[str, int]:
    """VmHWM, VmRSS and RssAnon of one process, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon"):
                out[key] = int(value.split()[0]) * 1024
    return out


def memory(svc: Service, name: str) -> dict[int, dict[str, int]]:
    """Memory of the named process of the service and of its descendants, by pid."""
    root, out = svc.procs[name].pid, {}
    for pid in [root, *descendants(root)]:
        try:
            out[pid] = _status(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def growth(before: dict[int, dict[str, int]], after: dict[int, dict[str, int]]) -> dict[int, int]:
    """How much each process's peak (VmHWM) rose; a process that is new counts its whole peak."""
    return {pid: m["VmHWM"] - before.get(pid, {"VmHWM": 0})["VmHWM"] for pid, m in after.items()}


def queue_length(svc: Service) -> int:
    with svc.redis() as r:
        return r.xlen(svc.keys.stream) if r.exists(svc.keys.stream) else 0


# -- bombs refused at upload ------------------------------------------------------------------------------------------


def _avif_declaring(width: int, height: int) -> bytes:
    try:
        return images.avif_declaring(width, height)
    except Exception as exc:  # pyvips.Error: no AVIF encoder in this libvips
        pytest.skip(f"this libvips cannot write AVIF: {exc}")


# name -> (file, status, problem slug, words the detail must say)
BOMBS = {
    "png-declares-100000x100000": (
        lambda: images.png_declaring(100_000, 100_000),
        422,
        "too-many-pixels",
        ["100000x100000", f"{MAX_PIXELS:,}"],
    ),
    "jpeg-declares-65500x65500": (
        lambda: images.jpeg_with_sof_size(65500, 65500),
        422,
        "too-many-pixels",
        ["65500x65500"],
    ),
    # 400 MB of pixels in ~390 KB: over the pixel cap.
    "png-zip-bomb-20000x20000": (
        lambda: images.zero_png(20_000, 20_000, depth=8),
        422,
        "too-many-pixels",
        ["20000x20000"],
    ),
    # Under the pixel cap, over the side cap: a real (decodable) zip bomb, and a header-only liar.
    "png-zip-bomb-70000x1000": (
        lambda: images.zero_png(70_000, 1000, depth=8),
        422,
        "side-too-long",
        ["70000x1000", "65,500"],
    ),
    "png-declares-70000x10": (
        lambda: images.png_declaring(70_000, 10),
        422,
        "side-too-long",
        ["70000x10", "side"],
    ),
    "gif-5000-frames": (lambda: images.gif_with_frames(5000), 422, "too-many-frames", ["frames", "1,000"]),
    "gif-200000-frames": (lambda: images.gif_with_frames(200_000), 422, "too-many-frames", ["frames"]),
    "tiff-1500-pages": (lambda: images.tiff_with_pages(1500), 422, "too-many-frames", ["pages", "1,000"]),
    "webp-1500-frames": (lambda: images.webp_with_frames(1500), 422, "too-many-frames", ["WebP", "frames"]),
    # libheif decodes the whole image (about 16 bytes a pixel): 80 MP are over the default 1 GiB.
    "avif-declares-10000x8000": (
        lambda: _avif_declaring(10_000, 8000),
        422,
        "too-many-pixels",
        ["10000x8000", "memory"],
    ),
}


@pytest.fixture(scope="module")
def api_baseline(bombs: Service) -> dict[int, dict[str, int]]:
    return memory(bombs, "api")


@pytest.mark.parametrize("name", list(BOMBS))
def test_bomb_is_refused_at_upload_and_never_reaches_the_worker(bombs: Service, api_baseline: dict, name: str) -> None:
    make, status, slug, words = BOMBS[name]
    data = make()
    assert len(data) < MAX_UPLOAD_BYTES, f"{name} is {len(data):,} bytes: over the byte cap, not a bomb"
    before, worker_before, queued = bombs.snapshot(), memory(bombs, "worker"), queue_length(bombs)
    r = bombs.submit(data, f"{name}.jpg")
    assert_problem(r, status, slug, *words)
    assert bombs.snapshot() == before, "a refused upload left something behind"
    assert queue_length(bombs) == queued, "a refused upload reached the queue"
    grew = growth(worker_before, memory(bombs, "worker"))
    assert max(grew.values()) < IDLE_GROWTH_LIMIT, f"the worker's memory moved: {grew}"
    api_grew = growth(api_baseline, memory(bombs, "api"))
    assert max(api_grew.values()) < API_GROWTH_LIMIT, f"the API's peak memory rose by {api_grew} bytes"
    assert bombs.procs["api"].poll() is None and bombs.procs["worker"].poll() is None


def test_an_accepted_big_image_streams_through_the_worker(bombs: Service) -> None:
    """8000x8000 RGB zeros: 192 MB of pixels in a 190 KB PNG, under every cap. The render process's peak must
    stay far below the image's decoded size (libvips streams it), sampled while it runs and read from VmHWM."""
    data = images.zero_png(8000, 8000, depth=8, colour=2)
    children = render_children(bombs.procs["worker"].pid)
    assert children, "the worker has no render process"
    before = memory(bombs, "worker")
    peak_anon: dict[int, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in children:
                try:
                    peak_anon[pid] = max(peak_anon.get(pid, 0), _status(pid)["RssAnon"])
                except FileNotFoundError:
                    pass
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        job = bombs.run_job(data, "zeros.png", sizes="256,1024")
    finally:
        done.set()
        sampler.join()
    assert job["status"] == "done", job
    assert (job["source"]["width"], job["source"]["height"]) == (8000, 8000)
    grew = growth(before, memory(bombs, "worker"))
    assert render_children(bombs.procs["worker"].pid) == children, "the render process was replaced (crashed or killed)"
    assert max(grew.values()) < BIG_RENDER_LIMIT, f"peak memory rose by {grew} bytes rendering 8000x8000"
    assert max(peak_anon.values()) < BIG_RENDER_LIMIT, f"anonymous memory reached {peak_anon} bytes"


def test_limits_follow_the_settings(redis_server: str, tmp_path: Path) -> None:
    """max_side, max_frames and max_decode_bytes come from THUMBIFY_* settings, end to end."""
    svc = start_service(
        tmp_path,
        redis_server,
        with_worker=False,
        extra_env={"max_side": 2000, "max_frames": 10, "max_decode_bytes": 16 * MiB},
    )
    try:
        cases = [
            (images.png_declaring(3000, 20), "side-too-long", "2,000"),
            (images.gif_with_frames(11), "too-many-frames", "10"),
            (images.tiff_with_pages(11), "too-many-frames", "10"),
            (images.webp_with_frames(11), "too-many-frames", "10"),
            (images.progressive_jpeg_declaring(1900, 1900, subsample=False), "too-many-pixels", "progressive"),
            (images.gif_with_frames(1, 1900, 1900), "too-many-pixels", "GIF"),
        ]
        for data, slug, word in cases:
            before = svc.snapshot()
            assert_problem(svc.submit(data, "x.jpg"), 422, slug, word)
            assert svc.snapshot() == before
        # Just under each: accepted.
        for data in (
            images.png_declaring(2000, 20),
            images.gif_with_frames(10),
            images.tiff_with_pages(10),
            images.webp_with_frames(10),
        ):
            assert svc.submit(data, "x.jpg").status_code == 202
    finally:
        stop_service(svc)


# -- formats we never open ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(images.DISGUISED))
def test_a_format_only_other_loaders_read_is_415(bombs: Service, kind: str) -> None:
    before = bombs.snapshot()
    r = bombs.submit(images.DISGUISED[kind], "photo.jpg", content_type="image/jpeg")
    assert_problem(r, 415, "unsupported-media", "not an image")
    assert bombs.snapshot() == before


@pytest.mark.parametrize("kind", list(images.POLYGLOTS))
def test_a_polyglot_is_refused_by_its_own_loader(bombs: Service, kind: str) -> None:
    """A real magic number, then SVG, HTML or PDF: the sniffed format's own loader reads the header and refuses it;
    no sniffing loader (SVG, PDF, ImageMagick) ever gets a look."""
    before = bombs.snapshot()
    r = bombs.submit(images.POLYGLOTS[kind], "photo.jpg")
    assert_problem(r, 422, "corrupt-image", "header")
    assert bombs.snapshot() == before


def test_untrusted_loaders_are_blocked_where_probe_runs(tmp_path: Path) -> None:
    """Importing the probe module sets VIPS_BLOCK_UNTRUSTED for the processes started afterwards, and its first use
    blocks libvips' untrusted loaders in this process (here: CSV, which plain libvips opens by its suffix)."""
    import pyvips

    from thumbify import probe as probe_module

    assert os.environ.get("VIPS_BLOCK_UNTRUSTED") == "1"
    csv = tmp_path / "x.csv"
    csv.write_text("1,2,3\n4,5,6\n")
    probe_module._vips()
    with pytest.raises(pyvips.Error):
        pyvips.Image.new_from_file(str(csv))


def test_the_render_processes_run_with_untrusted_loaders_blocked(bombs: Service) -> None:
    children = render_children(bombs.procs["worker"].pid)
    assert children, "the worker has no render processes to check"
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"VIPS_BLOCK_UNTRUSTED=1" in environ, f"render process {pid} runs without VIPS_BLOCK_UNTRUSTED"


# -- the header checks themselves (probe on real files, no service) --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "limit", "expected"),
    [
        ("gif-1000", lambda: images.gif_with_frames(1000), 1000, 1000),
        ("gif-1001", lambda: images.gif_with_frames(1001), 1000, 1001),
        ("gif-1m", lambda: images.gif_with_frames(1_000_000), 1000, 1001),  # stops counting at the limit
        ("tiff-7", lambda: images.tiff_with_pages(7), 1000, 7),
        ("tiff-1500", lambda: images.tiff_with_pages(1500), 1000, 1001),
        ("webp-animated", lambda: images.animated("webp"), 1000, 3),
        ("webp-1000", lambda: images.webp_with_frames(1000), 1000, 1000),
        ("webp-1500", lambda: images.webp_with_frames(1500), 1000, 1001),
        ("gif-animated", lambda: images.animated("gif"), 1000, 3),
        ("jpeg", lambda: images.photo_like(64, 48), 1000, 1),
    ],
)
def test_frames_are_counted_by_a_bounded_walk(name: str, make, limit: int, expected: int) -> None:
    from thumbify.probe import sniff

    data = make()
    assert count_frames(data, sniff(data[:32]), limit) == expected


def test_a_gif_of_one_byte_sub_blocks_is_not_walked_for_ever(tmp_path: Path) -> None:
    """The walk has a step budget (about one step per 128 bytes): a GIF padded with 1-byte sub-blocks, which no
    encoder writes, is refused rather than walked byte by byte."""
    data = bytearray(images.gif_with_frames(1))
    padding = b"\x01\x00" * 2_000_000  # 4 MB of 1-byte sub-blocks inside an extension
    at = len(data) - 1
    data[at:at] = b"\x21\xfe" + padding + b"\x00"
    path = images.write(tmp_path / "padded.gif", bytes(data))
    with pytest.raises(TooManyFrames):
        probe(path, 10**8)


# file, max_decode_bytes, refused?
DECODE_CASES = {
    "progressive-jpeg-444-9000": (lambda: images.progressive_jpeg_declaring(9000, 9000, subsample=False), 256, True),
    "progressive-jpeg-420-9000": (lambda: images.progressive_jpeg_declaring(9000, 9000), 128, True),
    "progressive-jpeg-420-5000": (lambda: images.progressive_jpeg_declaring(5000, 5000), 128, False),
    "baseline-jpeg-30000": (lambda: images.jpeg_with_sof_size(30000, 30000), 256, False),
    "interlaced-png-6000": (lambda: images.zero_png(6000, 6000, depth=8, colour=6, interlace=True), 128, True),
    "plain-png-6000": (lambda: images.zero_png(6000, 6000, depth=8, colour=6), 128, False),
    "gif-frame-10000": (lambda: images.gif_with_frames(1, 10000, 10000), 512, True),
    "gif-frame-4000": (lambda: images.gif_with_frames(1, 4000, 4000), 512, False),
    "tiff-4096-tiles": (lambda: images.tiff_declaring_tiles(9000, 9000, 4096), 256, True),
    "tiff-256-tiles": (lambda: images.tiff_declaring_tiles(9000, 9000, 256), 256, False),
    "tiff-strips": (lambda: images.tiff_with_pages(1, 9000, 9000, compression="deflate"), 256, False),
    "avif-8000": (lambda: _avif_declaring(8000, 8000), 512, True),
}


@pytest.mark.parametrize("name", list(DECODE_CASES))
def test_decode_memory_is_judged_from_the_header(tmp_path: Path, name: str) -> None:
    make, limit_mib, refused = DECODE_CASES[name]
    path = images.write(tmp_path / name, make())
    if refused:
        with pytest.raises(TooManyPixels, match="memory"):
            probe(path, 10**9, max_decode_bytes=limit_mib * MiB)
    else:
        info = probe(path, 10**9, max_decode_bytes=limit_mib * MiB)
        assert info.width * info.height >= 16_000_000


def test_side_and_pixel_limits_are_judged_in_that_order(tmp_path: Path) -> None:
    path = images.write(tmp_path / "wide.png", images.png_declaring(70_000, 10))
    with pytest.raises(SideTooLong, match="70,000"):
        probe(path, 10**9)
    assert probe(path, 10**9, max_side=70_000).width == 70_000
    with pytest.raises(TooManyPixels):
        probe(path, 600_000, max_side=70_000)
