"""Peak memory: the worker on one 30000×30000 JPEG, a bare pyvips thumbnail of it, and the API streaming 1 GB.

    python -m benchmarks.memory [--corpus DIR] [--upload-gb 1.0] [--interval 0.02] [--quick]

- worker: a real `python -m gpu_worker` on a real redis-server (benchmarks/harness.py); one small warm-up job, then
  the 30000×30000 JPEG (`benchmarks/corpus.py` makes it) as one job. /proc/PID/status is sampled every 20 ms from
  before the enqueue until the job is done. Reported: peak RssAnon (anonymous memory: what the process really
  holds; the file pages libvips maps are RssFile, not counted), its growth over the idle worker, and VmRSS.
- bare pyvips: `pyvips.Image.thumbnail(path, 256).jpegsave_buffer()` in a fresh subprocess, sampled the same way,
  with libvips' default concurrency and with concurrency 1 (the worker's setting).
- API: `thumbify serve` with THUMBIFY_MAX_UPLOAD_BYTES raised; after a small warm-up upload, one multipart upload of
  `--upload-gb` GB (a JPEG header, then zero padding) is streamed from a generator, so the client never holds it.
  The API process (serve's main process: uvicorn runs in it) is sampled while it streams; reported: growth of
  VmRSS and RssAnon over its idle value. The answer (422 "cannot read the header" or 202) does not matter here.

Targets: worker peak RssAnon < 200 MB; API RSS growth < 50 MB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks import corpus as corpus_mod
from benchmarks.common import (
    DEFAULT_CORPUS,
    PYTHON,
    ROOT,
    MemorySampler,
    ThumbifyServer,
    mib,
    proc_status,
    table,
    tree_status,
    write_json,
)

MB = 1024 * 1024
BARE = (
    "import sys, time, pyvips\n"
    "pyvips.cache_set_max(0)\n"
    "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()\n"
    "t = time.perf_counter(); pyvips.Image.thumbnail(sys.argv[1], 256).jpegsave_buffer()\n"
    "sys.stdout.write(f'{time.perf_counter() - t}\\n'); sys.stdout.flush()\n"
)


def worker_peak(path: Path, warmup: Path, interval: float) -> dict:
    from benchmarks.harness import QueueHarness

    with QueueHarness() as harness:
        pid = harness.add_worker("mem")[0]
        warm = harness.run_round("mem", [warmup], timeout=120)
        if warm.failed:
            raise RuntimeError(f"warm-up job failed: {warm.failed}")
        time.sleep(0.5)
        # The worker renders in child processes: its memory is the whole tree's.
        idle = tree_status(pid)
        with MemorySampler(pid, interval, tree=True) as sampler:
            result = harness.run_round("mem", [path], timeout=600)
            time.sleep(0.2)
        after = tree_status(pid)
        if result.failed:
            raise RuntimeError(f"the job failed: {result.failed}")
        thumb = harness.thumbnail_path(result.done[0])
    return {
        "pid": pid,
        "seconds": result.seconds,
        "idle": idle,
        "after": after,
        "peak": sampler.peak,
        "samples": sampler.samples,
        "thumbnail": thumb.name if thumb else None,
        "trace_rss_anon": sampler.trace[:: max(1, len(sampler.trace) // 200)],
    }


def bare_peak(path: Path, interval: float, concurrency: int | None) -> dict:
    env = {**os.environ}
    if concurrency:
        env["VIPS_CONCURRENCY"] = str(concurrency)
    proc = subprocess.Popen(
        [PYTHON, "-c", BARE, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    assert proc.stdout and proc.stdin
    proc.stdout.readline()  # imported, idle
    idle = proc_status(proc.pid)
    with MemorySampler(proc.pid, interval) as sampler:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seconds = float(proc.stdout.readline())
    proc.stdin.close()
    proc.wait()
    return {"seconds": seconds, "idle": idle, "peak": sampler.peak, "samples": sampler.samples}


def multipart_body(boundary: str, head: bytes, total: int, chunk: int = 1 << 20):
    """A generator: the multipart preamble, `head`, zeros up to `total` file bytes, the closing boundary."""
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    yield head
    left = total - len(head)
    zeros = bytes(chunk)
    while left > 0:
        n = min(chunk, left)
        yield zeros if n == chunk else bytes(n)
        left -= n
    yield f"\r\n--{boundary}--\r\n".encode()


def api_peak(head_src: Path, warmup: Path, total: int, interval: float) -> dict:
    env = {"THUMBIFY_MAX_UPLOAD_BYTES": str(total + 64 * MB)}
    with ThumbifyServer(env) as server:
        pid = server.proc.pid
        with httpx.Client(timeout=300) as client:
            r = client.post(f"{server.url}/v1/jobs", files={"file": (warmup.name, warmup.read_bytes(), "image/jpeg")})
            job = r.json()
            client.get(f"{server.url}/v1/jobs/{job['id']}", params={"wait": 30})
            time.sleep(0.5)
            idle = proc_status(pid)
            head = head_src.read_bytes()[:4096]
            boundary = "thumbifybenchboundary7d1f"
            started = time.perf_counter()
            with MemorySampler(pid, interval) as sampler:
                r = client.post(
                    f"{server.url}/v1/jobs",
                    content=multipart_body(boundary, head, total),
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                )
            seconds = time.perf_counter() - started
            answer = {"status": r.status_code, "body": r.text[:300]}
            if r.status_code == 202:  # accepted: take it back so its worker doesn't chew on 1 GB of zeros
                client.delete(f"{server.url}/v1/jobs/{r.json()['id']}")
    return {
        "pid": pid,
        "bytes": total,
        "seconds": seconds,
        "answer": answer,
        "idle": idle,
        "peak": sampler.peak,
        "samples": sampler.samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.memory")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--upload-gb", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=0.02, help="sampling interval in seconds (default 0.02)")
    parser.add_argument("--side", type=int, default=corpus_mod.HUGE_SIDE, help="the huge JPEG's side")
    parser.add_argument(
        "--quick", action="store_true", help="a 6000×6000 image instead of 30000², a 64 MB upload: a smoke run"
    )
    parser.add_argument("--skip", default="", help="comma list of: worker, bare, api")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    side = 6000 if args.quick else args.side
    total = int((0.0625 if args.quick else args.upload_gb) * 1e9)
    c = corpus_mod.ensure(args.corpus, photos=1, web=True, huge=False, log=log)
    log(f"the {side}×{side} JPEG …")
    huge = corpus_mod.make_huge(args.corpus, side, log=log)
    warm = c.web[0]

    data: dict[str, object] = {"image": str(huge), "image_bytes": huge.stat().st_size, "side": side}
    rows = []
    if "worker" not in skip:
        log("worker …")
        w = worker_peak(huge, warm, args.interval)
        data["worker"] = w
        rows.append(
            (
                "worker + render processes, whole job",
                mib(w["peak"]["RssAnon"]),
                mib(w["peak"]["RssAnon"] - w["idle"].get("RssAnon", 0)),
                mib(w["peak"]["RssFile"]),
                mib(w["peak"]["VmRSS"]),
                w["seconds"],
            )
        )
    if "bare" not in skip:
        for conc in (None, 1):
            log(f"bare pyvips (concurrency {conc or 'default'}) …")
            b = bare_peak(huge, args.interval, conc)
            data[f"bare_concurrency_{conc or 'default'}"] = b
            rows.append(
                (
                    f"bare pyvips thumbnail, concurrency {conc or 'default'}",
                    mib(b["peak"]["RssAnon"]),
                    mib(b["peak"]["RssAnon"] - b["idle"].get("RssAnon", 0)),
                    mib(b["peak"]["RssFile"]),
                    mib(b["peak"]["VmRSS"]),
                    b["seconds"],
                )
            )
    if "api" not in skip:
        log(f"API streaming {total / 1e9:.2f} GB …")
        a = api_peak(c.photos[0], warm, total, args.interval)
        data["api"] = a
        rows.append(
            (
                f"API (thumbify serve) streaming {total / 1e9:.2f} GB",
                mib(a["peak"]["RssAnon"]),
                mib(a["peak"]["RssAnon"] - a["idle"].get("RssAnon", 0)),
                mib(a["peak"]["RssFile"]),
                mib(a["peak"]["VmRSS"]),
                a["seconds"],
            )
        )
        data["api_vmrss_growth"] = a["peak"]["VmRSS"] - a["idle"].get("VmRSS", 0)
    table(
        f"Peak memory (MiB), sampled every {args.interval * 1000:.0f} ms; image {side}×{side} "
        f"({huge.stat().st_size / 1e6:.0f} MB)",
        ["process", "peak RssAnon", "RssAnon growth", "peak RssFile", "peak VmRSS", "seconds"],
        rows,
        note="growth = peak minus the idle process (after imports and a warm-up job).",
    )
    targets = {}
    if "worker" in data:
        peak = data["worker"]["peak"]["RssAnon"]
        targets["worker peak RssAnon < 200 MB"] = {"value_mib": mib(peak), "met": peak < 200 * MB}
    if "api" in data:
        growth = data["api_vmrss_growth"]
        targets["API RSS growth < 50 MB"] = {"value_mib": mib(growth), "met": growth < 50 * MB}
        print(f"API answer to the {total / 1e9:.2f} GB upload: {data['api']['answer']}")
    for name, t in targets.items():
        print(f"target {name}: {t['value_mib']:.1f} MiB → {'MET' if t['met'] else 'NOT MET'}")
    data["targets"] = targets
    print(f"wrote {write_json('memory', data, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
