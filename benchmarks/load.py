"""Load test: many small jobs through the HTTP API at a fixed concurrency; checks none is lost or duplicated.

    python -m benchmarks.load [--url http://host:8000] [--jobs 1000] [--concurrency 32] [--workers 2]

Without `--url` it starts `thumbify serve --workers N` on a temporary data folder and stops it afterwards; with
`--url` it drives a deployed service (`--api-key` adds a bearer token). Each of the `concurrency` clients loops:
upload a small JPEG (each one distinct, with an Idempotency-Key so a dropped connection can be retried), then
long-poll its job until it ends. It prints jobs/s and the p50/p95/p99 of the submit latency (upload → 202) and the
completion latency (upload → done), checks that every job ended `done` with its thumbnail, that no two uploads got
one job id, and writes benchmarks/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import ThumbifyServer, percentile, table, write_json


def small_jpegs(count: int, width: int = 96, height: int = 64) -> list[bytes]:
    """`count` distinct small JPEGs (a gradient with the index drawn into it), made with libvips."""
    import pyvips

    base = pyvips.Image.xyz(width, height)
    out = []
    for i in range(count):
        img = (base[0] * 2 + base[1] + i % 97).bandjoin([base[1] * 3, base[0] + i // 97]).cast("uchar")
        out.append(img.jpegsave_buffer(Q=85))
    return out


@dataclass
class Outcome:
    submitted: list[float] = field(default_factory=list)  # seconds, upload → 202
    completed: list[float] = field(default_factory=list)  # seconds, upload → done
    ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # every job that did not end done, with why
    retries: int = 0  # requests sent again after a dropped connection


RETRIES = 3


async def _request(client: httpx.AsyncClient, out: Outcome, method: str, url: str, **kwargs) -> httpx.Response:
    """One request, retried when the connection drops (a keep-alive connection the server closed just as it was
    reused): safe, since GETs are idempotent and every upload carries an Idempotency-Key."""
    for attempt in range(RETRIES):
        try:
            r = await client.request(method, url, **kwargs)
            # 409: the first try of this upload is still being read by the server; its job comes on the next try.
            if r.status_code != 409 or attempt == RETRIES - 1:
                return r
        except httpx.TransportError:
            if attempt == RETRIES - 1:
                raise
        out.retries += 1
        await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


async def _one(client: httpx.AsyncClient, data: bytes, key: str, size: str, timeout: float, out: Outcome) -> None:
    started = time.perf_counter()
    r = await _request(
        client,
        out,
        "POST",
        "/v1/jobs",
        files={"file": (f"{key}.jpg", data, "image/jpeg")},
        data={"sizes": size},
        headers={"Idempotency-Key": key},
    )
    if r.status_code != 202:
        out.problems.append(f"upload {key}: {r.status_code} {r.text[:200]}")
        return
    out.submitted.append(time.perf_counter() - started)
    job = r.json()
    out.ids.append(job["id"])
    deadline = time.monotonic() + timeout
    while job["status"] not in ("done", "failed") and time.monotonic() < deadline:
        wait = max(0.1, min(30.0, deadline - time.monotonic()))
        r = await _request(client, out, "GET", f"/v1/jobs/{job['id']}", params={"wait": wait}, timeout=wait + 30)
        if r.status_code != 200:
            out.problems.append(f"job {job['id']}: GET {r.status_code} {r.text[:200]}")
            return
        job = r.json()
    if job["status"] != "done":
        out.problems.append(f"job {job['id']}: ended {job['status']} {job.get('error')}")
        return
    if len(job["thumbnails"]) != 1 or job["thumbnails"][0]["bytes"] <= 0:
        out.problems.append(f"job {job['id']}: thumbnails {job['thumbnails']}")
        return
    out.completed.append(time.perf_counter() - started)


async def run_load(
    url: str, jobs: int, concurrency: int, size: str = "64", timeout: float = 300.0, api_key: str | None = None
) -> dict:
    """Drive `url` with `jobs` uploads at `concurrency`; the measured figures and every problem seen."""
    images = small_jpegs(jobs)
    run = secrets.token_hex(4)
    out = Outcome()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            try:
                await _one(client, images[i], f"load-{run}-{i}", size, timeout, out)
            except httpx.HTTPError as exc:
                out.problems.append(f"upload {i}: {exc.__class__.__name__}: {exc}")

    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits, headers=headers) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    duplicates = len(out.ids) - len(set(out.ids))
    if duplicates:
        out.problems.append(f"{duplicates} uploads were given a job id another upload already had")

    def pcts(values: list[float]) -> dict[str, float]:
        return {f"p{q}": percentile(values, q) for q in (50, 95, 99)}

    return {
        "url": url,
        "jobs": jobs,
        "concurrency": concurrency,
        "elapsed_s": elapsed,
        "jobs_per_s": len(out.completed) / elapsed if elapsed else 0.0,
        "done": len(out.completed),
        "submit_latency_s": pcts(out.submitted),
        "completion_latency_s": pcts(out.completed),
        "retries": out.retries,
        "problems": out.problems,
    }


def report(result: dict) -> None:
    kinds = {"submit (upload → 202)": "submit_latency_s", "completion (upload → done)": "completion_latency_s"}
    rows = [[name, *(result[key][f"p{q}"] * 1000 for q in (50, 95, 99))] for name, key in kinds.items()]
    table(
        f"Load: {result['jobs']} jobs at concurrency {result['concurrency']} → {result['jobs_per_s']:.1f} jobs/s, "
        f"{result['done']} done in {result['elapsed_s']:.1f} s",
        ["latency", "p50 ms", "p95 ms", "p99 ms"],
        rows,
        note=(
            f"{len(result['problems'])} problems" if result["problems"] else "every job done, none lost or duplicated"
        )
        + f"; {result['retries']} requests retried after a dropped connection",
    )
    for line in result["problems"][:20]:
        print("  " + line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.load")
    parser.add_argument("--url", help="a running Thumbify API; default: start `thumbify serve` here")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="workers of the local server (without --url)")
    parser.add_argument("--size", default="64", help="the `sizes` option of every job")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one job may take to end")
    parser.add_argument("--api-key", help="bearer token for a deployed service")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/load.json)")
    args = parser.parse_args(argv)
    if args.url:
        result = asyncio.run(run_load(args.url, args.jobs, args.concurrency, args.size, args.timeout, args.api_key))
    else:
        with ThumbifyServer(workers=args.workers) as server:
            result = asyncio.run(run_load(server.url, args.jobs, args.concurrency, args.size, args.timeout))
        result["workers"] = args.workers
    report(result)
    path = write_json("load", result, args.out)
    print(f"wrote {path}")
    return 1 if result["problems"] or result["done"] != args.jobs else 0


if __name__ == "__main__":
    sys.exit(main())
