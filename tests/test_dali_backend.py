"""The DALI backend, run as CI runs it: the same pipeline with `cpu` operators and `device_id=None` (the
nvidia-dali wheel runs CPU pipelines without a GPU or driver). A GPU, where there is one, runs it on `mixed` too.

The contract every backend keeps (pixels of orientations, colours, fits, formats, broken files) is
tests/test_backend_contract.py, which runs it on DALI too and checks there who rendered each case. Here, DALI's own:
what it takes, pixels against the vips backend, batches (mixed good and bad, every size up to and past the maximum,
concurrency), an image that fails inside DALI, and the JPEG structure walk.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import pyvips
from support import images
from support.renditions import MAGIC, assert_marked_upright, close, item, lanczos3_reference, only, pixels, psnr

pytest.importorskip("nvidia.dali", reason="nvidia-dali-cuda130 is not installed (pip install -e '.[test]')")

from support.dali import MAX_BATCH, CountingDali, RecordingVips, cpu_dali

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.dali import DaliBackend, dali_unavailable
from gpu_worker.backends.damage import file_check, jpeg_damage
from gpu_worker.backends.plan import plan
from gpu_worker.backends.vips import VipsBackend, configure_vips
from thumbify.errors import CorruptImage
from thumbify.probe import open_image, sniff
from thumbify.spec import ThumbnailSpec


@pytest.fixture(scope="module")
def backend() -> CountingDali:
    configure_vips(1)
    dali = cpu_dali()
    yield dali
    dali.close()


@pytest.fixture(autouse=True)
def _own_counts(request: pytest.FixtureRequest) -> None:
    """Each test reads only its own batches and fallbacks from the shared backend."""
    if "backend" in request.fixturenames:
        dali: CountingDali = request.getfixturevalue("backend")
        dali.fallback.calls.clear()
        dali.runs.clear()


# -- helpers ----------------------------------------------------------------------------------------------------------


def arrays(renditions: list[Rendition]) -> dict[str, np.ndarray]:
    return {r.name: pixels(r) for r in renditions}


def bad_crc_png() -> bytes:
    """A PNG whose image data is damaged (its CRC no longer matches): the structure walk lets it through, DALI's
    decoder fails on it, and so does libvips."""
    data = bytearray(images.photo_like_image(120, 80, seed=8).pngsave_buffer())
    at = data.index(b"IDAT")
    data[at + 4 + int.from_bytes(data[at - 4 : at], "big") // 2] ^= 0x55
    return bytes(data)


# -- pixels: the DALI backend against the vips backend -----------------------------------------------------------------

PARITY_SOURCES = {
    "photo-jpeg": lambda: images.photo_like(640, 480, seed=21),
    "oriented-6": lambda: images.with_orientation(images.photo_like_image(480, 320, seed=22), 6).jpegsave_buffer(Q=95),
    "photo-png": lambda: images.photo_like_image(500, 300, seed=23).pngsave_buffer(),
    "grey-jpeg": lambda: images.zone_plate(512).jpegsave_buffer(Q=95),
    "photo-webp": lambda: images.encode(images.photo_like_image(400, 400, seed=24), "webp", Q=95),
    "p3-jpeg": lambda: images.p3_tagged([(220, 40, 40), (40, 190, 70), (50, 70, 210), (128, 128, 128)], fmt="jpeg"),
}


@pytest.mark.parametrize("fit", ["inside", "cover", "fill", "contain"])
@pytest.mark.parametrize("source", list(PARITY_SOURCES))
def test_dali_and_vips_give_the_same_pixels(backend, tmp_path: Path, source: str, fit: str) -> None:
    data = PARITY_SOURCES[source]()
    path, fmt, spec, stem = item(tmp_path, f"{source}.img", data, sizes="200,96x64", fit=fit, format="png")
    ours = arrays(backend.render(path, fmt, spec, stem))
    assert backend.fallback.calls == []
    theirs = arrays(VipsBackend().render(path, fmt, spec, stem))
    assert ours.keys() == theirs.keys()
    for name, array in ours.items():
        assert array.shape == theirs[name].shape, name
        score = psnr(array, theirs[name])
        assert score >= 35.0, f"{name}: {score:.1f} dB against the vips backend"


@pytest.mark.parametrize("out_format", ["jpeg", "webp", "png"])
def test_encoded_output_matches_vips(backend, tmp_path: Path, out_format: str) -> None:
    path, fmt, spec, stem = item(
        tmp_path, "p.jpg", images.photo_like(800, 600, seed=25), sizes="256", format=out_format
    )
    (ours,) = backend.render(path, fmt, spec, stem)
    (theirs,) = VipsBackend().render(path, fmt, spec, stem)
    assert (ours.name, ours.width, ours.height, ours.format) == (
        theirs.name,
        theirs.width,
        theirs.height,
        theirs.format,
    )
    assert MAGIC[ours.format](ours.data)
    assert psnr(pixels(ours), pixels(theirs)) >= 35.0


def test_several_sizes_from_one_dali_pass(backend, tmp_path: Path) -> None:
    data = images.photo_like(1600, 1200, seed=11)
    path, fmt, spec, stem = item(tmp_path, "pic.jpg", data, sizes="256,128,64x32,100x50,320x200", format="png")
    out = backend.render(path, fmt, spec, stem)
    assert sorted(r.name for r in out) == sorted(
        f"thumb_pic_{w}x{h}.png" for w, h in [(256, 192), (128, 96), (43, 32), (67, 50), (267, 200)]
    )
    assert backend.runs == [1] and backend.fallback.calls == []
    full = pyvips.Image.new_from_buffer(data, "").numpy().astype(np.float64)
    for r in out:
        assert psnr(pixels(r), lanczos3_reference(full, r.width, r.height)) >= 40.0, r.name


# -- batches ----------------------------------------------------------------------------------------------------------


def test_a_batch_mixing_good_cmyk_and_truncated_images(backend, tmp_path: Path) -> None:
    items = [
        item(tmp_path, "good1.jpg", images.photo_like(320, 240, seed=31), sizes="128", format="png"),
        item(tmp_path, "cmyk.jpg", images.cmyk_jpeg(), sizes="192", format="png"),
        item(tmp_path, "good2.png", images.marked_image(300, 200).pngsave_buffer(), sizes="150", format="jpeg"),
        item(tmp_path, "truncated.jpg", images.truncated_jpeg(), sizes="128"),
        item(tmp_path, "good3.jpg", images.oriented_jpeg(6), sizes="160", format="png"),
    ]
    results = backend.render_batch(items)
    assert len(results) == len(items)
    good1, cmyk, good2, truncated, good3 = results
    assert [r.name for r in good1] == ["thumb_good1_128x96.png"]
    assert [r.name for r in good2] == ["thumb_good2_150x100.jpg"]
    assert [r.name for r in good3] == ["thumb_good3_160x80.png"]
    assert_marked_upright(pixels(good3[0]))
    # The CMYK JPEG goes through its profile on vips: the right sRGB colours.
    array = pixels(only(cmyk))
    for i, colour in enumerate(images.CMYK_PATCHES):
        x, y = images.patch_centre(i)
        assert close(array[y - 4 : y + 5, x - 4 : x + 5].reshape(-1, 3).mean(axis=0), colour, 12), i
    assert isinstance(truncated, CorruptImage) and "jpeg" in truncated.detail
    # Both refused up front: the good three went through DALI in one run.
    assert sorted(backend.fallback.calls) == ["cmyk.jpg", "truncated.jpg"]
    assert backend.runs == [3]


class LetsEverythingThrough(CountingDali):
    """Sends DALI even what it should refuse: the way to make an image fail inside the pipeline."""

    def refusal(self, fmt, header, data, placements, frame=None, structure=True):
        return None


def test_an_image_that_fails_inside_dali_is_retried_on_vips_and_fails_only_itself(tmp_path: Path) -> None:
    dali = LetsEverythingThrough("cpu", num_threads=1, max_batch=8, fallback=RecordingVips())
    goods = [images.photo_like(200 + 10 * i, 150, seed=40 + i) for i in range(5)]
    items = [item(tmp_path, f"good{i}.jpg", g, sizes="64", format="png") for i, g in enumerate(goods)]
    items.insert(2, item(tmp_path, "anim.gif", images.animated("gif"), sizes="64", format="png"))  # DALI: no GIF
    items.insert(5, item(tmp_path, "badcrc.png", bad_crc_png(), sizes="64", format="png"))
    results = dali.render_batch(items)
    names = [r if isinstance(r, Exception) else [x.name for x in r] for r in results]
    assert names[2] == ["thumb_anim_64x48.png"]  # retried on vips, and right there
    assert isinstance(results[5], CorruptImage), names[5]
    others = [n for i, n in enumerate(names) if i not in (2, 5)]
    assert others == [[f"thumb_good{i}_64x{round(150 * 64 / (200 + 10 * i))}.png"] for i in range(5)]
    assert sorted(dali.fallback.calls) == ["anim.gif", "badcrc.png"]
    # The batch failed, was bisected down to the two culprits, and the pipeline was rebuilt each time.
    assert dali.runs[0] == 7 and dali.runs.count(1) >= 2
    # What DALI rendered is what it renders alone in a healthy pipeline.
    assert np.array_equal(pixels(only(dali.render(*items[0]))), pixels(only(results[0])))


@pytest.mark.parametrize("count", [1, 2, MAX_BATCH - 1, MAX_BATCH, MAX_BATCH + 1, 2 * MAX_BATCH + 1])
def test_batches_of_every_size_keep_their_order(tmp_path: Path, count: int) -> None:
    dali = cpu_dali()
    sizes = [(120 + 16 * i, 90 + 8 * (i % 3)) for i in range(count)]
    items = [
        item(tmp_path, f"img{i}.jpg", images.photo_like(w, h, seed=50 + i), sizes="64", format="png")
        for i, (w, h) in enumerate(sizes)
    ]
    results = dali.render_batch(items)
    expected_runs = [MAX_BATCH] * (count // MAX_BATCH) + ([count % MAX_BATCH] if count % MAX_BATCH else [])
    assert dali.runs == expected_runs and dali.fallback.calls == []
    for i, ((w, h), result) in enumerate(zip(sizes, results, strict=True)):
        r = only(result)
        assert (r.name, r.width, r.height) == (f"thumb_img{i}_64x{round(h * 64 / w)}.png", 64, round(h * 64 / w))
        alone = only(dali.render(*items[i]))
        assert np.array_equal(pixels(r), pixels(alone))


def test_concurrent_callers_share_one_pipeline(tmp_path: Path) -> None:
    dali = cpu_dali()
    items = [item(tmp_path, f"c{i}.jpg", images.photo_like(160, 120, seed=60 + i), sizes="48") for i in range(6)]
    expected = [pixels(only(dali.render(*it))) for it in items]
    failures: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(3):
                i = (k + j) % len(items)
                assert np.array_equal(pixels(only(dali.render(*items[i]))), expected[i])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures


# -- what DALI takes ---------------------------------------------------------------------------------------------------


REFUSALS = {
    "jpeg": (lambda: images.photo_like(64, 48), None),
    "oriented-jpeg": (lambda: images.oriented_jpeg(8), None),
    "progressive-jpeg": (lambda: images.encode(images.marked_image(64, 48), "progressive-jpeg"), "progressive"),
    "grey-jpeg": (lambda: images.grey_jpeg([0, 128, 255]), None),
    "png": (lambda: images.marked_image(64, 48).pngsave_buffer(), None),
    "webp": (lambda: images.encode(images.marked_image(64, 48), "webp"), None),
    "p3-png": (lambda: images.p3_tagged([(220, 40, 40)]), None),
    "cmyk": (images.cmyk_jpeg, "cmyk"),
    "alpha": (images.rgba_png, "alpha"),
    "grey-alpha": (lambda: images.from_array(np.zeros((8, 8, 2), np.uint8)).pngsave_buffer(), "alpha"),
    "16-bit": (lambda: images.png16([(1, 2, 3)]), "not 8-bit"),
    "tiff": (lambda: images.encode(images.marked_image(64, 48), "tiff"), "tiff"),
    "gif": (lambda: images.animated("gif"), "gif"),
    "animated-webp": (lambda: images.animated("webp"), "animated WebP"),
    "too-many-pixels": (lambda: images.jpeg_with_sof_size(9000, 9000), "one-shot cap"),
    "truncated": (images.truncated_jpeg, "ends in the middle"),
    "corrupt": (images.corrupt_jpeg, "restart marker"),
    "short-png": (lambda: images.photo_like_image(300, 200).pngsave_buffer()[:4000], "IEND"),
}


@pytest.mark.parametrize("kind", list(REFUSALS))
def test_what_dali_takes_and_what_it_leaves_to_vips(tmp_path: Path, kind: str) -> None:
    maker, expected = REFUSALS[kind]
    data = maker()
    fmt = sniff(data[:32])
    header = open_image(images.write(tmp_path / "x", data), fmt, access="sequential")
    placements = plan(header.width, header.height, ThumbnailSpec(sizes="32"))
    reason = DaliBackend("cpu", max_pixels=50_000_000).refusal(fmt, header, data, placements)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason


def test_a_cover_past_the_overflow_budget_is_left_to_vips(tmp_path: Path) -> None:
    strip = images.from_array(np.zeros((4000, 2, 3), np.uint8)).pngsave_buffer()
    header = open_image(images.write(tmp_path / "strip.png", strip), "png")
    dali = DaliBackend("cpu")
    assert dali.refusal("png", header, strip, plan(2, 4000, ThumbnailSpec(sizes="512", fit="cover")))
    assert dali.refusal("png", header, strip, plan(2, 4000, ThumbnailSpec(sizes="512", fit="inside"))) is None


# -- the JPEG structure walk ------------------------------------------------------------------------------------------


def _with_restart_interval(interval: int) -> bytes:
    return images.photo_like_image(200, 120, seed=70).jpegsave_buffer(Q=90, restart_interval=interval)


@pytest.mark.parametrize(
    "maker",
    [
        lambda: images.photo_like(333, 217, seed=71),
        lambda: images.encode(images.photo_like_image(333, 217), "progressive-jpeg"),
        lambda: images.grey_jpeg([0, 50, 200]),
        lambda: images.oriented_jpeg(6),
        images.cmyk_jpeg,
        lambda: images.p3_tagged([(1, 2, 3)], fmt="jpeg"),
        lambda: _with_restart_interval(2),
        lambda: images.photo_like_image(64, 48).jpegsave_buffer(Q=90, subsample_mode="off"),
        lambda: images.solid_image(4000, 3000, (128, 128, 128)).jpegsave_buffer(Q=50),  # tiny data, many blocks
        lambda: images.photo_like(64, 48) + b"trailing bytes after EOI",
    ],
    ids=["baseline", "progressive", "grey", "exif", "cmyk", "icc", "restarts", "444", "flat-4000x3000", "trailing"],
)
def test_jpeg_walk_passes_sound_files(maker) -> None:
    data = maker()
    pyvips.Image.new_from_buffer(data, "", fail_on="warning").copy_memory()  # libvips agrees it is sound
    assert jpeg_damage(data) is None


def _restarts_swapped() -> bytes:
    data = bytearray(_with_restart_interval(2))
    first = data.index(b"\xff\xd0")
    second = data.index(b"\xff\xd1", first)
    data[first + 1], data[second + 1] = 0xD1, 0xD0
    return bytes(data)


@pytest.mark.parametrize(
    "maker, reason",
    [
        (images.truncated_jpeg, "ends in the middle of its image data"),
        (lambda: images.photo_like(64, 64)[:300], "runs past the end"),
        (lambda: images.photo_like(64, 64)[:-2], "ends in the middle of its image data"),
        (images.corrupt_jpeg, "no restart interval"),
        (_restarts_swapped, "out of sequence"),
        (lambda: images.jpeg_with_sof_size(2000, 2000), "too short for the 2000x2000"),
        (lambda: b"\xff\xd8\xff\xe0", "ends inside a segment"),
        (lambda: b"\x89PNG", "start-of-image"),
    ],
    ids=["truncated", "headers-only", "no-eoi", "stray-restart", "restarts-swapped", "sof-lies", "stub", "not-jpeg"],
)
def test_jpeg_walk_finds_damage(maker, reason: str) -> None:
    found = jpeg_damage(maker())
    assert found is not None and reason in found, found


def test_png_and_webp_truncation_is_found() -> None:
    png = images.photo_like_image(100, 80).pngsave_buffer()
    webp = images.encode(images.photo_like_image(100, 80), "webp")
    assert file_check("png", png)[0] is None and file_check("webp", webp)[0] is None
    assert "IEND" in file_check("png", png[:-20])[0]
    assert "RIFF" in file_check("webp", webp[:-20])[0]


def test_the_bad_crc_png_is_what_the_failure_test_needs(tmp_path: Path) -> None:
    """Sanity of `bad_crc_png`: the structure walk passes it, so only the decoders can tell."""
    data = bad_crc_png()
    assert file_check("png", data)[0] is None
    with pytest.raises(pyvips.Error):
        pyvips.Image.pngload_buffer(data, fail_on="truncated").copy_memory()


# -- the protocol, and the GPU ----------------------------------------------------------------------------------------


def test_render_raises_what_its_batch_returns(tmp_path: Path) -> None:
    dali = cpu_dali()
    with pytest.raises(CorruptImage):
        dali.render(*item(tmp_path, "t.jpg", images.truncated_jpeg(), sizes="64"))
    assert dali.name == "dali"
    with pytest.raises(ValueError):
        DaliBackend("tpu")


def test_the_gpu_graph_is_defined_with_every_decoder_option() -> None:
    """Without a GPU the mixed pipeline cannot be built, but DALI checks its operators' arguments when it is defined
    (nvJPEG's hardware-decoder load, preallocation hints and paddings are `mixed`-only arguments)."""
    hints = {"preallocate_width_hint": 4000, "preallocate_height_hint": 3000}
    dali = DaliBackend("gpu", device_id=0, hw_decoder_load=0.9, max_batch=12, num_threads=3, **hints)
    pipe = dali.define()
    assert (pipe.max_batch_size, pipe.device_id, pipe.num_threads) == (12, 0, 3)
    # Defining is a real check of the decoder's arguments: a misspelt one is refused here, without a GPU.
    dali.decoder_options["hw_decoder_lod"] = 0.9
    with pytest.raises(KeyError, match="hw_decoder_lod"):
        dali.define()


GPU_REASON = dali_unavailable("gpu")


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"no GPU for the mixed decoder: {GPU_REASON}")
def test_gpu_pipeline_agrees_with_the_cpu_pipeline(tmp_path: Path) -> None:
    gpu = DaliBackend("gpu", device_id=0, max_batch=8, num_threads=2, fallback=RecordingVips())
    cpu = cpu_dali(max_batch=8)
    items = [
        item(tmp_path, f"g{i}.jpg", images.photo_like(1200 + 64 * i, 900, seed=80 + i), sizes="256,96", format="png")
        for i in range(6)
    ]
    items.append(item(tmp_path, "o6.jpg", images.oriented_jpeg(6), sizes="160", format="png"))
    items.append(item(tmp_path, "t.jpg", images.truncated_jpeg(), sizes="64"))
    on_gpu, on_cpu = gpu.render_batch(items), cpu.render_batch(items)
    assert isinstance(on_gpu[-1], CorruptImage)
    assert_marked_upright(pixels(only(on_gpu[-2])))
    for g, c in zip(on_gpu[:-1], on_cpu[:-1], strict=True):
        for name, array in arrays(g).items():
            assert psnr(array, arrays(c)[name]) >= 35.0, name  # nvJPEG's IDCT is not libjpeg-turbo's
    assert gpu.fallback.calls == ["t.jpg"]
    gpu.close()
