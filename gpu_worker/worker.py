"""The consumer loop: read jobs from the stream in batches, render them in a thread pool, store, finish, ack."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gpu_worker.backends.base import Backend
from thumbify.errors import ThumbifyError
from thumbify.jobs import TERMINAL, JobStore, Status, Thumbnail
from thumbify.metrics import BATCH_SIZE, JOB_SECONDS, JOBS
from thumbify.queue import JobQueue, Message
from thumbify.redis_conn import connect
from thumbify.settings import Settings
from thumbify.storage import Storage, open_storage

log = logging.getLogger("thumbify.worker")
CLAIM_EVERY_S = 5.0


class Worker:
    def __init__(self, settings: Settings, backend: Backend, name: str | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.threads = settings.image_threads()
        # Twice the threads in flight, so the next images are fetched while the current ones render.
        self.capacity = max(2, self.threads * 2)
        self.stopping = asyncio.Event()
        self.processed = 0

    async def run(self) -> None:
        redis = connect(self.settings.redis_url)
        self.store = JobStore(redis, self.settings.key_prefix)
        self.queue = JobQueue(redis, self.settings.key_prefix)
        self.storage: Storage = open_storage(self.settings)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="image")
        inflight: set[asyncio.Task] = set()
        last_claim = 0.0
        log.info("worker %s: %d image threads, batches of up to %d", self.name, self.threads, self.settings.batch_size)
        try:
            await self._until_ready()
            while not self.stopping.is_set():
                free = self.capacity - len(inflight)
                if free <= 0:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    batch: list[Message] = []
                    if time.monotonic() - last_claim > CLAIM_EVERY_S:
                        last_claim = time.monotonic()
                        idle_ms = int(self.settings.visibility_timeout_s * 1000)
                        batch = await self.queue.claim_stale(self.name, idle_ms, min(free, self.settings.batch_size))
                    if not batch:
                        batch = await self._read_batch(min(free, self.settings.batch_size), busy=bool(inflight))
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    log.warning("redis unavailable (%s); retrying", exc)
                    await asyncio.sleep(1.0)
                    continue
                if batch:
                    BATCH_SIZE.observe(len(batch))
                for message in batch:
                    task = asyncio.create_task(self._handle(message))
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
        finally:
            if inflight:
                await asyncio.wait(inflight)
            self.pool.shutdown(wait=True)
            await redis.aclose()

    def stop(self) -> None:
        self.stopping.set()

    async def _until_ready(self) -> None:
        delay = 0.2
        while not self.stopping.is_set():
            try:
                await self.queue.ensure_group()
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("waiting for redis (%s)", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _read_batch(self, count: int, busy: bool) -> list[Message]:
        """Up to `count` messages: block for the first, then wait at most `batch_wait_ms` to fill the batch."""
        block_ms = 200 if busy else 1000
        batch = await self.queue.read(self.name, count, block_ms)
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while batch and len(batch) < count and time.monotonic() < deadline:
            wait_ms = max(1, int((deadline - time.monotonic()) * 1000))
            more = await self.queue.read(self.name, count - len(batch), wait_ms)
            if not more:
                break
            batch += more
        return batch

    async def _handle(self, message: Message) -> None:
        try:
            await self._handle_one(message)
        except Exception:
            # Redis went away while recording the outcome: the message stays pending and is claimed again.
            log.exception("job %s: could not record the outcome; it will be retried", message.job_id)

    async def _handle_one(self, message: Message) -> None:
        job_id = message.job_id
        try:
            job = await self.store.get(job_id)
            if job is None or job.status in TERMINAL:
                await self.queue.ack(message)  # deleted, or a duplicate delivery of a finished job
                return
            attempts = await self.store.start(job_id)
            if attempts < 0:
                await self.queue.ack(message)
                return
            if attempts > self.settings.max_attempts:
                error = {
                    "type": "https://thumbify.dev/problems/gave-up",
                    "detail": f"gave up after {attempts - 1} attempts; last error: "
                    f"{(job.error or {}).get('detail', 'unknown')}",
                }
                await self.store.fail(job_id, error)
                await self.queue.bury(message, error["detail"])
                JOBS.labels("dead", self.backend.name).inc()
                return
            await self._process(job)
            await self.queue.ack(message)
        except ThumbifyError as exc:
            if not exc.permanent:
                await self._transient(job_id, exc)
                return
            log.info("job %s failed: %s", job_id, exc.detail)
            await self.store.fail(job_id, exc.as_error())
            await self.queue.ack(message)
            JOBS.labels("failed", self.backend.name).inc()
        except FileNotFoundError:
            # The original is gone: the job was deleted while we worked, or storage lost it.
            if await self.store.get(job_id) is not None:
                await self.store.fail(
                    job_id,
                    {
                        "type": "https://thumbify.dev/problems/original-missing",
                        "detail": "the uploaded original is missing from storage",
                    },
                )
            await self.queue.ack(message)
        except Exception as exc:
            await self._transient(job_id, exc)

    async def _transient(self, job_id: str, exc: Exception) -> None:
        """Leave the message pending: it is claimed again after the visibility timeout and counted as an attempt."""
        log.warning("job %s: transient error, will retry: %s", job_id, exc, exc_info=True)
        with contextlib.suppress(Exception):
            await self.store.set_status(
                job_id,
                Status.queued,
                error={"type": "https://thumbify.dev/problems/transient", "detail": f"{exc.__class__.__name__}: {exc}"},
            )
        JOBS.labels("retry", self.backend.name).inc()

    async def _process(self, job) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        async with self.storage.local_copy(f"originals/{job.id}") as path:
            renditions = await loop.run_in_executor(
                self.pool, self.backend.render, path, job.source["format"], job.spec, job.stem
            )
        JOB_SECONDS.labels(self.backend.name).observe(time.perf_counter() - started)
        thumbnails = []
        for r in renditions:
            await self.storage.put_bytes(f"thumbnails/{job.id}/{r.name}", r.data)
            thumbnails.append(
                Thumbnail(
                    name=r.name,
                    width=r.width,
                    height=r.height,
                    format=r.format.value,
                    bytes=len(r.data),
                    etag=hashlib.sha256(r.data).hexdigest()[:32],
                )
            )
        if not await self.store.finish(job.id, thumbnails):
            await self.storage.delete_prefix(f"thumbnails/{job.id}")  # deleted while we worked
            return
        self.processed += 1
        JOBS.labels("done", self.backend.name).inc()
