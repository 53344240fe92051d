"""GPU against CPU: the same corpus through `vips` (every host core), `dali` and `tiles`, on the GPU and on the CPU.

    python -m benchmarks.gpu_vs_cpu [--quick] [--out FILE.json] [--jsonl FILE] [--corpus DIR] [--photos N]
                                    [--huge-side PX] [--backends dali,tiles,router,vips] [--cpu-twins]
                                    [--groups photos,web,huge] [--sizes 256] [--format jpeg] [--batch 16]
                                    [--processes N] [--row-timeout S]

Corpus (benchmarks/corpus.py, made where missing): 12 MP JPEGs (`photos`), the web-size mix (`web`: JPEG, one with
EXIF orientation 6, PNG with alpha, WebP) and one huge JPEG of `--huge-side`² pixels (`huge`, 20000² = 400 MP).

Rows, one per (backend, group), each in a fresh process so that memory peaks are its own:
  vips        the vips backend in a pool of `--processes` processes (default: every core), one image each at a time
              (libvips concurrency 1): the worker's CPU path
  dali        the DALI backend on the GPU (`mixed` decoder: nvJPEG and the hardware JPEG decoder), batches of
              `--batch`, host finishing and encoding in the calling thread (the worker's GPU render process)
  tiles       the tiles backend on the GPU: libvips strips → CuPy kernels, one image at a time
  dali-cpu, tiles-cpu   the same graphs on CPU operators / the NumPy twin (what a machine without a GPU can run)
  router      the routed backend on the GPU (dali, tiles past the one-shot cap, vips for what DALI refuses), as
              the worker's GPU render process runs it; `router-cpu` the same on the CPU devices
  node        what a GPU node's worker runs: the router in one GPU render process fed batches, beside
              `--node-processes` vips render processes (default: every core but two), with spill
              (gpu_worker/renderers.py: idle vips processes take the DALI images that would wait for the GPU); as
              many images in flight as the worker holds; `routes` says how many each took; `node-cpu` on CPU devices
GPU rows run first, then vips; the CPU twins only with `--cpu-twins` (one per GPU backend asked for). Each row is
written as it finishes, as one JSON line (to `--jsonl` and stdout), so a run stopped part-way keeps every row it
finished. A GPU row where CUDA, CuPy or DALI is missing is written as unavailable, with the reason; `dali` over the
one-shot pixel cap is not applicable (tiles takes those images).

No CPU number is reported as a GPU one: DALI's `mixed` decoder falls back to the CPU where libnvjpeg does not load,
so each dali/router GPU row records whether `libnvjpeg.so` is mapped in its process (/proc/self/maps) and fails
where it is not; where `nvidia-smi` is, the peak load of the hardware JPEG decoder during the row (`nvidia-smi dmon
-s u`, its `jpg` column) says whether the hardware decoder carried it.

Measured per row: images/s and source megapixels/s (after one warm-up image or batch, not counted); per-stage time
per image — decode, resize, copy (device to host), finish (host crop/colour/pad), encode — from the backends' own
stage timings (the `timings` dict they fill as they render): DALI's decode alone comes from a decode-only pipeline
over the same batches and its resize is the rest of the pipeline run; vips fuses decode and resize in one streamed
pipeline, so its split comes from a staged pass over a few images; tiles' resize is its strip driver and its copy the
host↔device copies, both timed on the GPU with CUDA events (a host timer around a launch only times the queueing),
and its decode the rest of its render's wall time.
Also the peak of GPU memory in use on the device during the row (above what it was before) and of the resident
memory of the row's process tree. Output: a table, JSON (`--out`) and a PNG plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

from benchmarks.common import (
    DEFAULT_CORPUS,
    PYTHON,
    RESULTS,
    ROOT,
    MemorySampler,
    mib,
    proc_status,
    table,
    write_json,
)
from thumbify.settings import Settings

GROUPS = ("photos", "web", "huge")
BACKENDS = ("vips", "dali", "tiles", "dali-cpu", "tiles-cpu", "router", "router-cpu", "node", "node-cpu")
DEFAULT_BACKENDS = "dali,tiles,router,node,vips"
GPU_BACKENDS = ("dali", "tiles", "router", "node")
HARDWARE_JPEG = ("dali", "router", "node")  # GPU rows that decode JPEG with nvJPEG
STAGES = ("decode", "resize", "copy", "finish", "encode")
HUGE_SIDE = 20000  # 400 MP
ONE_SHOT_MAX_PIXELS = Settings.model_fields["one_shot_max_pixels"].default


# -- what each row needs ---------------------------------------------------------------------------------------------


def unavailable(backend: str) -> str | None:
    """Why `backend` cannot run on this machine, or None."""
    gpu = backend in GPU_BACKENDS
    if backend.startswith(("dali", "router", "node")):
        from gpu_worker.backends.dali import dali_unavailable

        reason = dali_unavailable("gpu" if gpu else "cpu")
        if reason:
            return reason
    if backend.startswith(("tiles", "router", "node")):
        try:
            from gpu_worker.backends.tiles import tiles_unavailable
        except Exception as exc:  # noqa: BLE001 - the module is not there yet, or broken
            return f"the tiles backend does not import ({type(exc).__name__}: {exc})"
        reason = tiles_unavailable("gpu" if gpu else "cpu")
        if reason:
            return reason
    return None


def not_applicable(backend: str, group: str, pixels: int) -> str | None:
    if backend.startswith("dali") and pixels > ONE_SHOT_MAX_PIXELS:
        return f"over the one-shot cap of {ONE_SHOT_MAX_PIXELS:,} px: tiles takes it"
    return None


# -- stage timing (in the row's process): the backends fill this dict per stage ----------------------------------------

TIMES: dict[str, float] = defaultdict(float)


def timed_dali(device: str, batch: int):
    from gpu_worker.backends.dali import DaliBackend
    from gpu_worker.backends.vips import VipsBackend

    class CountingVips(VipsBackend):
        handed = 0

        def render(self, *args):
            CountingVips.handed += 1
            return super().render(*args)

    backend = DaliBackend(
        device,
        device_id=0 if device == "gpu" else None,
        max_batch=batch,
        num_threads=4,
        fallback=CountingVips(),
        timings=TIMES,
    )
    backend.start()
    return backend, CountingVips


def dali_decode_seconds(device: str, batches: list[list]) -> float:
    """Decode alone: a decode-only pipeline (the backend's decoder, its options) over the same batches."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    gpu = device == "gpu"
    size = max(len(b) for b in batches)

    @pipeline_def(batch_size=size, num_threads=4, device_id=0 if gpu else None, prefetch_queue_depth=1)
    def decode_only():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        return fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)

    pipe = decode_only()
    pipe.build()
    total = 0.0
    for n, batch in enumerate([batches[0][:1], *batches]):  # the first run only warms the decoder up
        data = [np.frombuffer(Path(path).read_bytes(), np.uint8) for path, *_ in batch]
        pipe.feed_input("encoded", data)
        started = time.perf_counter()
        pipe.run()
        if n:
            total += time.perf_counter() - started
    return total


def vips_stage_pass(items: list) -> dict[str, float]:
    """vips fuses decode and resize in one streamed pipeline: time them apart on a few images — the backend's
    shrink-on-load decode into memory, then one Lanczos-3 resize to the largest size, then the encode."""
    from gpu_worker.backends.context import prepare
    from gpu_worker.backends.decode import load_source
    from gpu_worker.backends.finishing import encode, resize
    from gpu_worker.backends.vips import VipsBackend

    backend = VipsBackend()
    totals: dict[str, float] = defaultdict(float)
    for item in items:
        ctx = prepare(item)
        target_w, target_h = ctx.largest
        t0 = time.perf_counter()
        source, _ = load_source(ctx, backend.headroom)
        image = source.image.copy_memory()
        t1 = time.perf_counter()
        small = resize(image, target_w / source.extent_w, target_h / source.extent_h).copy_memory()
        t2 = time.perf_counter()
        encode(small.colourspace("srgb") if small.bands < 3 else small, ctx.spec)
        t3 = time.perf_counter()
        totals["decode"] += t1 - t0
        totals["resize"] += t2 - t1
        totals["encode"] += t3 - t2
    return {k: v / len(items) for k, v in totals.items()}


# -- one row, in its own process ----------------------------------------------------------------------------------


def _vips_init() -> None:
    from gpu_worker.backends.vips import configure_vips
    from gpu_worker.memory import limit_malloc_arenas

    limit_malloc_arenas()
    configure_vips(1)


def _vips_one(item) -> int:
    from gpu_worker.backends.vips import VipsBackend

    return len(VipsBackend().render(*item))


def run_row(args: dict) -> dict:
    """One (backend, group) row: throughput after a warm-up, stage times per image. Printed as JSON."""
    from gpu_worker.backends.vips import configure_vips
    from thumbify.probe import sniff
    from thumbify.spec import ThumbnailSpec

    configure_vips(1)
    backend, batch = args["backend"], args["batch"]
    spec = ThumbnailSpec(sizes=args["sizes"], format=args["format"])
    items = []
    for name in args["files"]:
        path = Path(name)
        with open(path, "rb") as fh:
            items.append((path, sniff(fh.read(32)), spec, path.stem))
    warm, timed = items[:1], items
    errors: list[str] = []
    extra: dict = {}

    def check(results) -> None:
        errors.extend(f"{type(r).__name__}: {r}" for r in results if isinstance(r, Exception))

    if backend == "vips":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        procs = args["processes"]
        with ProcessPoolExecutor(procs, multiprocessing.get_context("spawn"), initializer=_vips_init) as pool:
            list(pool.map(_vips_one, items[:procs]))  # every process warm
            started = time.perf_counter()
            list(pool.map(_vips_one, timed))
            seconds = time.perf_counter() - started
        stages = vips_stage_pass(items[: min(4, len(items))])
        extra["processes"] = procs
    elif backend.startswith("dali"):
        device = "cpu" if backend.endswith("-cpu") else "gpu"
        dali, counter = timed_dali(device, batch)
        chunks = [timed[i : i + batch] for i in range(0, len(timed), batch)]
        dali.render_batch(warm)
        TIMES.clear()
        counter.handed = 0
        started = time.perf_counter()
        for chunk in chunks:
            check(dali.render_batch(chunk))
        seconds = time.perf_counter() - started
        decode = dali_decode_seconds(device, chunks)
        stages = {
            "decode": decode,
            "resize": max(0.0, TIMES["dali-run"] - decode),
            "copy": TIMES["copy"],
            "finish": TIMES["finish+encode"] - TIMES["encode"],
            "encode": TIMES["encode"],
        }
        stages = {k: v / len(timed) for k, v in stages.items()}
        extra["via_vips"] = counter.handed
        extra["batch"] = batch
        if device == "gpu":
            extra["libnvjpeg"] = mapped("libnvjpeg.so")
    elif backend.startswith("tiles"):
        from gpu_worker.backends.tiles import TilesBackend

        device = "cpu" if backend.endswith("-cpu") else "gpu"
        tiles = TilesBackend(device, strip_rows=args["strip_rows"], timings=TIMES)
        tiles.render(*warm[0])
        TIMES.clear()
        started = time.perf_counter()
        for it in timed:
            try:
                tiles.render(*it)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        stages = {
            "decode": seconds - TIMES["resize"] - TIMES["copy"] - TIMES["finish+encode"],
            "resize": TIMES["resize"],
            "copy": TIMES["copy"],
            "finish": TIMES["finish+encode"] - TIMES["encode"],
            "encode": TIMES["encode"],
        }
        if device == "cpu":
            del stages["copy"]
        stages = {k: v / len(timed) for k, v in stages.items()}
    elif backend.startswith("node"):
        device = "cpu" if backend.endswith("-cpu") else "gpu"
        seconds, routes, gpu_pid = run_node(device, items, args, errors)
        stages = {}
        extra["routes"] = routes
        extra["processes"] = args["node_processes"]
        if device == "gpu":
            extra["libnvjpeg"] = mapped("libnvjpeg.so", gpu_pid)
    else:  # router, router-cpu
        from gpu_worker.backends.route import RoutedBackend

        device = "cpu" if backend.endswith("-cpu") else "gpu"
        router = RoutedBackend(device, max_batch=batch, strip_rows=args["strip_rows"], timings=TIMES)
        router.start()
        router.render_batch(warm)
        TIMES.clear()
        router.routes.clear()
        started = time.perf_counter()
        for i in range(0, len(timed), batch):
            check(router.render_batch(timed[i : i + batch]))
        seconds = time.perf_counter() - started
        stages = {"finish": TIMES["finish+encode"] - TIMES["encode"], "encode": TIMES["encode"]}
        stages = {k: v / len(timed) for k, v in stages.items()}
        extra["routes"] = dict(router.routes)
        if device == "gpu":
            extra["libnvjpeg"] = mapped("libnvjpeg.so")
    return {"seconds": seconds, "images": len(timed), "stages_s": stages, "errors": errors[:5], **extra}


def run_node(device: str, items: list, args: dict, errors: list[str]) -> tuple[float, dict[str, int], int]:
    """The node row: seconds for `items`, images per backend and why (`Renderers.counts`), the GPU process's pid."""
    import asyncio

    from gpu_worker.backends.route import RoutedBackend, decide
    from gpu_worker.backends.vips import VipsBackend
    from gpu_worker.pool import BatchRenderer, RenderPool
    from gpu_worker.renderers import Renderers, jobs_in_flight

    processes, batch = args["node_processes"], args["batch"]
    settings = Settings(dali_max_batch=batch, tiles_strip_rows=args["strip_rows"], vips_concurrency=1)
    routes = [decide(path, fmt, None, settings.one_shot_max_pixels) for path, fmt, *_ in items]
    in_flight = jobs_in_flight(processes, batch)  # as many as the worker holds

    async def main() -> tuple[float, dict[str, int], int]:
        vips = RenderPool(settings, VipsBackend(settings.resample_headroom), processes)
        gpu_backend = RoutedBackend.from_settings(settings, device, name="gpu", defer_vips=True)
        gpu = BatchRenderer(RenderPool(settings, gpu_backend, size=1), batch, settings.batch_wait_ms / 1000)
        await asyncio.gather(vips.start(), gpu.start())
        renderers = Renderers(vips, gpu, settings.gpu_spill)
        try:
            # Warm: every vips process, and the GPU process on one batch.
            await asyncio.gather(
                *(renderers.render(*it, "vips") for it in items[:processes]),
                *(renderers.render(*it, r) for it, r in list(zip(items, routes, strict=True))[:batch]),
            )
            before = renderers.counts.copy()
            todo = list(zip(items, routes, strict=True))

            async def feed() -> None:
                while todo:
                    it, where = todo.pop(0)
                    try:
                        await renderers.render(*it, where)
                    except Exception as exc:  # noqa: BLE001 - counted and reported
                        errors.append(f"{type(exc).__name__}: {exc}")

            started = time.perf_counter()
            await asyncio.gather(*(feed() for _ in range(in_flight)))
            seconds = time.perf_counter() - started
            counts = renderers.counts - before
            return seconds, {f"{b}/{why}": n for (b, why), n in sorted(counts.items())}, gpu.pids()[0]
        finally:
            await asyncio.gather(vips.close(), gpu.close())

    return asyncio.run(main())


def mapped(library: str, pid: int | str = "self") -> str | None:
    """The path of `library` where process `pid` (this one by default) has it mapped (/proc/PID/maps), else None."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        if library in line:
            return line.split(maxsplit=5)[-1]
    return None


# -- the parent: corpus, rows in subprocesses, sampling ---------------------------------------------------------------


class TreeSampler(MemorySampler):
    """Peaks, while a row runs: resident memory of a process and its descendants (summed), and GPU memory in use on
    the device (cudaMemGetInfo, all processes) above what it was at the start."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(pid, interval)
        self.rss_peak = 0
        self.gpu_peak: int | None = None
        self._gpu_base = _gpu_used()

    def _run(self) -> None:
        while True:
            rss = sum(proc_status(pid).get("VmRSS", 0) for pid in _tree(self.pid))
            self.rss_peak = max(self.rss_peak, rss)
            used = _gpu_used()
            if used is not None and self._gpu_base is not None:
                self.gpu_peak = max(self.gpu_peak or 0, used - self._gpu_base)
            if self._stop.wait(self.interval):
                return


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return pids


_GPU = {"checked": False, "ok": False}


def _gpu_used() -> int | None:
    """Bytes in use on CUDA device 0 (every process), or None without CuPy and a device."""
    if not _GPU["checked"]:
        _GPU["checked"] = True
        try:
            import kernels

            _GPU["ok"] = kernels.cuda_available()
        except Exception:  # noqa: BLE001
            _GPU["ok"] = False
    if not _GPU["ok"]:
        return None
    import cupy

    free, total = cupy.cuda.runtime.memGetInfo()
    return total - free


def gpu_info() -> dict:
    if _gpu_used() is None:
        return {}
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    return {
        "name": name.decode() if isinstance(name, bytes) else name,
        "memory_bytes": props["totalGlobalMem"],
        "driver": cupy.cuda.runtime.driverGetVersion(),
        "runtime": cupy.cuda.runtime.runtimeGetVersion(),
    }


class JpegEngineSampler:
    """The peak load (%) of the GPU's hardware JPEG decoders while a row runs: `nvidia-smi dmon -s u`, its `jpg`
    column, once a second. `peak` stays None where nvidia-smi is missing or has no such column."""

    def __init__(self) -> None:
        self.peak: int | None = None
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> JpegEngineSampler:
        if shutil.which("nvidia-smi"):
            argv = ["nvidia-smi", "dmon", "-s", "u", "-i", "0", "-d", "1"]
            self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate()
        column = None
        for line in out.splitlines():
            fields = line.lstrip("#").split()
            if line.startswith("#") and "jpg" in fields:
                column = fields.index("jpg")
            elif column is not None and len(fields) > column and fields[column].isdigit():
                self.peak = max(self.peak or 0, int(fields[column]))


def run_in_child(args: dict, timeout: float) -> dict:
    """`run_row(args)` in a fresh interpreter, sampled from here."""
    argv = [PYTHON, "-m", "benchmarks.gpu_vs_cpu", "--row", json.dumps(args)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hardware_jpeg = args["backend"] in HARDWARE_JPEG
    with TreeSampler(proc.pid) as sampler, JpegEngineSampler() if hardware_jpeg else nullcontext() as engine:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for pid in reversed(_tree(proc.pid)):
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            proc.communicate()
            return {"status": f"timed out after {timeout:g}s"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return {"status": f"failed (exit {proc.returncode}): {tail[:400]}"}
    result = json.loads(lines[-1])
    result.update(status="ok", rss_peak=sampler.rss_peak, gpu_peak=sampler.gpu_peak)
    if hardware_jpeg:
        result["jpeg_engine_peak_pct"] = engine.peak
        if result.get("libnvjpeg") is None:  # the mixed decoder ran on the CPU: not a GPU number
            result["status"] = (
                "failed: libnvjpeg.so is not mapped in the row's process (the decoder fell back to the CPU)"
            )
    return result


def build_corpus(root: Path, photos: int, huge_side: int) -> dict[str, list[Path]]:
    from benchmarks import corpus

    made = corpus.ensure(root, photos, web=True, huge=False)
    return {"photos": made.photos, "web": made.web, "huge": [corpus.make_huge(root, side=huge_side)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.gpu_vs_cpu")
    parser.add_argument("--quick", action="store_true", help="4 photos, the web mix, the 400 MP image; one pass")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_vs_cpu.json", help="JSON result (PNG beside it)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--photos", type=int, default=32, help="12 MP JPEGs (default 32; --quick: 4)")
    parser.add_argument("--huge-side", type=int, default=HUGE_SIDE, help="side of the huge JPEG (20000 = 400 MP)")
    parser.add_argument("--backends", default=DEFAULT_BACKENDS, help=f"comma-separated, of {', '.join(BACKENDS)}")
    parser.add_argument("--cpu-twins", action="store_true", help="also each GPU backend's CPU twin (dali-cpu, ...)")
    parser.add_argument("--jsonl", type=Path, help="append each row here as one JSON line as soon as it finishes")
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--sizes", default="256")
    parser.add_argument("--format", default="jpeg")
    parser.add_argument("--batch", type=int, default=16, help="DALI batch size")
    parser.add_argument("--strip-rows", type=int, default=256)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="vips processes (all cores)")
    parser.add_argument(
        "--node-processes", type=int, help="vips processes beside the GPU one in the node rows (default: 2 fewer)"
    )
    parser.add_argument("--row-timeout", type=float, default=600.0, help="seconds before a row is stopped")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(json.loads(args.row))), flush=True)
        return 0

    backends = [b for b in args.backends.split(",") if b]
    groups = [g for g in args.groups.split(",") if g]
    for name in backends:
        if name not in BACKENDS:
            parser.error(f"unknown backend {name!r}")
    if args.cpu_twins:
        backends += [f"{b}-cpu" for b in backends if b in GPU_BACKENDS and f"{b}-cpu" not in backends]
    backends.sort(key=lambda b: b not in GPU_BACKENDS)  # GPU rows first: what a short GPU lease is for
    photos = 4 if args.quick and args.photos == 32 else args.photos
    started = time.perf_counter()
    print(f"corpus in {args.corpus}: {photos} photos, the web mix, a {args.huge_side}² JPEG", flush=True)
    files = build_corpus(args.corpus, photos, args.huge_side)
    print(f"corpus ready in {time.perf_counter() - started:.0f}s", flush=True)
    pixels = {g: [_pixels(p) for p in files[g]] for g in GROUPS}
    gpu = gpu_info()
    emit({"gpu": gpu, "sizes": args.sizes, "format": args.format}, args.jsonl)
    rows = []
    for backend in backends:
        reason = unavailable(backend)
        for group in groups:
            row = {"backend": backend, "group": group, "files": len(files[group])}
            na = not_applicable(backend, group, max(pixels[group]))
            if reason or na:
                row["status"] = f"unavailable: {reason}" if reason else f"n/a: {na}"
            else:
                print(f"{backend} × {group} ...", flush=True)
                job = {
                    "backend": backend,
                    "files": [str(p) for p in files[group]],
                    "sizes": args.sizes,
                    "format": args.format,
                    "batch": args.batch,
                    "strip_rows": args.strip_rows,
                    "processes": args.processes,
                    "node_processes": args.node_processes or max(1, args.processes - 2),
                }
                row.update(run_in_child(job, args.row_timeout))
                if row["status"] == "ok":
                    row["images_per_s"] = row["images"] / row["seconds"]
                    row["megapixels_per_s"] = sum(pixels[group]) / 1e6 / row["seconds"]
            rows.append(row)
            emit(row, args.jsonl)
    report(rows, gpu, args)
    data = {
        "gpu": gpu,
        "spec": {"sizes": args.sizes, "format": args.format},
        "corpus": {g: {"files": len(files[g]), "megapixels": sum(pixels[g]) / 1e6} for g in GROUPS},
        "rows": rows,
    }
    path = write_json("gpu_vs_cpu", data, args.out)
    plot = plot_rows(rows, args.out.with_suffix(".png"), gpu.get("name", "no GPU"))
    print(f"wrote {path}" + (f" and {plot}" if plot else "") + f" in {time.perf_counter() - started:.0f}s")
    broken = [r for r in rows if r["status"].startswith(("failed", "timed"))]
    return 1 if broken else 0


def emit(record: dict, jsonl: Path | None) -> None:
    """One JSON line, on stdout and appended to `jsonl`, flushed: it survives whatever stops the run next."""
    line = json.dumps(record, default=str)
    print(line, flush=True)
    if jsonl is not None:
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(jsonl, "a") as fh:
            fh.write(line + "\n")


def _pixels(path: Path) -> int:
    import pyvips

    image = pyvips.Image.new_from_file(str(path))
    return image.width * image.height


def report(rows: list[dict], gpu: dict, args) -> None:
    cells = []
    for r in rows:
        stages = r.get("stages_s", {})
        cells.append(
            [
                r["backend"],
                r["group"],
                r.get("images", r["files"]),
                r.get("images_per_s"),
                r.get("megapixels_per_s"),
                *[None if s not in stages else stages[s] * 1000 for s in STAGES],
                mib(r.get("gpu_peak")),
                mib(r.get("rss_peak")),
                "" if r["status"] == "ok" else r["status"][:70],
            ]
        )
    table(
        f"GPU vs CPU — {args.sizes} px {args.format}; GPU: {gpu.get('name', 'none')}",
        ["backend", "group", "images", "img/s", "MP/s", *[f"{s} ms" for s in STAGES], "GPU MiB", "RSS MiB", "note"],
        cells,
        note="stage times are per image; GPU MiB = peak device memory in use above the start; RSS = process tree",
    )


def plot_rows(rows: list[dict], path: Path, gpu_name: str) -> Path | None:
    """Images/s per row as horizontal bars: matplotlib when installed, else drawn with libvips."""
    done = [r for r in rows if r["status"] == "ok"]
    if not done:
        return None
    labels = [f"{r['backend']} · {r['group']}" for r in done]
    values = [r["images_per_s"] for r in done]
    title = f"thumbnails/s by backend and corpus group (GPU: {gpu_name})"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _vips_bars(labels, values, title, path)
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(labels) + 1.3))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color="#4878a8")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("images/s (log scale)")
    ax.set_title(title, fontsize=10)
    for yi, v in zip(y, values, strict=True):
        ax.text(v, yi, f" {v:.1f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _vips_bars(labels: list[str], values: list[float], title: str, path: Path) -> Path:
    import math

    import pyvips

    width, row, left, right = 900, 26, 220, 120
    top = 40
    image = (pyvips.Image.black(width, top + row * len(labels) + 10, bands=3) + 255).cast("uchar")
    image = image.copy(interpretation="srgb")
    top_value = max(math.log10(max(values)) + 0.2, 1.0)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row
        bar = max(2, int((width - left - right) * max(0.0, math.log10(max(value, 1e-3)) + 1) / (top_value + 1)))
        image = image.draw_rect([72, 120, 168], left, y + 4, bar, row - 8, fill=True)
        image = _text(image, label, 8, y + 6)
        image = _text(image, f"{value:.1f}/s", left + bar + 6, y + 6)
    image = _text(image, title + " — log scale", 8, 10)
    image.pngsave(str(path))
    return path


def _text(image, text: str, x: int, y: int):
    """`text` in black at (x, y) of an sRGB image (unchanged where libvips has no fonts)."""
    import pyvips

    try:
        mask = pyvips.Image.text(text, dpi=90)
    except pyvips.Error:
        return image
    ink = mask.new_from_image([0, 0, 0]).bandjoin(mask).copy(interpretation="srgb")
    return image.composite2(ink, "over", x=x, y=y).extract_band(0, n=3).cast("uchar")


if __name__ == "__main__":
    sys.exit(main())
