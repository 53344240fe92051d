"""The worker's reliability, proven against real components: redis-server, uvicorn, worker processes and their
render processes, files on disk. Faults are real too: SIGKILL and SIGTERM to workers, a storage folder that cannot be
written, a redis-server killed and restarted, an image that takes too long.

Every test leaves nothing behind: the `leftovers` fixture tags each process the test starts (an environment variable
every child inherits) and fails the test if one still runs afterwards, or if a port it used is still bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pyvips
from support import images
from support.faults import (
    broken_thumbnail_storage,
    check_thumbnails,
    log_of,
    pending_count,
    start_worker,
    statuses,
    wait_for,
    wait_retrying,
)
from support.images import make_jpeg, truncated_jpeg
from support.problems import PROBLEM_BASE
from support.processes import TAG_VAR, render_children, tagged_processes
from support.service import PYTHON, ROOT, Service, port_is_free, start_service, stop_service

from gpu_worker.backends.vips import VipsBackend
from gpu_worker.pool import RenderPool
from thumbify.errors import ImageTimeout, WorkerCrashed
from thumbify.jobs import JobStore
from thumbify.keyspace import Keys
from thumbify.queue import JobQueue, Message, backoff_ceiling, backoff_delay
from thumbify.redis_conn import EmbeddedRedis, connect, free_port
from thumbify.retention import Retention
from thumbify.settings import Settings
from thumbify.spec import ThumbnailSpec
from thumbify.state import Status
from thumbify.storage import LocalStorage, original_key, thumbnail_key

pytestmark = pytest.mark.timeout(120)

# Worker settings every service here starts from: fast retries, render processes sized to this small machine.
FAST = {"retry_base_s": 0.05, "retry_max_s": 0.3, "image_processes": 2}


@dataclass
class Leftovers:
    tag: str
    ports: list[int] = field(default_factory=list)


@pytest.fixture(autouse=True)
def leftovers(monkeypatch: pytest.MonkeyPatch):
    """Fails the test if any process it started still runs after it, or a port it used is still bound."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG_VAR, tag)
    state = Leftovers(tag)
    yield state
    deadline = time.monotonic() + 10
    while (alive := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"processes left running: {alive}"
    bound = [p for p in state.ports if not port_is_free(p)]
    assert not bound, f"ports still bound: {bound}"


def service(tmp_path: Path, redis_url: str, leftovers: Leftovers, worker: bool = False, **settings) -> Service:
    svc = start_service(tmp_path, redis_url, extra_env={**FAST, **settings}, with_worker=worker)
    leftovers.ports.append(int(svc.base_url.rsplit(":", 1)[1]))
    return svc


def photo(width: int, height: int, seed: int) -> bytes:
    """A noise JPEG: each one distinct, slow enough to decode that several are in flight at once."""
    return make_jpeg(width, height, quality=80 + seed % 10)


def run_cli(svc: Service, *args: str) -> subprocess.CompletedProcess:
    env = {**svc.env, "COLUMNS": "220"}
    return subprocess.run(
        [PYTHON, "-m", "thumbify_cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


# -- crash recovery -----------------------------------------------------------------------------------------------


def test_sigkill_mid_batch_loses_nothing(redis_server: str, tmp_path: Path, leftovers: Leftovers):
    svc = service(tmp_path, redis_server, leftovers, visibility_timeout_s=2)
    try:
        ids = [svc.submit_ok(photo(1600, 1200, i), f"k{i}.jpg", sizes="1024,256")["id"] for i in range(10)]
        first = start_worker(svc, "worker-1")
        wait_for(lambda: "processing" in statuses(svc, ids).values(), 30, "a job in flight")
        children = render_children(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = statuses(svc, ids)
        in_flight = [i for i, s in at_kill.items() if s == "processing"]
        assert in_flight, at_kill
        assert pending_count(svc) >= len(in_flight)  # still pending for the dead consumer
        # Its render processes die with it (the parent-death signal), they do not linger.
        wait_for(lambda: not any(_alive(pid) for pid in children), 10, "the dead worker's render processes to exit")

        start_worker(svc, "worker-2", visibility_timeout_s=2)
        jobs = [svc.wait(job_id, timeout=90) for job_id in ids]
        for job in jobs:
            assert job["status"] == "done", job
            check_thumbnails(svc, job)
            assert {(t["width"], t["height"]) for t in job["thumbnails"]} == {(1024, 768), (256, 192)}
        attempts = {job["id"]: job["attempts"] for job in jobs}
        # The jobs the dead worker had started count that try; the others were tried once.
        assert all(attempts[i] == 2 for i in in_flight), (in_flight, attempts)
        assert all(attempts[i] == 1 for i in ids if i not in in_flight), attempts
        assert pending_count(svc) == 0
        assert "claimed" in log_of(svc, "worker-2")
    finally:
        stop_service(svc)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


# -- retries and the dead-letter stream ------------------------------------------------------------------------------


def test_storage_outage_is_retried_until_it_returns(redis_server: str, tmp_path: Path, leftovers: Leftovers):
    svc = service(tmp_path, redis_server, leftovers, worker=True, max_attempts=50)
    try:
        with broken_thumbnail_storage(svc.data_dir):
            ids = [svc.submit_ok(make_jpeg(320, 240), f"s{i}.jpg", sizes="128")["id"] for i in range(3)]
            wait_retrying(svc, ids, 3, "storage-error", "three tries of every job")
        for job_id in ids:
            job = svc.wait(job_id, timeout=30)
            assert job["status"] == "done", job
            assert job["attempts"] > 1, job
            assert job["error"] is None
            check_thumbnails(svc, job)
        log = log_of(svc, "worker")
        assert "retry 2 of 50" in log, log[-3000:]
    finally:
        stop_service(svc)


def test_attempts_used_up_go_to_the_dead_letter_stream_and_back(
    redis_server: str, tmp_path: Path, leftovers: Leftovers
):
    svc = service(tmp_path, redis_server, leftovers, worker=True, max_attempts=3)
    try:
        with broken_thumbnail_storage(svc.data_dir):
            ids = [svc.submit_ok(make_jpeg(320, 240), f"d{i}.jpg", sizes="128")["id"] for i in range(2)]
            for job_id in ids:
                job = svc.wait(job_id, timeout=30)
                assert job["status"] == "failed", job
                assert job["attempts"] == 3
                assert job["error"]["type"] == PROBLEM_BASE + "storage-error", job
                assert "gave up after 3 attempts" in job["error"]["detail"], job
                assert "could not store thumbnail" in job["error"]["detail"], job
            with svc.redis() as r:
                dead = r.xrange(svc.keys.dead)
            assert sorted(fields["job"] for _, fields in dead) == sorted(ids)
            assert pending_count(svc) == 0

            listing = run_cli(svc, "dlq", "list")
            assert listing.returncode == 0, listing.stderr
            for job_id in ids:
                assert job_id in listing.stdout, listing.stdout
            assert "2 dead-letter entries" in listing.stdout, listing.stdout
            assert "could not store thumbnail" in listing.stdout, listing.stdout
            rows = [json.loads(line) for line in run_cli(svc, "dlq", "list", "--json").stdout.splitlines()]
            assert sorted(r["job"] for r in rows) == sorted(ids)
            assert all(r["type"] == "storage-error" and r["attempts"] == 3 and r["when"] for r in rows), rows

        requeue = run_cli(svc, "dlq", "requeue", "--all")
        assert requeue.returncode == 0, requeue.stderr
        assert "2 job(s) requeued" in requeue.stderr, requeue.stderr
        for job_id in ids:
            job = svc.wait(job_id, timeout=30)
            assert job["status"] == "done", job
            assert job["attempts"] == 1  # reset by the requeue, then one try
            check_thumbnails(svc, job)
        assert run_cli(svc, "dlq", "list", "--json").stdout.strip() == ""
        again = run_cli(svc, "dlq", "requeue", "0-1")
        assert again.returncode == 1 and "no such entry" in again.stderr
    finally:
        stop_service(svc)


# -- per-image timeout ----------------------------------------------------------------------------------------------


def test_an_image_over_the_timeout_fails_and_the_worker_keeps_serving(
    redis_server: str, tmp_path: Path, leftovers: Leftovers
):
    svc = service(tmp_path, redis_server, leftovers, worker=True, image_timeout_s=1, image_processes=1)
    try:
        worker = svc.procs["worker"]
        wait_for(lambda: render_children(worker.pid), 30, "the render process")
        before = set(render_children(worker.pid))
        slow = svc.submit_ok(images.slow_avif_source(), "huge.png", sizes="4096", format="avif")
        small = svc.submit_ok(make_jpeg(64, 48), "small.jpg")
        job = svc.wait(slow["id"], timeout=30)
        assert job["status"] == "failed", job
        assert job["error"]["type"] == PROBLEM_BASE + "image-timeout", job
        assert "longer than 1s" in job["error"]["detail"], job
        assert job["attempts"] == 1  # permanent: not retried
        done = svc.wait(small["id"], timeout=30)
        assert done["status"] == "done", done
        check_thumbnails(svc, done)
        assert worker.poll() is None, svc.log_text()
        after = set(render_children(worker.pid))
        assert len(after) == 1 and not after & before, (before, after)  # the render process was replaced
    finally:
        stop_service(svc)


# -- graceful shutdown ----------------------------------------------------------------------------------------------


def test_sigterm_finishes_or_hands_back_every_job(redis_server: str, tmp_path: Path, leftovers: Leftovers):
    grace = 0.5
    svc = service(tmp_path, redis_server, leftovers, shutdown_grace_s=grace)
    try:
        # A backlog first, so the worker has a full batch in flight when the signal comes; each job takes over a
        # second (noise is slow to encode as AVIF), so two of the four in flight cannot even start within the grace.
        ids = [svc.submit_ok(photo(1200, 900, i), f"t{i}.jpg", sizes="1200,200", format="avif")["id"] for i in range(8)]
        first = start_worker(svc, "worker-1")
        wait_for(lambda: list(statuses(svc, ids).values()).count("processing") >= 3, 30, "jobs in flight")
        started = time.monotonic()
        first.send_signal(signal.SIGTERM)
        first.wait(grace + 10)
        took = time.monotonic() - started
        assert first.returncode == 0, log_of(svc, "worker-1")
        assert took < grace + 4, (
            f"the worker took {took:.1f}s to stop with a {grace}s grace\n" + log_of(svc, "worker-1")[-4000:]
        )
        at_stop = statuses(svc, ids)
        assert set(at_stop.values()) <= {"queued", "done"}, at_stop  # nothing left half-way
        assert pending_count(svc) == 0  # nothing held by the stopped worker
        assert "handed" in log_of(svc, "worker-1"), log_of(svc, "worker-1")[-3000:]

        start_worker(svc, "worker-2")
        for job_id in ids:
            job = svc.wait(job_id, timeout=90)
            assert job["status"] == "done", job
            assert job["attempts"] == 1, job  # a job handed back did not count the interrupted try
            check_thumbnails(svc, job)
            assert {(t["width"], t["height"], t["format"]) for t in job["thumbnails"]} == {
                (1200, 900, "avif"),
                (200, 150, "avif"),
            }
    finally:
        stop_service(svc)


# -- Redis outage -----------------------------------------------------------------------------------------------------


@pytest.mark.service
def test_worker_rides_out_a_redis_restart(tmp_path: Path, leftovers: Leftovers):
    port = free_port()
    leftovers.ports.append(port)
    server = EmbeddedRedis(tmp_path / "redis", port=port).start()
    svc = None
    try:
        svc = service(tmp_path, server.url, leftovers, worker=True, visibility_timeout_s=3)
        worker = svc.procs["worker"]
        ids = [svc.submit_ok(photo(1200, 900, i), f"r{i}.jpg", sizes="800")["id"] for i in range(8)]
        wait_for(lambda: "done" in statuses(svc, ids).values(), 30, "a first job done")
        server.process.send_signal(signal.SIGKILL)  # a crash: no shutdown, no final fsync
        server.process.wait(10)
        time.sleep(2.0)
        assert worker.poll() is None, log_of(svc, "worker")
        server = EmbeddedRedis(tmp_path / "redis", port=port).start()  # same dir (AOF), same port
        # Watched in Redis itself: the API's own first answers after the outage may be 503s (its business).
        wait_for(lambda: set(statuses(svc, ids).values()) == {"done"}, 60, "every job done after the restart")
        for job_id in ids:
            job = wait_for(lambda job_id=job_id: _answer(svc, job_id), 10, "the API to answer again")
            assert job["status"] == "done", job
            check_thumbnails(svc, job)
        after = svc.run_job(make_jpeg(200, 150), "after.jpg")  # and it keeps reading
        assert after["status"] == "done", after
        assert worker.poll() is None
        assert "redis unavailable" in log_of(svc, "worker")
    finally:
        if svc:
            stop_service(svc)
        server.stop()


def _answer(svc: Service, job_id: str) -> dict | None:
    r = svc.get_job(job_id)
    return r.json() if r.status_code == 200 else None


# -- retention ------------------------------------------------------------------------------------------------------


def test_finished_jobs_expire_with_their_files(redis_server: str, tmp_path: Path, leftovers: Leftovers):
    svc = service(
        tmp_path, redis_server, leftovers, worker=True, retention_s=3, cleanup_interval_s=0.2, delete_originals="true"
    )
    try:
        job = svc.run_job(make_jpeg(320, 240), "keep.jpg", sizes="100")
        assert job["status"] == "done", job
        original = svc.originals_dir / job["id"]
        # delete_originals: the original goes once the thumbnails are stored; the thumbnails are still served.
        wait_for(lambda: not original.exists(), 10, "the original to be deleted")
        [thumb] = job["thumbnails"]
        r = svc.client.get(thumb["url"])
        assert r.status_code == 200 and pyvips.Image.new_from_buffer(r.content, "").width == 100
        failed = svc.run_job(truncated_jpeg(), "bad.jpg")  # the header is fine: only decoding finds the fault
        assert failed["status"] == "failed", failed

        wait_for(lambda: svc.get_job(job["id"]).status_code == 404, 15, "the done job to expire")
        wait_for(lambda: svc.get_job(failed["id"]).status_code == 404, 15, "the failed job to expire")
        assert not svc.thumbnails_dir(job["id"]).exists()
        assert not (svc.originals_dir / failed["id"]).exists()
        assert not {job["id"], failed["id"]} & svc.job_ids_in_redis()
        assert svc.client.get(thumb["url"]).status_code == 404
    finally:
        stop_service(svc)


# -- the pieces, against the real redis-server ------------------------------------------------------------------------


def test_backoff_grows_and_is_capped():
    ceilings = [backoff_ceiling(n, 0.5, 10.0) for n in range(1, 10)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert backoff_ceiling(10_000, 0.5, 10.0) == 10.0  # no overflow far out
    rng = random.Random(7)
    for attempt in range(1, 10):
        samples = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(400)]
        assert all(0.0 <= s <= ceilings[attempt - 1] for s in samples)
        assert max(samples) > 0.9 * ceilings[attempt - 1]  # full jitter: the whole range is used
        assert min(samples) < 0.1 * ceilings[attempt - 1]


async def _store_and_queue(redis_url: str, prefix: str):
    redis = connect(redis_url)
    queue = JobQueue(redis, Keys(prefix))
    await queue.ensure_group()
    return redis, JobStore(redis, Keys(prefix)), queue


async def _new_job(redis, store: JobStore, queue: JobQueue, enqueue: bool = True) -> str:
    from thumbify.jobs import new_job_id

    job_id = new_job_id()
    record = store.record(job_id, {"format": "jpeg", "bytes": 1}, ThumbnailSpec(), "x")
    async with redis.pipeline(transaction=True) as pipe:
        store.add_to(pipe, job_id, record)
        if enqueue:
            queue.add_to(pipe, job_id)
        await pipe.execute()
    return job_id


def test_promotion_never_promotes_twice(redis_server: str):
    async def main():
        prefix = f"u{uuid.uuid4().hex[:8]}"
        clients = [await _store_and_queue(redis_server, prefix) for _ in range(6)]
        redis, _, queue = clients[0]
        due = [f"due{i:04d}" for i in range(300)]
        later = [f"later{i}" for i in range(5)]
        await redis.zadd(queue.keys.delayed, {i: 0 for i in due} | {i: 2**50 for i in later})
        moved = 0
        while True:
            counts = await asyncio.gather(*(q.promote_due(17) for _, _, q in clients))
            moved += sum(counts)
            if not any(counts):
                break
        entries = await redis.xrange(queue.keys.stream)
        promoted = [fields["job"] for _, fields in entries]
        assert moved == len(due)
        assert sorted(promoted) == sorted(due)  # each once, nothing not yet due
        assert sorted(await redis.zrange(queue.keys.delayed, 0, -1)) == sorted(later)
        for r, _, _ in clients:
            await r.aclose()

    asyncio.run(main())


def test_retry_later_then_promote_round_trip(redis_server: str):
    async def main():
        redis, store, queue = await _store_and_queue(redis_server, f"u{uuid.uuid4().hex[:8]}")
        job_id = await _new_job(redis, store, queue)
        [message] = await queue.read("c1", 10, None)
        assert await store.start(job_id) == 1
        error = {"type": PROBLEM_BASE + "storage-error", "detail": "disk full"}
        assert await queue.retry_later(message, 0.3, error) == 1
        job = await store.get(job_id)
        assert job.status == Status.queued and job.error == error and job.attempts == 1
        assert await redis.xlen(queue.keys.stream) == 0  # acked and deleted
        assert await queue.promote_due() == 0  # not due yet
        await asyncio.sleep(0.4)
        assert await queue.promote_due() == 1
        [again] = await queue.read("c1", 10, None)
        assert again.job_id == job_id and again.id != message.id
        await redis.aclose()

    asyncio.run(main())


def test_requeue_from_the_dead_letter_stream_is_atomic(redis_server: str):
    async def main():
        prefix = f"u{uuid.uuid4().hex[:8]}"
        clients = [await _store_and_queue(redis_server, prefix) for _ in range(5)]
        redis, store, queue = clients[0]
        job_id = await _new_job(redis, store, queue)
        [message] = await queue.read("c1", 10, None)
        await store.start(job_id)
        error = {"type": PROBLEM_BASE + "worker-crashed", "detail": "boom"}
        assert await queue.bury(message, error, 5) == 1
        job = await store.get(job_id)
        assert job.status == Status.failed and job.error == error
        [entry] = await queue.dead_entries()
        assert (entry.job_id, entry.reason, entry.error_type, entry.attempts) == (job_id, "boom", "worker-crashed", 5)

        # Five clients requeue the same entry at once: exactly one does it, the job is queued once.
        results = await asyncio.gather(*(q.requeue_dead(entry.id) for _, _, q in clients))
        assert sorted(code for code, _ in results) == [-1, -1, -1, -1, 1]
        job = await store.get(job_id)
        assert (job.status, job.attempts, job.error) == (Status.queued, 0, None)
        assert [f["job"] for _, f in await redis.xrange(queue.keys.stream)] == [job_id]
        assert await queue.dead_entries() == []
        assert await redis.zrange(queue.keys.index_of("queued"), 0, -1) == [job_id]
        assert await redis.zrange(queue.keys.index_of("failed"), 0, -1) == []

        # A second dead entry for a job that is queued again is only removed, not queued twice.
        await redis.xadd(queue.keys.dead, {"job": job_id, "reason": "old"})
        [stale] = await queue.dead_entries()
        assert await queue.requeue_dead(stale.id) == (0, job_id)
        assert await redis.xlen(queue.keys.stream) == 1
        for r, _, _ in clients:
            await r.aclose()

    asyncio.run(main())


def test_release_and_extend_touch_only_the_callers_messages(redis_server: str):
    async def main():
        redis, store, queue = await _store_and_queue(redis_server, f"u{uuid.uuid4().hex[:8]}")
        mine = await _new_job(redis, store, queue)
        theirs = await _new_job(redis, store, queue)
        [m1] = await queue.read("me", 1, None)
        [m2] = await queue.read("other", 1, None)
        assert (m1.job_id, m2.job_id) == (mine, theirs)
        await store.start(mine)
        await asyncio.sleep(0.2)
        assert await queue.extend("me", [m1.id, m2.id]) == [m2.id]
        idle = {
            p["message_id"]: p["time_since_delivered"]
            for p in await redis.xpending_range(queue.keys.stream, queue.GROUP, "-", "+", 10)
        }
        assert idle[m1.id] < 100 <= idle[m2.id]  # ours was renewed, theirs not

        assert await queue.release("me", [m1.id, m2.id]) == 1
        job = await store.get(mine)
        assert (job.status, job.attempts) == (Status.queued, 0)  # the interrupted try does not count
        assert await queue.own_pending_ids("me") == []
        assert await queue.own_pending_ids("other") == [m2.id]
        [fresh] = await queue.read("next", 10, None)
        assert fresh.job_id == mine and fresh.id != m1.id
        await redis.aclose()

    asyncio.run(main())


def test_outcomes_do_not_undo_a_finished_job(redis_server: str):
    async def main():
        redis, store, queue = await _store_and_queue(redis_server, f"u{uuid.uuid4().hex[:8]}")
        job_id = await _new_job(redis, store, queue)
        [first] = await queue.read("a", 1, None)
        await store.start(job_id)
        thumb = {"name": "t.jpg", "width": 8, "height": 8, "format": "jpeg", "bytes": 1, "etag": "e"}
        assert await queue.complete(first, [thumb]) == 1
        duplicate = Message("0-1", job_id)
        error = {"type": PROBLEM_BASE + "corrupt-image", "detail": "late"}
        assert await queue.complete(duplicate, [thumb]) == -2
        assert await queue.fail(duplicate, error) == -2
        assert await queue.retry_later(duplicate, 0, error) == -2
        assert await queue.bury(duplicate, error) == -2
        job = await store.get(job_id)
        assert job.status == Status.done and job.error is None and job.thumbnails[0].name == "t.jpg"
        assert await queue.dead_entries() == [] and await queue.delayed_count() == 0
        assert await queue.complete(Message("0-2", "f" * 32), []) == -1  # deleted job
        await redis.aclose()

    asyncio.run(main())


def test_retention_sweeps_only_finished_jobs_past_the_period(redis_server: str, tmp_path: Path):
    async def main():
        prefix = f"u{uuid.uuid4().hex[:8]}"
        redis, store, queue = await _store_and_queue(redis_server, prefix)
        storage = LocalStorage(tmp_path / "objects", tmp_path / "spool")
        ids = {name: await _new_job(redis, store, queue) for name in ("done", "failed")}
        ids["queued"] = await _new_job(redis, store, queue, enqueue=False)
        done, failed = await queue.read("c1", 10, None)
        await queue.complete(done, [])
        await queue.fail(failed, {"type": PROBLEM_BASE + "unsupported-image", "detail": "no"})
        for job_id in ids.values():
            await storage.put_bytes(original_key(job_id), b"o")
            await storage.put_bytes(thumbnail_key(job_id, "t.jpg"), b"t")
        await redis.xadd(queue.keys.dead, {"job": ids["failed"], "reason": "old"}, id="1-0")
        await redis.xadd(queue.keys.dead, {"job": ids["failed"], "reason": "new"})
        retention = Retention(redis, storage, Keys(prefix), retention_s=60, interval_s=30, owner="me")
        assert await retention.sweep() == 0  # all younger than the period
        assert [e.reason for e in await queue.dead_entries()] == ["new"]  # the dead entry from 1970 is trimmed
        later = time.time() + 120
        assert await retention.maybe_sweep(now=later) == 2
        assert await store.get(ids["done"]) is None and await store.get(ids["failed"]) is None
        assert (await store.get(ids["queued"])).status == Status.queued  # unfinished: kept
        assert not (tmp_path / "objects" / "thumbnails" / ids["done"]).exists()
        assert not (tmp_path / "objects" / "originals" / ids["failed"]).exists()
        assert (tmp_path / "objects" / "originals" / ids["queued"]).exists()
        assert await queue.dead_entries() == []
        assert await retention.maybe_sweep(now=later) is None  # another sweep within the interval: not ours
        await redis.aclose()

    asyncio.run(main())


# -- the render pool ------------------------------------------------------------------------------------------------


@pytest.mark.service  # render processes (multiprocessing's spawn, which the audit hook does not see)
def test_render_pool_replaces_a_child_that_dies_or_overruns(tmp_path: Path):
    small = tmp_path / "small.jpg"
    small.write_bytes(make_jpeg(320, 240))
    slow = tmp_path / "slow.png"
    slow.write_bytes(images.slow_avif_source())
    spec = ThumbnailSpec(sizes=["128"])
    heavy = ThumbnailSpec(sizes=["4096"], format="avif")

    async def main():
        pool = RenderPool(Settings(image_timeout_s=20, vips_concurrency=1), VipsBackend(), size=1)
        await pool.start()
        try:
            [before] = pool.pids()
            [r] = await pool.render(small, "jpeg", spec, "small")
            assert (r.width, r.height) == (128, 96)

            # A child killed under an image (as the OOM killer would): WorkerCrashed, and a new child.
            task = asyncio.ensure_future(pool.render(slow, "png", heavy, "slow"))
            await asyncio.sleep(0.5)
            os.kill(before, signal.SIGKILL)
            with pytest.raises(WorkerCrashed, match="SIGKILL"):
                await task
            [r] = await pool.render(small, "jpeg", spec, "small")
            assert r.width == 128
            [after] = pool.pids()
            assert after != before

            # Over the deadline: ImageTimeout, the child killed and replaced.
            pool.timeout = 0.3
            with pytest.raises(ImageTimeout):
                await pool.render(slow, "png", heavy, "slow")
            pool.timeout = 20
            [r] = await pool.render(small, "jpeg", spec, "small")
            assert r.width == 128 and pool.pids() != [after]
            assert pool.replaced == 2
        finally:
            await pool.close()

    asyncio.run(main())
