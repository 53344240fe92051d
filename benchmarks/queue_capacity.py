"""Queue capacity: how many jobs/s one Redis carries through the real queue code, with a no-op image backend.

    python -m benchmarks.queue_capacity [--jobs 3000] [--workers 1,8,64] [--procs 2] [--rate 0]

Each job takes the path a real one takes through Redis, with the same code: the API's transaction (job record,
indexes, XADD: `JobStore.add_to` + `JobQueue.add_to`), then in a simulated worker `XREADGROUP` (batches of up to
`--batch`), `JobStore.take` (START: marks it processing and returns the record) and `JobQueue.complete`
(outcome + ack + the event that wakes a waiter), with nothing rendered or stored in between. W simulated workers
(each its own consumer in the group, as a worker process is) run as asyncio tasks spread over `--procs` processes;
one redis-server with the append-only file on (as `thumbify serve` runs it) on this machine.

Two phases per W:
- drain: `--jobs` jobs are enqueued first, then the workers empty the queue: jobs/s, and Redis's own CPU time per
  job (INFO cpu before and after) and commands per job (INFO commandstats) — the figures that say where one Redis
  saturates, whatever the client machine: one Redis runs commands on one core, so its ceiling is about
  1 / (Redis CPU seconds per job).
- paced: jobs enqueued at `--rate` jobs/s (default: half the drain rate) for `--seconds`: p50/p99 latency from
  enqueue to done.

On a 2-core machine the Python clients (producer and workers) share the cores with Redis, so the jobs/s figures are
a floor set by the clients; the Redis CPU per job is not. Writes benchmarks/results/queue_capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import percentile, table, write_json
from thumbify.jobs import JobStore, new_job_id
from thumbify.keyspace import Keys
from thumbify.queue import JobQueue
from thumbify.redis_conn import EmbeddedRedis, connect, free_port
from thumbify.spec import ThumbnailSpec

SPEC = ThumbnailSpec()
THUMBS = [{"name": "thumb_x_256x192.jpg", "width": 256, "height": 192, "format": "jpeg", "bytes": 9000, "etag": "0"}]


async def _enqueue(store: JobStore, queue: JobQueue, count: int) -> None:
    """`count` jobs, each in the API's one transaction; the enqueue time rides in the job's source."""
    for _ in range(count):
        job_id = new_job_id()
        source = {"filename": "x.jpg", "bytes": 50_000, "width": 1024, "height": 768, "format": "jpeg"}
        record = store.record(job_id, source | {"t0": time.time()}, SPEC, "x")
        async with store.redis.pipeline(transaction=True) as pipe:
            store.add_to(pipe, job_id, record)
            queue.add_to(pipe, job_id)
            await pipe.execute()


async def _worker(url: str, prefix: str, name: str, batch: int, until: float, done: list[tuple[float, float]]) -> None:
    """Take jobs until `until` (0: until a read finds the queue empty); `done` gets (finished at, enqueue→done)."""
    redis = connect(url)
    store, queue = JobStore(redis, Keys(prefix)), JobQueue(redis, Keys(prefix))
    try:
        while not until or time.time() < until:
            messages = await queue.read(name, batch, 200)
            if not messages and not until:
                return
            for message in messages:
                _, job = await store.take(message.job_id)
                await queue.complete(message, THUMBS)
                now = time.time()
                done.append((now, now - job.source["t0"]))
    finally:
        await redis.aclose()


def _workers_process(url: str, prefix: str, names: list[str], batch: int, until: float, out: mp.Queue) -> None:
    async def run() -> list[tuple[float, float]]:
        done: list[tuple[float, float]] = []
        await asyncio.gather(*(_worker(url, prefix, n, batch, until, done) for n in names))
        return done

    out.put(asyncio.run(run()))


async def _info(url: str) -> tuple[float, int]:
    """Redis's CPU seconds (user + sys, main thread and all) and the commands it has run."""
    redis = connect(url)
    try:
        cpu = await redis.info("cpu")
        stats = await redis.info("stats")
    finally:
        await redis.aclose()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(stats["total_commands_processed"])


def _start_workers(url, prefix, workers, procs, batch, until) -> tuple[list[mp.Process], mp.Queue]:
    out: mp.Queue = mp.get_context("spawn").Queue()
    names = [f"sim-{i}" for i in range(workers)]
    ctx = mp.get_context("spawn")
    started = []
    for p in range(min(procs, workers)):
        proc = ctx.Process(target=_workers_process, args=(url, prefix, names[p::procs], batch, until, out))
        proc.start()
        started.append(proc)
    return started, out


def _collect(started: list[mp.Process], out: mp.Queue) -> list[tuple[float, float]]:
    """Every process's (finished at, latency) pairs."""
    done = [row for _ in started for row in out.get()]
    for proc in started:
        proc.join()
    return done


async def _prepare(url: str, prefix: str) -> tuple[JobStore, JobQueue]:
    redis = connect(url)
    store, queue = JobStore(redis, Keys(prefix)), JobQueue(redis, Keys(prefix))
    await queue.ensure_group()
    return store, queue


def drain(url: str, workers: int, jobs: int, procs: int, batch: int) -> dict:
    prefix = f"cap{uuid.uuid4().hex[:6]}"

    async def fill() -> None:
        store, queue = await _prepare(url, prefix)
        await _enqueue(store, queue, jobs)
        await store.redis.aclose()

    asyncio.run(fill())
    cpu0, cmds0 = asyncio.run(_info(url))
    started, out = _start_workers(url, prefix, workers, procs, batch, 0)  # until the queue is empty
    done = _collect(started, out)
    cpu1, cmds1 = asyncio.run(_info(url))
    # The rate from the completions' own clock (first to last), so the processes' start-up is not counted.
    finished = sorted(t for t, _ in done)
    span = finished[-1] - finished[0] if len(finished) > 1 else float("nan")
    return {
        "workers": workers,
        "jobs": len(done),
        "jobs_per_s_floor": (len(done) - 1) / span if span else float("nan"),
        "redis_cpu_us_per_job": (cpu1 - cpu0) / len(done) * 1e6 if done else float("nan"),
        "redis_commands_per_job": (cmds1 - cmds0) / len(done) if done else float("nan"),
    }


def paced(url: str, workers: int, rate: float, seconds: float, procs: int, batch: int) -> dict:
    prefix = f"cap{uuid.uuid4().hex[:6]}"

    async def produce() -> int:
        store, queue = await _prepare(url, prefix)
        sent, start = 0, time.monotonic()
        while (now := time.monotonic() - start) < seconds:
            due = int(now * rate) + 1
            if due > sent:
                await _enqueue(store, queue, due - sent)
                sent = due
            await asyncio.sleep(0.002)
        await store.redis.aclose()
        return sent

    asyncio.run(_prepare(url, prefix))  # the group exists before the workers read
    started, out = _start_workers(url, prefix, workers, procs, batch, time.time() + seconds + 3)
    time.sleep(0.5)  # the workers' processes start (spawn) before the clock starts
    sent = asyncio.run(produce())
    latencies = [lat for _, lat in _collect(started, out)]
    return {
        "workers": workers,
        "rate": rate,
        "sent": sent,
        "done": len(latencies),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=3000, help="jobs per drain")
    ap.add_argument("--workers", default="1,8,64", help="simulated worker counts, comma-separated")
    ap.add_argument("--procs", type=int, default=2, help="processes the simulated workers are spread over")
    ap.add_argument("--batch", type=int, default=16, help="XREADGROUP COUNT (the worker's batch_size)")
    ap.add_argument("--rate", type=float, default=0, help="paced phase, jobs/s (0: half the drain rate)")
    ap.add_argument("--seconds", type=float, default=5.0, help="paced phase length")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), port=free_port()) as server:
        drains, paces = [], []
        for w in counts:
            d = drain(server.url, w, args.jobs, args.procs, args.batch)
            drains.append(d)
            rate = args.rate or max(10.0, d["jobs_per_s_floor"] / 2)
            paces.append(paced(server.url, w, rate, args.seconds, args.procs, args.batch))

    table(
        "Queue capacity: the real queue code, a no-op backend, one redis-server (AOF on)",
        ["workers", "jobs/s (drain)", "Redis CPU µs/job", "Redis cmds/job", "paced at /s", "p50 ms", "p99 ms"],
        [
            [d["workers"], d["jobs_per_s_floor"], d["redis_cpu_us_per_job"], d["redis_commands_per_job"]]
            + [p["rate"], p["p50_ms"], p["p99_ms"]]
            for d, p in zip(drains, paces, strict=True)
        ],
        note="jobs/s is a floor: the simulated clients share this machine's cores with Redis. One Redis runs its "
        "commands on one core: its ceiling is about 1e6 / (Redis CPU µs per job) jobs/s.",
    )
    best = min(d["redis_cpu_us_per_job"] for d in drains)
    print(f"one Redis core saturates near {1e6 / best:,.0f} jobs/s at {best:.0f} µs of Redis CPU per job")
    path = write_json("queue_capacity", {"drain": drains, "paced": paces}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
