"""Where a job's CPU goes: CPU milliseconds per job in each process of the all-in-one server, against the image work.

    python -m benchmarks.job_cost [--images 60] [--size 1024x768] [--concurrency 2] [--workers 1] [--profile DIR]

Starts `thumbify serve` (API, embedded Redis, workers with their render processes), puts `--images` distinct
photo-like JPEGs through it (upload, then `GET /v1/jobs/{id}?wait=`), the client in this process with
`--concurrency` jobs in flight, and reads each process's CPU time (user + system, /proc/PID/stat) before and after:
API, Redis, worker, render processes and the client, in ms per job; and, after the run, each kind's memory: RSS
(VmRSS, shared libraries counted in every process) and PSS (shared pages split: the sum is the real footprint).
Beside it, the same render done bare: pyvips `thumbnail` + `jpegsave` on the same bytes in this process, CPU ms per
image. The server's overhead per job is its total CPU per job minus that bare image work. Then the API's floor: the
CPU of requests that do only the framework's share (an upload of the same size refused once read, a GET of a finished
job, /healthz), one at a time.

`--profile DIR`: py-spy (`pip install py-spy`) samples the API, the worker and one render process during the run;
DIR gets a flame graph (SVG) per process and this prints each one's heaviest functions (inclusive share of its
samples). Writes benchmarks/results/job_cost.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from benchmarks.common import ThumbifyServer, cpu_s, own_cpu_s, proc_status, pss_bytes, table, write_json


def images(count: int, width: int, height: int) -> list[bytes]:
    from benchmarks.corpus import photo

    return [photo(7000 + i, width, height).jpegsave_buffer(Q=88, subsample_mode="on") for i in range(count)]


async def drive(url: str, data: list[bytes], concurrency: int, prefer_wait: bool = False) -> float:
    """All jobs through the server, `concurrency` in flight; the wall seconds they took."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for d in data:
        queue.put_nowait(d)
    limits = httpx.Limits(max_connections=concurrency * 2)

    async def one_client(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            r = await client.post(
                f"{url}/v1/jobs",
                data={"sizes": "256", "format": "jpeg", "quality": "80"},
                files={"file": ("photo.jpg", body, "image/jpeg")},
                headers={"Prefer": "wait=30"} if prefer_wait else {},
            )
            r.raise_for_status()
            job = r.json()  # with Prefer: wait, finished already
            while job["status"] not in ("done", "failed"):
                job = (await client.get(f"{url}/v1/jobs/{job['id']}", params={"wait": 10})).json()
            if job["status"] != "done":
                raise RuntimeError(f"job {job['id']} failed: {job['error']}")

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(one_client(client) for _ in range(concurrency)))
    return time.perf_counter() - started


def floors(url: str, api_pid: int, body: bytes, count: int = 300) -> dict[str, float]:
    """API CPU ms per request, one at a time, of requests that do only the framework's share of a job's: the same
    upload refused once read (`quality=0` is judged before the body, which is then drained: 422), a GET of a
    finished job (one HGETALL, the job's view) and `GET /healthz` (nothing but the framework)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        job = client.post("/v1/jobs", files={"file": ("p.jpg", body, "image/jpeg")}, headers={"Prefer": "wait=30"})
        calls = {
            "POST, body read and refused": lambda: client.post(
                "/v1/jobs", params={"quality": "0"}, files={"file": ("p.jpg", body, "image/jpeg")}
            ),
            "GET a finished job": lambda: client.get(f"/v1/jobs/{job.json()['id']}"),
            "GET /healthz": lambda: client.get("/healthz"),
        }
        out = {}
        for name, call in calls.items():
            call()
            before = cpu_s(api_pid)
            for _ in range(count):
                call()
            out[name] = (cpu_s(api_pid) - before) / count * 1000
    return out


def bare_render_ms(data: list[bytes]) -> float:
    """CPU ms per image of the same render done bare in this process (thumbnail_buffer + jpegsave_buffer)."""
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    for body in data[:3]:
        pyvips.Image.thumbnail_buffer(body, 256, height=256).jpegsave_buffer(Q=80)
    before = own_cpu_s()
    for body in data:
        pyvips.Image.thumbnail_buffer(body, 256, height=256).jpegsave_buffer(Q=80)
    return (own_cpu_s() - before) / len(data) * 1000


def profile(pids: dict[str, int], out: Path, seconds: float) -> list[subprocess.Popen]:
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
            argv = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "250"]
            argv += ["--nonblocking", "--format", fmt, "-o", str(out / f"{name}.{suffix}")]
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # py-spy attaches
    return procs


# Frames worth naming in the profiles: our code and the libraries a job passes through (the rest is the framework's
# plumbing, present in every sample).
_NAMED = ("api/", "thumbify/", "gpu_worker/", "python_multipart/", "redis/", "pydantic", "json/", "anyio/", "h11/")
_NAMED += ("httptools", "starlette/responses", "starlette/formparsers", "fastapi/routing.py", "fastapi/encoders")
_NAMED += ("multiprocessing/connection", "multiprocessing/reduction", "pyvips/", "aiofiles", "tempfile", "shutil")


def heaviest(collapsed: Path, top: int = 15) -> list[tuple[str, float]]:
    """Named functions (see _NAMED) by inclusive share of the process's busy samples (py-spy leaves idle out)."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            where = frame.rsplit("(", 1)[-1]
            if any(name in where for name in _NAMED):
                inclusive[frame] += n
    return [(f, c / total * 100) for f, c in inclusive.most_common(top)] if total else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="passes over the images (after one warm-up pass)")
    ap.add_argument("--profile", type=Path, help="folder for py-spy flame graphs of the API, worker and a renderer")
    ap.add_argument("--env", action="append", default=[], help="THUMBIFY_X=Y for the server (repeatable)")
    ap.add_argument("--prefer-wait", action="store_true", help="one POST with Prefer: wait=30 per job, no GET")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    data = images(args.images, width, height)
    env = dict(e.split("=", 1) for e in args.env)

    with ThumbifyServer(env=env, workers=args.workers) as server:
        # Warm-up: every process started and warm.
        asyncio.run(drive(server.url, data, args.concurrency, args.prefer_wait))
        who = server.roles()
        spies = []
        if args.profile:
            first = {}
            for pid, role in who.items():
                key = {"api (serve process)": "api", "worker": "worker", "render processes": "render"}.get(role)
                if key and key not in first:
                    first[key] = pid
            estimate = args.rounds * len(data) / 40 + 5
            spies = profile(first, args.profile, estimate)
        before = {pid: cpu_s(pid) for pid in who}
        client_before = own_cpu_s()
        wall = sum(asyncio.run(drive(server.url, data, args.concurrency, args.prefer_wait)) for _ in range(args.rounds))
        jobs = args.rounds * len(data)
        per_role: collections.Counter[str] = collections.Counter()
        for pid, role in who.items():
            per_role[role] += (cpu_s(pid) - before[pid]) / jobs * 1000
        client_ms = (own_cpu_s() - client_before) / jobs * 1000
        rss: collections.Counter[str] = collections.Counter()
        pss: collections.Counter[str] = collections.Counter()
        for pid, role in who.items():  # after the run, every process warm
            rss[role] += proc_status(pid).get("VmRSS", 0) / 2**20
            pss[role] += pss_bytes(pid) / 2**20
        for spy in spies:
            spy.wait()
        api_pid = next(pid for pid, role in who.items() if role.startswith("api"))
        floor = floors(server.url, api_pid, data[0])
    bare = bare_render_ms(data)
    server_ms = sum(v for k, v in per_role.items())
    count = collections.Counter(who.values())
    rows = [
        [f"{role} ({count[role]})", ms, rss[role], pss[role]]
        for role, ms in sorted(per_role.items(), key=lambda kv: -kv[1])
    ]
    rows += [["server, all processes", server_ms, sum(rss.values()), sum(pss.values())]]
    rows += [["client (this process)", client_ms, None, None], ["bare pyvips render, same images", bare, None, None]]
    rows += [["server overhead over the bare render", server_ms - bare, None, None]]
    table(
        f"CPU ms per job: {jobs} jobs of {args.size} JPEG → 256 px, {args.concurrency} in flight, "
        f"{args.workers} worker(s), {args.env or 'default settings'}{', Prefer: wait' if args.prefer_wait else ''}: "
        f"{jobs / wall:.1f} jobs/s",
        ["process", "CPU ms / job", "RSS MiB", "PSS MiB"],
        rows,
    )
    table("The API's floor: CPU ms per request, one at a time", ["request", "API CPU ms"], list(floor.items()))
    result = {"per_role_ms": dict(per_role), "client_ms": client_ms, "bare_render_ms": bare, "jobs_per_s": jobs / wall}
    result["api_floor_ms"] = floor
    result |= {"rss_mib": dict(rss), "pss_mib": dict(pss), "processes": dict(count), "env": env}
    result["prefer_wait"] = args.prefer_wait
    if args.profile:
        for name in ("api", "worker", "render"):
            raw = args.profile / f"{name}.txt"
            if raw.exists():
                top = heaviest(raw)
                result[f"profile_{name}"] = top
                table(f"py-spy: {name}, inclusive share of samples", ["function", "%"], top)
    print(f"wrote {write_json('job_cost', result, args.out)}")


if __name__ == "__main__":
    main()
