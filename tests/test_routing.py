"""Backend choice per node, routing per image, and one spec every backend obeys.

- Selection (`gpu_worker.backend_choice`): THUMBIFY_BACKEND=cpu runs vips; auto without CUDA runs vips and logs why; gpu
  without CUDA stops the worker at start with the reason.
- Routing (`gpu_worker.backends.route`): the router on the `cpu` devices of DALI and tiles (what CI has) sends each
  image of one batch by pixels, format and pages, and an image DALI refuses or fails on to vips, never failing the
  others; the GPU render process (`gpu_worker.pool`) answers batches, and a batch that overruns costs only its slow
  image; a worker running the router batches its jobs and finishes every one of them.
- Spec conformance: the same cases (sizes, fits, crops, formats, EXIF orientation 6, CMYK → sRGB) through every
  backend this machine has — vips, dali and tiles on cpu, the router, and their GPU variants where CUDA is usable —
  against the vips backend's output.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips
from support import images
from support.backends import (
    CAP,
    DALI_MISSING,
    GPU_MISSING,
    OPENCV_MISSING,
    TILES_MISSING,
    needs_dali,
    needs_gpu,
    needs_opencv,
    needs_tiles,
    no_gpu,
)
from support.renditions import MAGIC, assert_marked_upright, close, decode, item, only, pixels, psnr
from support.service import PYTHON, ROOT, clean_env

from gpu_worker import backend_choice
from gpu_worker.backends.base import Refused, Rendition
from gpu_worker.backends.route import RoutedBackend, decide, route, source_size
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend, configure_vips
from gpu_worker.pool import BatchRenderer, RenderPool
from thumbify.errors import CorruptImage, ImageTimeout
from thumbify.probe import probe, sniff
from thumbify.settings import Settings
from thumbify.spec import EXTENSIONS, Keep, ThumbnailSpec

pytestmark = pytest.mark.timeout(120)


def names(result) -> list[str] | Exception:
    return result if isinstance(result, Exception) else [r.name for r in result]


def bad_crc_png() -> bytes:
    """Damaged PNG image data: DALI's structure walk lets it through, its decoder fails, and so does libvips."""
    data = bytearray(images.photo_like_image(120, 80, seed=8).pngsave_buffer())
    at = data.index(b"IDAT")
    data[at + 4 + int.from_bytes(data[at - 4 : at], "big") // 2] ^= 0x55
    return bytes(data)


# -- selection ---------------------------------------------------------------------------------------------------------


def test_settings_name_the_backend_and_the_dali_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.backend == "auto" and s.dali_max_batch == 16 and s.one_shot_max_pixels == 64_000_000
    monkeypatch.setenv("THUMBIFY_BACKEND", "gpu")
    monkeypatch.setenv("THUMBIFY_DALI_MAX_BATCH", "32")
    s = Settings()
    assert (s.backend, s.dali_max_batch) == ("gpu", 32)
    router = RoutedBackend.from_settings(s, "cpu", name="gpu")
    assert router.name == "gpu" and router.dali_options["max_batch"] == 32
    assert router.dali_options["max_pixels"] == s.one_shot_max_pixels
    monkeypatch.setenv("THUMBIFY_BACKEND", "tpu")
    with pytest.raises(ValueError, match="backend"):
        Settings()


def test_cpu_runs_vips_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "thumbify.worker"):
        backend = backend_choice.select_backend(Settings(backend="cpu"))
    assert isinstance(backend, VipsBackend)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend:")]
    assert "vips" in line and "THUMBIFY_BACKEND=cpu" in line


def test_the_resample_headroom_setting_reaches_every_backend() -> None:
    assert Settings().resample_headroom == DEFAULT_HEADROOM
    assert backend_choice.select_backend(Settings(backend="cpu", resample_headroom=1.0)).headroom == 1.0
    routed = RoutedBackend.from_settings(Settings(resample_headroom=1.3), "cpu")
    assert routed.headroom == routed.vips.headroom == routed.dali_options["headroom"] == 1.3


@no_gpu
def test_auto_without_cuda_runs_vips_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, "thumbify.worker"):
        backend = backend_choice.select_backend(Settings(backend="auto"))
    assert isinstance(backend, VipsBackend)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend:")]
    assert "vips" in line and GPU_MISSING in line, line


@pytest.mark.service
@no_gpu
def test_gpu_without_cuda_stops_the_worker_at_start(tmp_path: Path) -> None:
    with pytest.raises(backend_choice.BackendUnavailable, match="THUMBIFY_BACKEND=gpu, but"):
        backend_choice.select_backend(Settings(backend="gpu"))
    # The worker itself: it exits with the reason, before it ever talks to Redis.
    env = clean_env(backend="gpu", redis_url="redis://127.0.0.1:9", data_dir=tmp_path)
    done = subprocess.run([PYTHON, "-m", "gpu_worker"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"cannot run the GPU backends: {GPU_MISSING}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.gpu
@needs_gpu
def test_auto_with_a_gpu_runs_the_router() -> None:
    backend = backend_choice.select_backend(Settings(backend="auto"))
    assert isinstance(backend, RoutedBackend) and backend.name == "auto" and backend.defer_vips


def test_gpu_unavailable_names_the_missing_piece() -> None:
    reason = backend_choice.gpu_unavailable(0)
    if reason is None:
        assert backend_choice.gpu_unavailable(10_000) is not None  # no node has that many devices
    else:
        assert any(word in reason for word in ("CuPy", "CUDA", "DALI")), reason


# -- the first cut: route() ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "hint", "expected"),
    [
        ("jpeg", (4000, 3000, 1), "dali"),
        ("png", (800, 600, 1), "dali"),
        ("webp", (800, 600, 1), "dali"),
        ("jpeg", (20000, 20000, 1), "tiles"),  # over the cap, whatever the format
        ("tiff", (20000, 20000, 1), "tiles"),
        ("tiff", (800, 600, 1), "vips"),  # a format DALI does not decode here
        ("gif", (64, 48, 1), "vips"),
        ("heif", (800, 600, 1), "vips"),
        ("gif", (64, 48, 3), "vips"),  # pages or frames: vips, even over the cap
        ("webp", (20000, 20000, 2), "vips"),
    ],
)
def test_route_by_format_pixels_and_pages(fmt: str, hint: tuple[int, int, int], expected: str) -> None:
    where, reason = route(fmt, hint, 64_000_000)
    assert where == expected, reason
    assert reason


@needs_dali
def test_route_sends_dali_what_its_decoders_take() -> None:
    from gpu_worker.backends import dali
    from gpu_worker.backends import route as route_module

    assert route_module.DALI_FORMATS == dali.DALI_FORMATS


@pytest.mark.service
def test_the_worker_imports_without_numpy_or_dali() -> None:
    """A CPU-only install has neither: the worker's import path (and its backend choice) must not need them."""
    code = (
        "import sys; import gpu_worker.__main__, gpu_worker.worker, gpu_worker.pool, gpu_worker.backends.route; "
        "print(sorted(m for m in ('numpy', 'nvidia.dali', 'cupy', 'kernels') if m in sys.modules))"
    )
    done = subprocess.run([PYTHON, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_size_from_the_probed_source(tmp_path: Path) -> None:
    path = images.write(tmp_path / "a.jpg", images.oriented_jpeg(6, 320, 160))
    source = probe(path, 10**9).public("a.jpg")
    assert source_size(source) == (320, 160, 1)
    assert source_size({"format": "jpeg", "bytes": 1}) is None
    assert source_size({"width": "x", "height": 2}) is None


def test_decide_reads_the_header_only_where_the_job_has_no_size(tmp_path: Path) -> None:
    path = images.write(tmp_path / "a.jpg", images.photo_like(320, 240, seed=9))
    assert decide(path, "jpeg", None, 64_000_000) == "dali"
    assert decide(path, "jpeg", None, 320 * 240 - 1) == "tiles"
    assert decide(path, "jpeg", (320, 240, 2), 64_000_000) == "vips"  # the probed size is taken as it is
    broken = images.write(tmp_path / "b.jpg", b"\xff\xd8\xff\xe0 not a header")
    assert decide(broken, "jpeg", None, 64_000_000) == "vips"  # vips says what is wrong with it


# -- the router, on the cpu devices ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router() -> RoutedBackend:
    if DALI_MISSING:
        pytest.skip(DALI_MISSING)
    configure_vips(1)
    backend = RoutedBackend("cpu", num_threads=1, max_batch=8, one_shot_max_pixels=CAP, strip_rows=64)
    backend.start()
    yield backend
    backend.close()


def poison(router: RoutedBackend, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make every DALI pipeline run that includes the file `name` fail, as a decoder crash would."""
    dali = router.dali
    real = type(dali)._run

    def run(self, samples):
        if any(sample.ctx.path.name == name for sample in samples):
            raise RuntimeError(f"[injected] DALI cannot decode {name}")
        return real(self, samples)

    monkeypatch.setattr(dali, "_run", run.__get__(dali))


@needs_dali
def test_one_batch_goes_where_each_image_belongs_and_bad_ones_fail_alone(
    router: RoutedBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison(router, monkeypatch, "poisoned.jpg")
    cases = [
        ("good.jpg", images.photo_like(480, 360, seed=1), "dali", ["thumb_good_128x96.png"]),
        ("good.webp", images.encode(images.photo_like_image(300, 200, seed=2), "webp", Q=95), "dali", None),
        ("anim.gif", images.animated("gif"), "vips", ["thumb_anim_64x48.png"]),  # a format DALI does not take
        ("cmyk.jpg", images.cmyk_jpeg(), "vips", None),  # DALI refuses it after reading the header
        ("poisoned.jpg", images.photo_like(320, 240, seed=3), "vips", ["thumb_poisoned_128x96.png"]),
        ("badcrc.png", bad_crc_png(), "vips", CorruptImage),  # fails in DALI, then in vips: only itself
        ("good.png", images.marked_image(300, 200).pngsave_buffer(), "dali", ["thumb_good_128x85.png"]),
    ]
    if TILES_MISSING is None:
        cases.append(("huge.jpg", images.photo_like(960, 720, seed=4), "tiles", ["thumb_huge_128x96.png"]))
    items = [item(tmp_path, name, data, sizes="128", format="png") for name, data, _, _ in cases]
    results = router.render_batch(items)
    assert router.last_routes == [where for _, _, where, _ in cases]
    for (name, _, _, expected), result, it in zip(cases, results, items, strict=True):
        if expected is CorruptImage:
            assert isinstance(result, CorruptImage), (name, result)
            continue
        assert not isinstance(result, Exception), (name, result)
        if expected:
            assert names(result) == expected, name
        # Whatever rendered it, it is what the vips backend makes of it.
        for ours, theirs in zip(result, VipsBackend().render(*it), strict=True):
            assert (ours.name, ours.width, ours.height) == (theirs.name, theirs.width, theirs.height)
            assert psnr(pixels(ours), pixels(theirs)) >= 35.0, name


@needs_dali
def test_routes_decided_by_the_caller_are_not_decided_again(router: RoutedBackend, tmp_path: Path) -> None:
    jpeg = item(tmp_path, "a.jpg", images.photo_like(200, 150, seed=5), sizes="64", format="png")
    router.render_batch([jpeg, jpeg], routes=["dali", "vips"])
    assert router.last_routes == ["dali", "vips"]  # the worker sent the second to vips (say, it has two pages)
    seen: list[int] = []
    router.render_batch([jpeg], on_result=lambda index, result: seen.append(index))
    assert seen == [0]


@needs_dali
def test_a_dali_batch_that_fails_whole_goes_to_vips(
    router: RoutedBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(items, on_result=None, routes=None):
        raise RuntimeError("[injected] the pipeline cannot be built")

    monkeypatch.setattr(router.dali, "render_batch", broken)
    items = [item(tmp_path, f"g{i}.jpg", images.photo_like(200, 150, seed=i), sizes="64") for i in range(3)]
    results = router.render_batch(items)
    assert [names(r) for r in results] == [[f"thumb_g{i}_64x48.jpg"] for i in range(3)]
    assert router.last_routes == ["vips"] * 3


@needs_dali
@needs_tiles
def test_tiles_failing_is_retried_on_vips_but_a_corrupt_file_is_not(
    router: RoutedBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = item(tmp_path, "big.jpg", images.photo_like(960, 720, seed=6), sizes="100", format="png")
    truncated = item(tmp_path, "t.jpg", images.truncated_jpeg(960, 720), sizes="100")
    real = type(router.tiles)._render_or_refuse

    def flaky(self, item):
        if item[0].name == "big.jpg":
            raise MemoryError("[injected] out of memory on the device")
        return real(self, item)

    monkeypatch.setattr(router.tiles, "_render_or_refuse", flaky.__get__(router.tiles))
    good, bad = router.render_batch([big, truncated])
    assert names(good) == ["thumb_big_100x75.png"] and router.last_routes == ["vips", "tiles"]
    assert isinstance(bad, CorruptImage)


@needs_dali
def test_defer_vips_leaves_those_images_to_the_caller(tmp_path: Path) -> None:
    backend = RoutedBackend("cpu", num_threads=1, defer_vips=True)
    items = [
        item(tmp_path, "a.jpg", images.photo_like(200, 150, seed=7), sizes="64"),
        item(tmp_path, "cmyk.jpg", images.cmyk_jpeg(), sizes="64"),
        item(tmp_path, "anim.gif", images.animated("gif"), sizes="64"),
    ]
    good, cmyk, gif = backend.render_batch(items)
    assert names(good) == ["thumb_a_64x48.jpg"]
    assert isinstance(cmyk, Refused) and isinstance(gif, Refused)
    assert backend.last_routes == ["dali", "vips", "vips"]
    backend.close()


def test_the_timings_hook_is_filled_per_stage_by_every_backend(tmp_path: Path) -> None:
    """The benchmarks read each backend's stage times from the `timings` dict it is given (no monkeypatching)."""
    # A PNG: no shrink on load, so the tiles backend's strip driver has something to resample.
    it = item(tmp_path, "a.png", images.marked_image(640, 480).pngsave_buffer(), sizes="128,64", format="png")
    finishing = {"finish+encode", "encode"}
    made: dict[str, Callable] = {"vips": lambda t: VipsBackend(timings=t)}
    if TILES_MISSING is None:
        from gpu_worker.backends.tiles import TilesBackend

        made["tiles"] = lambda t: TilesBackend("cpu", timings=t)
    if DALI_MISSING is None:
        from gpu_worker.backends.dali import DaliBackend

        made["dali"] = lambda t: DaliBackend("cpu", num_threads=1, timings=t)
        made["router"] = lambda t: RoutedBackend("cpu", num_threads=1, timings=t)
    expected = {"vips": finishing, "tiles": finishing | {"resize"}, "dali": finishing | {"dali-run", "copy"}}
    expected["router"] = expected["dali"]
    for name, make in made.items():
        timings: dict[str, float] = {}
        assert names(make(timings).render(*it)) == ["thumb_a_128x96.png", "thumb_a_64x48.png"], name
        assert set(timings) == expected[name] and all(v > 0 for v in timings.values()), (name, timings)


# -- the GPU render process: batches in a child --------------------------------------------------------------------


@pytest.mark.service  # a render process (multiprocessing's spawn, which the audit hook does not see)
@needs_dali
def test_batches_in_a_render_process_and_a_slow_image_fails_alone(tmp_path: Path) -> None:
    small = [item(tmp_path, f"s{i}.jpg", images.photo_like(320, 240, seed=10 + i), sizes="64") for i in range(4)]
    cmyk = item(tmp_path, "cmyk.jpg", images.cmyk_jpeg(), sizes="64")
    truncated = item(tmp_path, "t.jpg", images.truncated_jpeg(), sizes="64")
    slow = item(tmp_path, "slow.png", images.slow_avif_source(), sizes="4096", format="avif")

    async def main() -> None:
        backend = RoutedBackend("cpu", num_threads=1, max_batch=8, defer_vips=True)
        pool = RenderPool(Settings(image_timeout_s=20, vips_concurrency=1), backend, size=1)
        batches = BatchRenderer(pool, max_batch=8, wait_s=0.5, more_coming=lambda: True)
        await batches.start()
        try:

            async def one(it) -> list[str] | Refused | Exception:
                try:
                    result = await batches.render(*it)
                    return result if isinstance(result, Refused) else names(result)
                except Exception as exc:  # noqa: BLE001 - the outcome is what is checked
                    return exc

            # Six requests at once: one batch of six (the oldest waits at most wait_s for company).
            got = await asyncio.gather(*(one(it) for it in [*small, cmyk, truncated]))
            assert got[:4] == [[f"thumb_s{i}_64x48.jpg"] for i in range(4)]
            assert isinstance(got[4], Refused)  # DALI refuses CMYK: the worker renders it on vips
            assert isinstance(got[5], Refused)  # DALI finds the damage: vips gives the readable error
            assert batches.sizes == {6: 1}
            [before] = batches.pids()

            # A batch of three whose middle image overruns 3 x 1 s: the first answered, the child replaced, the
            # other two tried alone — the slow one fails (image-timeout), the last one renders.
            pool.timeout = 1.0
            started = time.monotonic()
            got = await asyncio.gather(one(small[0]), one(slow), one(small[1]))
            assert got[0] == ["thumb_s0_64x48.jpg"] and got[2] == ["thumb_s1_64x48.jpg"], got
            assert isinstance(got[1], ImageTimeout) and "longer than 1s" in got[1].detail, got[1]
            assert batches.sizes[3] == 1 and time.monotonic() - started < 60
            assert pool.replaced == 2 and batches.pids() != [before]
        finally:
            await batches.close()
        assert batches.pids() == []

    asyncio.run(main())


def test_only_dali_images_that_would_miss_the_next_batch_are_taken_back() -> None:
    from gpu_worker.pool import SPILLED

    async def main() -> None:
        gpu = BatchRenderer(RenderPool(Settings(), VipsBackend(), size=1), max_batch=4, wait_s=1)
        spec = ThumbnailSpec(sizes="64")
        routes = ["dali"] * 5 + ["tiles"]
        futures = [gpu.submit(Path(f"{i}.jpg"), "jpeg", spec, str(i), r) for i, r in enumerate(routes)]
        # Idle GPU: the first four make its next batch; of the two past it only the DALI one spills.
        assert gpu.take_spillable(10) == 1
        assert [f.done() for f in futures] == [False] * 4 + [True, False] and futures[4].result() is SPILLED
        # A batch rendering: every waiting DALI image would wait for it; the newest go first, as many as asked.
        gpu.busy = True
        assert gpu.take_spillable(2) == 2 and [f.done() for f in futures[2:4]] == [True, True]
        assert gpu.take_spillable(0) == 0 and not futures[1].done()
        assert gpu.take_spillable(10) == 2 and not futures[5].done()  # tiles stays

    asyncio.run(main())


@pytest.mark.service  # render processes
@needs_dali
def test_under_load_dali_images_spill_to_idle_vips_processes_and_a_lone_one_goes_to_the_gpu(tmp_path: Path) -> None:
    from gpu_worker.renderers import Renderers

    photos = [item(tmp_path, f"p{i}.jpg", images.photo_like(640, 480, seed=40 + i), sizes="96") for i in range(24)]
    settings = Settings(image_timeout_s=60, vips_concurrency=1)

    async def main(spill: bool) -> tuple[dict, list[list[str]], list[str]]:
        vips = RenderPool(settings, VipsBackend(), size=2)
        gpu_pool = RenderPool(settings, RoutedBackend("cpu", num_threads=1, max_batch=4, defer_vips=True), size=1)
        gpu = BatchRenderer(gpu_pool, max_batch=4, wait_s=0.05)
        await asyncio.gather(vips.start(), gpu.start())
        renderers = Renderers(vips, gpu, spill)
        try:
            lone = names(await renderers.render(*photos[0], "dali"))
            assert dict(renderers.counts) == {("dali", "routed"): 1}, "a lone image goes to the idle GPU"
            got = await asyncio.gather(*(renderers.render(*it, "dali") for it in photos))
            return dict(renderers.counts), [names(r) for r in got], lone
        finally:
            await asyncio.gather(vips.close(), gpu.close())

    counts, got, lone = asyncio.run(main(spill=True))
    assert lone == ["thumb_p0_96x72.jpg"]
    assert got == [[f"thumb_p{i}_96x72.jpg"] for i in range(24)]
    # Both worked: the GPU process on batches, the idle vips processes on what arrived while a batch rendered.
    assert counts[("dali", "routed")] > 1 and counts[("vips", "spilled")] > 0, counts
    assert sum(counts.values()) == 25, counts

    counts, got, _ = asyncio.run(main(spill=False))
    assert got == [[f"thumb_p{i}_96x72.jpg"] for i in range(24)]
    assert counts == {("dali", "routed"): 25}, counts


# -- a worker running the router ------------------------------------------------------------------------------------


@needs_dali
@pytest.mark.parametrize("spill", [False, True], ids=["no-spill", "spill"])
def test_a_worker_on_the_router_batches_and_finishes_every_job(redis_server: str, tmp_path: Path, spill: bool) -> None:
    from gpu_worker.worker import Worker
    from thumbify.jobs import JobStore, new_job_id
    from thumbify.keyspace import Keys
    from thumbify.queue import JobQueue
    from thumbify.redis_conn import connect
    from thumbify.storage import open_storage, original_key

    settings = Settings(
        redis_url=redis_server,
        key_prefix=f"r{uuid.uuid4().hex[:8]}",
        data_dir=tmp_path / "data",
        image_processes=1,
        batch_wait_ms=300,
        dali_max_batch=8,
        dali_threads=1,
        one_shot_max_pixels=CAP,
        tiles_strip_rows=64,
        gpu_spill=spill,
    )
    uploads = {
        **{f"p{i}.jpg": images.photo_like(400 + 16 * i, 300, seed=20 + i) for i in range(6)},
        "anim.gif": images.animated("gif"),  # routed to the vips processes before the GPU sees it
        "cmyk.jpg": images.cmyk_jpeg(),  # refused by DALI in the GPU process, rendered on vips
        "truncated.jpg": images.truncated_jpeg(),  # a permanent failure, readable
        "big.jpg": images.photo_like(800, 600, seed=30),  # over the cap: tiles (or vips while tiles is not ready)
    }

    async def main() -> dict[str, str]:
        redis = connect(settings.redis_url)
        keys = Keys(settings.key_prefix)
        store, queue = JobStore(redis, keys), JobQueue(redis, keys)
        await queue.ensure_group()
        storage = open_storage(settings)
        ids = {}
        for name, data in uploads.items():
            job_id = new_job_id()
            path = images.write(tmp_path / name, data)
            await storage.put_bytes(original_key(job_id), data)
            record = store.record(job_id, probe(path, 10**9).public(name), ThumbnailSpec(sizes="96"), path.stem)
            async with redis.pipeline(transaction=True) as pipe:
                store.add_to(pipe, job_id, record)
                queue.add_to(pipe, job_id)
                await pipe.execute()
            ids[name] = job_id
        backend = RoutedBackend.from_settings(settings, "cpu", name="gpu", defer_vips=True)
        worker = Worker(settings, backend, name="router-test")
        run = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                jobs = {n: await store.get(i) for n, i in ids.items()}
                if all(j.status in ("done", "failed") for j in jobs.values()):
                    break
                await asyncio.sleep(0.1)
            assert worker.gpu is not None and len(worker.gpu.pids()) == 1 and len(worker.pool.pids()) == 1
            sizes = dict(worker.gpu.sizes)
            spilled = worker.renderers.counts["vips", "spilled"]
        finally:
            worker.stop()
            await asyncio.wait_for(run, 60)
            await redis.aclose()
        # The GIF never reached the GPU process; the rest did, in batches of more than one, but for those an idle
        # vips process took while the GPU was busy (spill).
        assert sum(n * c for n, c in sizes.items()) + spilled == len(uploads) - 1, (sizes, spilled)
        assert max(sizes) > 1 and (spill or not spilled), (sizes, spilled)
        for name, job in jobs.items():
            if name != "truncated.jpg":
                assert job.status == "done" and job.thumbnails, (name, job.error)
        assert jobs["truncated.jpg"].status == "failed"
        assert jobs["truncated.jpg"].error["type"].endswith("corrupt-image")
        return {n: j.thumbnails[0].name for n, j in jobs.items() if j.thumbnails}

    got = asyncio.run(main())
    assert got["p0.jpg"] == "thumb_p0_96x72.jpg" and got["anim.gif"] == "thumb_anim_64x48.jpg"
    assert got["big.jpg"] == "thumb_big_96x72.jpg" and got["cmyk.jpg"].startswith("thumb_cmyk_96x")


# -- one spec, every backend ---------------------------------------------------------------------------------------


def _cmyk_colours(renditions: list[Rendition]) -> None:
    array = pixels(only(renditions))
    for i, colour in enumerate(images.CMYK_PATCHES):
        x, y = images.patch_centre(i)
        assert close(array[y - 4 : y + 5, x - 4 : x + 5].reshape(-1, 3).mean(axis=0), colour, 12), i


def _upright(renditions: list[Rendition]) -> None:
    assert_marked_upright(pixels(only(renditions)))


def _padded(renditions: list[Rendition]) -> None:
    array = pixels(only(renditions))
    assert array.shape == (90, 160, 3)
    assert close(array[45, :10].mean(axis=0), (0x33, 0x66, 0x99), 3)  # the pad, left of a 4:3 picture


def _progressive(renditions: list[Rendition]) -> None:
    assert images.jpeg_sof(only(renditions).data) == 0xC2


def _interlaced(renditions: list[Rendition]) -> None:
    assert images.png_interlace(only(renditions).data) == 1


def _srgb_profile(renditions: list[Rendition]) -> None:
    assert images.is_srgb_profile(decode(only(renditions)).get("icc-profile-data"))


def _rights_without_gps(renditions: list[Rendition]) -> None:
    image = decode(only(renditions))
    assert images.COPYRIGHT in image.get("exif-ifd0-Copyright")
    assert not [f for f in image.get_fields() if "GPS" in f or f == "exif-ifd0-Make"]


def _facts_on_the_smallest(renditions: list[Rendition]) -> None:
    assert [r.facts is not None for r in renditions] == [False, True]  # read off the 64 px one, carried on it
    assert len(renditions[1].facts["dhash"]) == 16 and renditions[1].facts["transparent"] is False


def _photo(w: int, h: int, seed: int) -> Callable[[], bytes]:
    return lambda: images.photo_like(w, h, seed=seed)


# name: (source, spec, expected names, extra check)
CASES: dict[str, tuple[Callable[[], bytes], dict, list[str], Callable[[list[Rendition]], None] | None]] = {
    "sizes": (_photo(640, 480, 1), {"sizes": "256,100x60,32"}, ["256x192", "80x60", "32x24"], None),
    "inside-no-enlarge": (_photo(200, 150, 2), {"sizes": "400"}, ["200x150"], None),
    "cover-centre": (_photo(640, 480, 3), {"sizes": "200x200", "fit": "cover"}, ["200x200"], None),
    "cover-attention": (
        _photo(640, 480, 4),
        {"sizes": "120x200", "fit": "cover", "crop": "attention"},
        ["120x200"],
        None,
    ),
    "fill": (_photo(640, 480, 5), {"sizes": "150x150", "fit": "fill"}, ["150x150"], None),
    "contain": (
        _photo(640, 480, 6),
        {"sizes": "160x90", "fit": "contain", "background": "#336699"},
        ["160x90"],
        _padded,
    ),
    "webp": (_photo(640, 480, 7), {"sizes": "128", "format": "webp"}, ["128x96"], None),
    "avif": (_photo(640, 480, 8), {"sizes": "128", "format": "avif"}, ["128x96"], None),
    "jpeg": (_photo(640, 480, 9), {"sizes": "128", "format": "jpeg"}, ["128x96"], None),
    "orientation-6": (lambda: images.oriented_jpeg(6, 320, 160), {"sizes": "160"}, ["160x80"], _upright),
    "cmyk-to-srgb": (images.cmyk_jpeg, {"sizes": "192"}, None, _cmyk_colours),
    "png-source": (
        lambda: images.photo_like_image(500, 300, seed=10).pngsave_buffer(),
        {"sizes": "200"},
        ["200x120"],
        None,
    ),
    # The encoder options: every backend honours them (the GPU ones in the shared finishing step), none refuses.
    "progressive-jpeg": (_photo(640, 480, 11), {"sizes": "128", "progressive": True}, ["128x96"], _progressive),
    "interlaced-png": (
        _photo(640, 480, 12),
        {"sizes": "128", "format": "png", "progressive": True},
        ["128x96"],
        _interlaced,
    ),
    "keep-icc": (_photo(640, 480, 13), {"sizes": "128", "keep": "icc"}, ["128x96"], _srgb_profile),
    "keep-copyright": (
        images.jpeg_with_rights_and_gps,
        {"sizes": "128", "format": "webp", "keep": "copyright"},
        ["128x96"],
        _rights_without_gps,
    ),
    "effort-webp": (_photo(640, 480, 14), {"sizes": "128", "format": "webp", "effort": 6}, ["128x96"], None),
    "effort-avif": (_photo(640, 480, 15), {"sizes": "128", "format": "avif", "effort": 0}, ["128x96"], None),
    "no-optimize-coding": (_photo(640, 480, 16), {"sizes": "128", "optimize_coding": False}, ["128x96"], None),
    # Facts: read in the shared finishing step too, so no backend refuses them.
    "facts": (_photo(640, 480, 18), {"sizes": "128,64", "facts": True}, ["128x96", "64x48"], _facts_on_the_smallest),
    # animated=true on a still renders as without, wherever the still goes (the animations: test_animated_*).
    "animated-still": (_photo(640, 480, 18), {"sizes": "128", "format": "webp", "animated": True}, ["128x96"], None),
    # The focal and face crops: the shared finishing step crops, so no backend refuses them.
    "cover-focal": (
        _photo(640, 480, 17),
        {"sizes": "120x200", "fit": "cover", "crop": "focal", "fx": 0.2, "fy": 0.7},
        ["120x200"],
        None,
    ),
    "cover-faces": (
        lambda: images.face_at(800, 400, 560, 120, 120).jpegsave_buffer(Q=95),
        {"sizes": "200", "fit": "cover", "crop": "faces"},
        ["200x200"],
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_backend_obeys_the_spec(any_backend, tmp_path: Path, case: str) -> None:
    make, spec, sizes, check = CASES[case]
    if spec.get("crop") == "faces" and OPENCV_MISSING:
        pytest.skip(OPENCV_MISSING)
    data = make()
    path, fmt, thumb_spec, stem = item(tmp_path, f"src.{sniff(data[:32])}", data, **spec)
    ours = any_backend.render(path, fmt, thumb_spec, stem)
    theirs = VipsBackend().render(path, fmt, thumb_spec, stem)
    out = thumb_spec.format
    if sizes is not None:
        ext = EXTENSIONS[out]
        assert [r.name for r in ours] == [f"thumb_src_{s}.{ext}" for s in sizes]
    assert [(r.name, r.width, r.height, r.format) for r in ours] == [
        (r.name, r.width, r.height, r.format) for r in theirs
    ]
    for r, v in zip(ours, theirs, strict=True):
        assert MAGIC[r.format](r.data), r.name
        image = decode(r)
        assert image.interpretation in ("srgb", "b-w") and image.bands in (1, 3), r.name  # sRGB, no alpha
        if thumb_spec.keep is Keep.none:
            assert not image.get_typeof("exif-data") and not image.get_typeof("icc-profile-data"), r.name
        score = psnr(pixels(r), pixels(v))
        assert score >= 35.0, f"{r.name}: {score:.1f} dB against the vips backend"
    if check is not None:
        check(ours)


def test_the_spec_suite_covers_what_the_issue_names() -> None:
    specs = [spec for _, spec, _, _ in CASES.values()]
    assert {s.get("fit", "inside") for s in specs} == {"inside", "cover", "fill", "contain"}
    assert {s.get("format", "jpeg") for s in specs} >= {"jpeg", "webp", "avif"}
    assert {s.get("crop", "centre") for s in specs} == {"centre", "attention", "focal", "faces"}
    assert "orientation-6" in CASES and "cmyk-to-srgb" in CASES
    assert any("," in s["sizes"] for s in specs)  # several sizes from one decode
    # The encoder options, each set away from its default.
    assert {s.get("keep", "none") for s in specs} == {"none", "icc", "copyright"}
    assert {s.get("format", "jpeg") for s in specs if s.get("progressive")} == {"jpeg", "png"}
    assert {s["format"] for s in specs if "effort" in s} == {"webp", "avif"}
    assert any(s.get("optimize_coding") is False for s in specs)
    assert any(s.get("facts") for s in specs)
    assert any(s.get("animated") for s in specs)


@needs_dali
def test_encoder_options_keep_the_route(router: RoutedBackend, tmp_path: Path) -> None:
    """No backend refuses an encoder option (or facts): the images stay where their pixels send them, and are what
    vips makes."""
    options = {"progressive": True, "keep": "copyright", "optimize_coding": True, "facts": True}
    cases = [("cam.jpg", images.jpeg_with_rights_and_gps(), "dali"), ("cmyk.jpg", images.cmyk_jpeg(), "vips")]
    if TILES_MISSING is None:
        cases.append(("huge.jpg", images.photo_like(960, 720, seed=17), "tiles"))
    items = [item(tmp_path, name, data, sizes="128", **options) for name, data, _ in cases]
    results = router.render_batch(items)
    assert router.last_routes == [where for _, _, where in cases]
    for result, it in zip(results, items, strict=True):
        r, theirs = only(result), only(VipsBackend().render(*it))
        assert images.jpeg_sof(r.data) == 0xC2 and r.facts and r.facts["dhash"]
        assert decode(r).get_typeof("exif-ifd3-GPSLatitude") == 0
        assert psnr(pixels(r), pixels(theirs)) >= 35.0
    assert images.COPYRIGHT in decode(only(results[0])).get("exif-ifd0-Copyright")


@needs_dali
def test_animated_goes_to_vips_and_stills_keep_their_route(router: RoutedBackend, tmp_path: Path) -> None:
    """animated=true: an animation goes to vips, the only backend that renders every frame (GIF or WebP, whatever
    the output); a still with the option, or `format=gif`, stays where its pixels send it; each is what vips makes."""
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220)]
    cases = [
        ("a.gif", images.animated("gif", colours, 96, 72, delays=[50, 120, 80], loop=3), "webp", "vips"),
        ("a.webp", images.animated("webp", colours, 96, 72, delays=[50, 120, 80], loop=3), "gif", "vips"),
        ("still.jpg", images.photo_like(320, 240, seed=19), "webp", "dali"),
        ("still-gif.jpg", images.photo_like(320, 240, seed=20), "gif", "dali"),
    ]
    if TILES_MISSING is None:
        cases.append(("huge.jpg", images.photo_like(960, 720, seed=21), "webp", "tiles"))
    items = [item(tmp_path, name, data, sizes="48", format=out, animated=True) for name, data, out, _ in cases]
    results = router.render_batch(items)
    assert router.last_routes == [where for *_, where in cases]
    for result, it, (name, *_) in zip(results, items, cases, strict=True):
        r, theirs = only(result), only(VipsBackend().render(*it))
        assert (r.name, r.width, r.height, r.format) == (theirs.name, theirs.width, theirs.height, theirs.format)
        image = pyvips.Image.new_from_buffer(r.data, "", n=-1)
        pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
        if name.startswith("a."):
            assert pages == 3 and image.get("delay") == [50, 120, 80] and image.get("loop") == 3
            for i, colour in enumerate(colours):
                frame = image.crop(0, i * r.height, r.width, r.height)
                assert close([frame.extract_band(b).avg() for b in range(3)], colour, 8), (name, i)
        else:
            assert pages == 1
            # GIF's 256-colour palette, dithered, turns small differences of the resample into larger ones.
            assert psnr(pixels(r), pixels(theirs)) >= (28.0 if r.format == "gif" else 35.0)


@pytest.mark.parametrize(
    "options", [{"crop": "focal", "fx": 0.9, "fy": 0.1}, pytest.param({"crop": "faces"}, marks=needs_opencv)]
)
def test_crop_options_keep_the_route(router: RoutedBackend, tmp_path: Path, options: dict) -> None:
    """The focal and face crops happen in the shared finishing step: DALI and tiles keep their images, and crop
    them as vips does."""
    cases = [("face.jpg", images.face_at(800, 400, 560, 120, 120).jpegsave_buffer(Q=95), "dali")]
    cases.append(("cmyk.jpg", images.cmyk_jpeg(), "vips"))
    if TILES_MISSING is None:
        cases.append(("huge.jpg", images.photo_like(960, 720, seed=18), "tiles"))
    items = [item(tmp_path, name, data, sizes="160x100", fit="cover", **options) for name, data, _ in cases]
    results = router.render_batch(items)
    assert router.last_routes == [where for _, _, where in cases]
    for result, it in zip(results, items, strict=True):
        r, theirs = only(result), only(VipsBackend().render(*it))
        assert (r.width, r.height) == (160, 100)
        assert psnr(pixels(r), pixels(theirs)) >= 35.0
