"""CPU throughput on 12 MP JPEGs → 256 px JPEG: Thumbify against bare libvips and the peers, in one run.

    python -m benchmarks.cpu [--corpus DIR] [--photos 48 | --web 60] [--rounds 5] [--quick]
                             [--worker-variant NAME:VAR=VAL,VAR=VAL ...] [--skip sharp,pillow-simd,...]

Every method thumbnails the same files on the same cores, in interleaved rounds (the order rotates each round, and
a warm-up round is not counted), so a noisy machine affects all of them alike. Ratios are taken inside each round
and their median is reported. Methods:

  pyvips-pool      `Image.thumbnail(path, 256)` + `jpegsave_buffer(Q=80)`, a pool of os.cpu_count() threads,
                   libvips concurrency 1 (one image per thread)
  pyvips-serial    the same, one image at a time, libvips' default threading (concurrency = cores)
  pyvips-pool-cN   the pool with libvips' default concurrency too
  thumbify-render  our `VipsBackend.render` (spec: 256, jpeg, q80, inside) in the pool, concurrency 1;
                   thumbify-render-libvips the same with every JPEG decoded by libvips (`turbo=False`): the A/B
                   of the libjpeg-turbo decode (`decode.turbo_jpeg`)
  thumbify-worker  the real worker: a redis-server, jobs enqueued through JobStore/JobQueue with the originals
                   in local storage, one `python -m gpu_worker` process; first enqueue → last `done` event
  thumbify-procs   the same render in a pool of os.cpu_count() processes (the worker's arrangement, no queue);
                   thumbify-procs-libvips with `turbo=False`
  decode-floor     libjpeg-turbo's decode at 1/8 scale and nothing else (no resize, encode, queue or storage), one
                   process per core: the most any thumbnailer built on libjpeg-turbo can do on these files and cores
                   (every peer here uses it), so targets above it are out of reach by choice of settings
  decode-floor-pillow  the same with Pillow's `draft` decode (its wheels bundle libjpeg-turbo; libvips' and
                   sharp's bundle mozjpeg)
  pillow-*         Pillow `thumbnail` in a thread pool: `draft` (as its docs recommend), `default`
                   (reducing_gap=2), `nodraft` (full decode); pillow-simd the same, from its own venv
  sharp-*          sharp (node) with a promise pool: `pool` = concurrency 1 × cores in flight; `default` = sharp's
                   own concurrency × libuv's 4 in flight

Quality: after timing, each method's output for every file is made once more, losslessly (PNG) and as the JPEG it
serves, and compared with a float64 Lanczos-3 reference from the full decode (benchmarks/quality.py): `PSNR px` is
the resampling alone, `PSNR jpeg` what a client gets.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import BENCH, DEFAULT_CORPUS, PYTHON, bar_plot, summary, table, write_json
from benchmarks.quality import psnr, read_pixels, reference

SIZE = 256
QUALITY = 80
CORES = os.cpu_count() or 1
PEERS = BENCH / "peers"
SIMD_VENV = Path(os.environ.get("PILLOW_SIMD_VENV", "/tmp/venv-simd"))


def set_concurrency(n: int) -> None:
    pyvips.vips_lib.vips_concurrency_set(n)


def pool_run(fn: Callable[[Path], object], files: list[Path], threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, files):
            pass


class Method:
    """A way of making the thumbnails. `run(files)` → seconds; `outputs(files, dir)` writes <stem>.png/.jpg."""

    name = ""
    group = ""  # "pyvips", "sharp", "pillow", … (the best of a group stands for it)
    note = ""

    def setup(self, files: list[Path]) -> None: ...

    def run(self, files: list[Path]) -> float:
        raise NotImplementedError

    def outputs(self, files: list[Path], out: Path) -> None:
        raise NotImplementedError

    def close(self) -> None: ...


class BarePyvips(Method):
    group = "pyvips"

    def __init__(self, threads: int, concurrency: int, name: str) -> None:
        self.threads, self.concurrency, self.name = threads, concurrency, name
        self.note = f"{threads} thread(s) × libvips concurrency {concurrency}"

    @staticmethod
    def one(path: Path) -> bytes:
        return pyvips.Image.thumbnail(str(path), SIZE).jpegsave_buffer(Q=QUALITY)

    def run(self, files: list[Path]) -> float:
        set_concurrency(self.concurrency)
        started = time.perf_counter()
        if self.threads == 1:
            for f in files:
                self.one(f)
        else:
            pool_run(self.one, files, self.threads)
        return time.perf_counter() - started

    def outputs(self, files: list[Path], out: Path) -> None:
        set_concurrency(1)
        for f in files:
            img = pyvips.Image.thumbnail(str(f), SIZE).copy_memory()
            img.pngsave(str(out / f"{f.stem}.png"))
            (out / f"{f.stem}.jpg").write_bytes(img.jpegsave_buffer(Q=QUALITY))


class Render(Method):
    group = "thumbify"

    def __init__(
        self,
        threads: int,
        concurrency: int,
        name: str = "thumbify-render",
        headroom: float | None = None,
        turbo: bool = True,
    ):
        from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
        from thumbify.spec import ThumbnailSpec

        self.name, self.threads, self.concurrency = name, threads, concurrency
        self.backend = VipsBackend(headroom or DEFAULT_HEADROOM, turbo=turbo)
        self.spec = ThumbnailSpec(sizes=[str(SIZE)], format="jpeg", quality=QUALITY)
        self.png = ThumbnailSpec(sizes=[str(SIZE)], format="png")
        backend = f"VipsBackend(headroom={self.backend.headroom}, turbo={turbo})"
        self.note = f"{backend}, {threads} threads × concurrency {concurrency}"

    def one(self, path: Path, spec=None):
        return self.backend.render(path, "jpeg", spec or self.spec, path.stem)

    def run(self, files: list[Path]) -> float:
        set_concurrency(self.concurrency)
        started = time.perf_counter()
        pool_run(self.one, files, self.threads)
        return time.perf_counter() - started

    def outputs(self, files: list[Path], out: Path) -> None:
        set_concurrency(1)
        for f in files:
            (out / f"{f.stem}.png").write_bytes(self.one(f, self.png)[0].data)
            (out / f"{f.stem}.jpg").write_bytes(self.one(f)[0].data)


def _decode_at_eighth(path: Path) -> None:
    # What every libjpeg-turbo thumbnailer must do for a 12 MP → 256 px JPEG: the entropy decode of the whole file
    # (DCT scaling only skips the inverse transform of the AC coefficients, not reading them).
    pyvips.Image.jpegload(str(path), shrink=8, access="sequential").avg()


@functools.cache
def _process_render(turbo: bool = True) -> Render:
    return Render(1, 1, turbo=turbo)


def _pillow_decode_at_eighth(path: Path) -> None:
    from PIL import Image  # Pillow's wheels bundle libjpeg-turbo itself, not mozjpeg as libvips' and sharp's do

    with Image.open(path) as im:
        im.draft("RGB", (im.width // 8, im.height // 8))
        im.load()


def _render_in_process(path: Path) -> None:
    _process_render().one(path)


def _render_in_process_libvips(path: Path) -> None:
    _process_render(turbo=False).one(path)


class ProcessPool(Method):
    """`fn` on each file in a pool of one spawned process per core (warm: started in `setup`)."""

    def __init__(self, name: str, group: str, fn: Callable[[Path], None], note: str) -> None:
        self.name, self.group, self.fn, self.note = name, group, fn, note
        self.pool = None

    def setup(self, files: list[Path]) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from gpu_worker.backends.vips import configure_vips

        # Each process set up as the worker's render processes are (cache off, one libvips thread per image).
        self.pool = ProcessPoolExecutor(
            CORES, multiprocessing.get_context("spawn"), initializer=configure_vips, initargs=(1,)
        )
        list(self.pool.map(self.fn, files[:CORES]))  # start every process and load its modules

    def run(self, files: list[Path]) -> float:
        started = time.perf_counter()
        list(self.pool.map(self.fn, files))
        return time.perf_counter() - started

    def outputs(self, files: list[Path], out: Path) -> None:
        """Pixels: the decode floor makes none, and thumbify-procs makes thumbify-render's."""

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown()


class WorkerMethod(Method):
    group = "thumbify"

    def __init__(self, harness, name: str, env: dict[str, str], processes: int = 1) -> None:
        self.harness, self.name, self.env, self.processes = harness, name, env, processes
        self.prefix = f"bench-{name}".replace("[", "-").replace("]", "").replace(",", "-").replace("=", "")
        knobs = ", ".join(f"{k.removeprefix('THUMBIFY_').lower()}={v}" for k, v in env.items()) or "defaults"
        self.note = f"{processes} × python -m gpu_worker ({knobs}) via Redis"
        self.failures: list[str] = []

    def setup(self, files: list[Path]) -> None:
        self.harness.add_worker(self.prefix, self.env, self.processes)

    def run(self, files: list[Path]) -> float:
        result = self.harness.run_round(self.prefix, files)
        if result.failed:
            self.failures += [f"{k}: {v}" for k, v in result.failed.items()]
            raise RuntimeError(f"{len(result.failed)} job(s) failed, e.g. {next(iter(result.failed.values()))}")
        self.harness.clear(result.done)
        return result.seconds

    def outputs(self, files: list[Path], out: Path) -> None:
        # The worker's JPEGs; its pixels before encoding are thumbify-render's (same backend, same code).
        result = self.harness.run_round(self.prefix, files)
        for job_id, f in self._match(result.done, files):
            path = self.harness.thumbnail_path(job_id)
            if path:
                shutil.copyfile(path, out / f"{f.stem}.jpg")
        self.harness.clear(result.done)

    def _match(self, job_ids: list[str], files: list[Path]):
        import asyncio

        from thumbify.jobs import JobStore
        from thumbify.keyspace import Keys
        from thumbify.redis_conn import connect

        async def stems():
            redis = connect(self.harness.redis.url)
            store = JobStore(redis, Keys(self.prefix))
            jobs = await store.get_many(job_ids)
            await redis.aclose()
            return {j.id: j.stem for j in jobs}

        by_stem = {f.stem: f for f in files}
        for job_id, stem in asyncio.run(stems()).items():
            if stem in by_stem:
                yield job_id, by_stem[stem]


class Subprocess(Method):
    """A peer in another runtime; it times itself and prints JSON."""

    def __init__(self, name: str, group: str, argv: list[str], env: dict[str, str] | None = None, note: str = ""):
        self.name, self.group, self.argv, self.env, self.note = name, group, argv, env or {}, note
        self.list_file: Path | None = None
        self.version = ""

    def _call(self, files: list[Path], extra: list[str]) -> dict:
        self.list_file = self.list_file or Path(tempfile.mkstemp(prefix="bench-files-", suffix=".txt")[1])
        self.list_file.write_text("\n".join(str(f) for f in files) + "\n")
        proc = subprocess.run(
            [*self.argv, "--files", str(self.list_file), *extra],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            cwd=PEERS,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{self.name} failed: {proc.stderr.strip()[-800:]}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        if data["count"] != len(files):
            raise RuntimeError(f"{self.name}: {data['count']} of {len(files)} done")
        self.version = data.get("sharp") or data.get("pil") or ""
        return data

    def run(self, files: list[Path]) -> float:
        return float(self._call(files, [])["seconds"])

    def outputs(self, files: list[Path], out: Path) -> None:
        self._call(files, ["--out", str(out)])

    def close(self) -> None:
        if self.list_file:
            self.list_file.unlink(missing_ok=True)


def peers(skip: set[str]) -> tuple[list[Method], dict[str, str]]:
    methods: list[Method] = []
    skipped: dict[str, str] = {}
    node = shutil.which("node")
    if "sharp" in skip:
        skipped["sharp"] = "--skip"
    elif not node:
        skipped["sharp"] = "node is not on PATH"
    elif not (PEERS / "node_modules" / "sharp").is_dir():
        skipped["sharp"] = f"sharp is not installed: cd {PEERS} && npm install"
    else:
        script = [node, str(PEERS / "sharp_bench.js")]
        uv = str(max(4, CORES))
        methods.append(
            Subprocess(
                "sharp-pool",
                "sharp",
                [*script, "--parallel", str(CORES), "--concurrency", "1"],
                {"UV_THREADPOOL_SIZE": uv},
                f"sharp.concurrency(1), {CORES} images in flight",
            )
        )
        methods.append(
            Subprocess(
                "sharp-default",
                "sharp",
                [*script, "--parallel", "4", "--concurrency", "0"],
                {},
                "sharp's default concurrency, 4 images in flight (libuv's pool)",
            )
        )
    pillow_script = str(PEERS / "pillow_bench.py")
    try:
        import PIL  # noqa: F401

        have_pillow = "pillow" not in skip
        if "pillow" in skip:
            skipped["pillow"] = "--skip"
    except ImportError:
        have_pillow = False
        skipped["pillow"] = "Pillow is not installed: pip install -e '.[bench]'"
    if have_pillow:
        for mode in ("draft", "default", "nodraft"):
            methods.append(
                Subprocess(
                    f"pillow-{mode}",
                    "pillow",
                    [PYTHON, pillow_script, "--mode", mode, "--threads", str(CORES)],
                    note=f"Pillow thumbnail ({mode}), {CORES} threads",
                )
            )
    simd_python = SIMD_VENV / "bin" / "python"
    if "pillow-simd" in skip:
        skipped["pillow-simd"] = "--skip"
    elif not simd_python.exists():
        skipped["pillow-simd"] = (
            f"no venv at {SIMD_VENV} (apt-get install libjpeg-dev zlib1g-dev; python -m venv {SIMD_VENV}; "
            f'CC="cc -mavx2" {SIMD_VENV}/bin/pip install --no-binary pillow-simd pillow-simd)'
        )
    else:
        for mode in ("draft", "default"):
            methods.append(
                Subprocess(
                    f"pillow-simd-{mode}",
                    "pillow-simd",
                    [str(simd_python), pillow_script, "--mode", mode, "--threads", str(CORES)],
                    note=f"pillow-simd thumbnail ({mode}), {CORES} threads",
                )
            )
    return methods, skipped


def parse_variant(text: str) -> tuple[str, dict[str, str], int]:
    """NAME:VAR=VAL,VAR=VAL → ("thumbify-worker[NAME]", {THUMBIFY_VAR: VAL}, processes). `procs=N` starts N
    worker processes; short names (images or threads: render processes per worker; concurrency) are accepted."""
    name, _, rest = text.partition(":")
    env, procs = {}, 1
    aliases = {"images": "IMAGE_PROCESSES", "threads": "IMAGE_PROCESSES", "concurrency": "VIPS_CONCURRENCY"}
    aliases["batch"] = "BATCH_SIZE"
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key == "procs":
            procs = int(value)
            continue
        key = aliases.get(key, key.upper().removeprefix("THUMBIFY_"))
        env[f"THUMBIFY_{key}"] = value
    return f"thumbify-worker[{name}]", env, procs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.cpu")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--photos", type=int, default=48, help="12 MP JPEGs to use (default 48)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5), after one warm-up")
    parser.add_argument(
        "--web", type=int, default=0, metavar="N", help="N × 1024×768 JPEGs (jpeg_1024x768/) instead of the photos"
    )
    parser.add_argument("--quick", action="store_true", help="4 photos, 1 round: a smoke run")
    parser.add_argument(
        "--worker-variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VAL,...",
        help="another worker configuration to time beside the default, e.g. i3:images=3 or p2:procs=2,images=1",
    )
    parser.add_argument("--skip", default="", help="comma list of methods or groups to leave out")
    parser.add_argument("--no-quality", action="store_true", help="skip the PSNR pass")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/cpu.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.rounds = 4, 1
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.web:
        files = corpus_mod.make_sized(args.corpus, args.web, log=log)
    else:
        files = corpus_mod.make_photos(args.corpus, args.photos, log=log)

    from benchmarks.harness import QueueHarness

    harness = QueueHarness()
    methods: list[Method] = [
        BarePyvips(CORES, 1, "pyvips-pool"),
        BarePyvips(1, CORES, "pyvips-serial"),
        BarePyvips(CORES, CORES, f"pyvips-pool-c{CORES}"),
        Render(CORES, 1),
        Render(CORES, 1, "thumbify-render-libvips", turbo=False),
        ProcessPool("thumbify-procs", "thumbify", _render_in_process, f"VipsBackend.render, {CORES} processes"),
        ProcessPool(
            "thumbify-procs-libvips",
            "thumbify",
            _render_in_process_libvips,
            f"VipsBackend(turbo=False).render, {CORES} processes",
        ),
        ProcessPool("decode-floor", "floor", _decode_at_eighth, f"jpegload(shrink=8) only, {CORES} processes"),
        WorkerMethod(harness, "thumbify-worker", {}),
    ]
    if importlib.util.find_spec("PIL"):
        methods.append(
            ProcessPool(
                "decode-floor-pillow", "floor", _pillow_decode_at_eighth, f"Pillow draft(1/8) only, {CORES} processes"
            )
        )
    for variant in args.worker_variant:
        name, env, procs = parse_variant(variant)
        methods.append(WorkerMethod(harness, name, env, procs))
    peer_methods, skipped = peers(skip)
    methods += peer_methods
    methods = [m for m in methods if m.name not in skip and m.group not in skip]

    print(
        f"{len(files)} files, {CORES} cores, {args.rounds} rounds + 1 warm-up; methods: "
        + ", ".join(m.name for m in methods),
        file=sys.stderr,
    )
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    errors: dict[str, str] = {}
    harness.start()
    try:
        for m in methods:
            m.setup(files)
        for r in range(args.rounds + 1):
            shift = r % len(methods)
            order = methods[shift:] + methods[:shift]
            for m in order:
                if m.name in errors:
                    continue
                try:
                    seconds = m.run(files)
                except Exception as exc:  # noqa: BLE001
                    errors[m.name] = str(exc)
                    print(f"  {m.name}: {exc}", file=sys.stderr)
                    continue
                if r > 0:
                    times[m.name].append(seconds)
            if r > 0:
                line = "  ".join(f"{n}={len(files) / t[-1]:.1f}" for n, t in times.items() if len(t) == r)
                print(f"round {r}: {line}", file=sys.stderr)

        quality: dict[str, dict] = {}
        if not args.no_quality:
            quality = measure_quality(methods, files, args.corpus, errors)
    finally:
        for m in methods:
            m.close()
        harness.stop()

    report(methods, files, times, quality, errors, skipped, args)
    return 0


def corpus_name(args) -> str:
    return "1024×768" if args.web else "12 MP"


def measure_quality(methods: list[Method], files: list[Path], corpus: Path, errors: dict[str, str]) -> dict:
    print("quality pass …", file=sys.stderr)
    cache = corpus / ".reference"
    refs = {}
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        for m in methods:
            if m.name in errors:
                continue
            folder = Path(tmp) / m.name
            folder.mkdir()
            try:
                m.outputs(files, folder)
            except Exception as exc:  # noqa: BLE001
                errors[f"{m.name} (quality)"] = str(exc)
                continue
            px, jp, sizes = [], [], set()
            for f in files:
                for suffix, bucket in ((".png", px), (".jpg", jp)):
                    p = folder / f"{f.stem}{suffix}"
                    if not p.exists():
                        continue
                    pixels = read_pixels(p)
                    h, w = pixels.shape[:2]
                    sizes.add(f"{w}x{h}")
                    key = (f, w, h)
                    if key not in refs:
                        refs[key] = reference(f, w, h, cache)
                    bucket.append(psnr(pixels, refs[key]))
            out[m.name] = {
                "psnr_px": summary(px) if px else None,
                "psnr_jpeg": summary(jp) if jp else None,
                "sizes": sorted(sizes),
            }
    # The worker's pixels before encoding are the render's.
    for name, q in out.items():
        if name.startswith("thumbify-worker") and "thumbify-render" in out:
            q["psnr_px"] = out["thumbify-render"]["psnr_px"]
    return out


def report(methods, files, times, quality, errors, skipped, args) -> None:
    n = len(files)
    rounds = min((len(t) for t in times.values() if t), default=0)
    rate = {name: [n / s for s in t] for name, t in times.items() if t}

    def best_of(group: str) -> str | None:
        names = [m.name for m in methods if m.group == group and m.name in rate]
        return max(names, key=lambda k: statistics.median(rate[k]), default=None)

    sharp = best_of("sharp")
    bare = best_of("pyvips")

    def ratio(name: str, base: str | None) -> float | None:
        if not base or base not in rate or name not in rate:
            return None
        k = min(len(rate[name]), len(rate[base]))
        return statistics.median(rate[name][i] / rate[base][i] for i in range(k))

    rows, results = [], {}
    for m in methods:
        if m.name not in rate:
            continue
        s = summary(rate[m.name])
        q = quality.get(m.name) or {}
        px, jp = q.get("psnr_px") or {}, q.get("psnr_jpeg") or {}
        results[m.name] = {
            "group": m.group,
            "note": m.note,
            "version": getattr(m, "version", ""),
            "images_per_s": s,
            "seconds": times[m.name],
            "ratio_to_sharp": ratio(m.name, sharp),
            "ratio_to_bare_pyvips": ratio(m.name, bare),
            "quality": q,
        }
        rows.append(
            (
                m.name,
                s["median"],
                f"{s['min']:.1f}–{s['max']:.1f}",
                ratio(m.name, sharp),
                ratio(m.name, bare),
                px.get("mean"),
                px.get("min"),
                jp.get("mean"),
            )
        )
    rows.sort(key=lambda r: -r[1])
    table(
        f"CPU: {n} × {corpus_name(args)} JPEG → {SIZE} px JPEG q{QUALITY}, {CORES} cores, "
        f"median of {rounds} interleaved rounds",
        ["method", "images/s", "range", "× sharp", "× bare pyvips", "PSNR px", "PSNR px min", "PSNR jpeg"],
        rows,
        note=f"× sharp: vs {sharp}; × bare pyvips: vs {bare} (the best of each group; median of per-round ratios). "
        "PSNR in dB against a float64 Lanczos-3 resize of the full decode.",
    )
    for m in methods:
        if m.note:
            print(f"  {m.name}: {m.note}" + (f" [{m.version}]" if getattr(m, "version", "") else ""))
    targets = {}
    worker = "thumbify-worker"
    if worker in rate:
        vs_bare, vs_sharp = ratio(worker, bare), ratio(worker, sharp)
        targets["worker >= 0.9 x bare pyvips"] = {"ratio": vs_bare, "met": (vs_bare or 0) >= 0.9}
        if sharp:
            targets["worker >= 1.1 x sharp"] = {"ratio": vs_sharp, "met": (vs_sharp or 0) >= 1.1}
    if "thumbify-render" in rate and sharp:
        targets["render >= 1.1 x sharp"] = {
            "ratio": ratio("thumbify-render", sharp),
            "met": (ratio("thumbify-render", sharp) or 0) >= 1.1,
        }
    for name, t in targets.items():
        print(f"target {name}: {t['ratio']:.3f} → {'MET' if t['met'] else 'NOT MET'}")
    for name in ("decode-floor", "decode-floor-pillow"):
        if name in rate and sharp:
            floor = ratio(name, sharp)
            targets[f"{name} (a bound, not a target)"] = {"ratio": floor, "met": None}
            print(f"{name}: {statistics.median(rate[name]):.1f} images/s = {floor:.3f} x {sharp} for the decode alone")
    for name, why in {**skipped, **errors}.items():
        print(f"skipped/failed {name}: {why}")
    plot = bar_plot(
        args.out.stem if args.out else "cpu",
        f"{n} × {corpus_name(args)} JPEG → {SIZE} px, {CORES} cores (median images/s; PSNR px)",
        [r[0] for r in rows],
        [r[1] for r in rows],
        "images/s",
        [f"({r[5]:.1f} dB)" if r[5] else "" for r in rows],
    )
    if plot:
        print(f"plot: {plot}")
    path = write_json(
        "cpu",
        {
            "files": [str(f) for f in files],
            "size": SIZE,
            "quality": QUALITY,
            "rounds": rounds,
            "baselines": {"sharp": sharp, "bare_pyvips": bare},
            "methods": results,
            "targets": targets,
            "skipped": skipped,
            "errors": errors,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
