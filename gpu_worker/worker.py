"""The consumer loop: read jobs from the stream, render each in a render process, store, finish, ack.

What keeps it reliable (README "Reliability"):
- every message stays pending until its outcome is recorded together with its ack (one Lua script each, in
  `thumbify.queue`); a worker killed mid-batch leaves its messages to be claimed by another after
  `visibility_timeout_s`, while a live worker renews the claims on what it holds (`_keep_claims`); a worker's
  heartbeat (`_heartbeat`) lets the others take a killed worker's messages seconds after its last beat instead;
- a transient failure (storage, a crashed render process, anything unexpected) goes back to the queue after an
  exponential backoff with full jitter; a permanent one (corrupt image, image-timeout) fails at once; past
  `max_attempts` the job is failed and its message moved to the dead-letter stream;
- images render in child processes (`gpu_worker.pool`), so one that hangs is stopped at `image_timeout_s`;
- on GPU nodes (`gpu_worker.backend_choice`) the images `route` sends to the GPU are gathered into batches for one
  GPU render process (up to `dali_max_batch`, waiting at most `batch_wait_ms`); what it leaves to vips (formats DALI
  does not take, what it refuses or fails on) renders in the vips render processes, as everything does on CPU nodes,
  and so does a DALI image that finds a vips process idle while the GPU is busy (`gpu_worker.renderers`);
- SIGTERM: stop reading, let in-flight jobs finish within `shutdown_grace_s`, hand the rest back to the queue;
- Redis going away is waited out with backoff, by every loop and every job's next step; the worker never exits
  for it, and on reconnecting it takes back its own deliveries whose replies were lost;
- housekeeping: due retries promoted onto the stream, expired jobs swept (`thumbify.retention`);
- completion webhooks are delivered by a task of their own (`gpu_worker.deliverer`), beside the job loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gpu_worker.backends.base import Backend, Rendition, Route
from gpu_worker.backends.route import RoutedBackend, decide, source_size
from gpu_worker.deliverer import Deliverer
from gpu_worker.metrics import BATCH_SIZE, JOB_ERRORS, JOB_SECONDS, JOBS, JOBS_IN_FLIGHT
from gpu_worker.pool import BatchRenderer, RenderPool
from gpu_worker.renderers import Renderers, jobs_in_flight
from thumbify import logs, tracing
from thumbify.errors import GaveUp, OriginalMissing, StorageFailed, ThumbifyError
from thumbify.jobs import Job, JobStore, Thumbnail
from thumbify.keyspace import Keys
from thumbify.outbox import Outbox
from thumbify.probe import probe_for
from thumbify.queue import JobQueue, Message, backoff_delay
from thumbify.redis_conn import cancel_and_wait, connect, raise_if_cancelled
from thumbify.retention import Retention
from thumbify.settings import Settings
from thumbify.state import GONE, OK
from thumbify.storage import Storage, open_storage, original_key, thumbnail_key, thumbnails_prefix

log = logging.getLogger("thumbify.worker")

# What "Redis is not answering" looks like (BusyLoadingError, while it reads its AOF back, is a ConnectionError).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
PROMOTE_EVERY_S = 0.25
# The heartbeat: a key that expires HEARTBEAT_TTL_S after its last renewal, renewed every HEARTBEAT_EVERY_S. Once it
# has expired, other workers take this worker's messages at their next look (every HEARTBEAT_EVERY_S at most), so a
# killed worker's jobs wait seconds, not the visibility timeout.
HEARTBEAT_TTL_S = 10.0
HEARTBEAT_EVERY_S = 3.0
T = TypeVar("T")


class Worker:
    def __init__(self, settings: Settings, backend: Backend, name: str | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.processes = settings.image_process_count()
        # On GPU nodes: the routed GPU backend, run in one render process fed whole batches (`self.gpu`).
        self.gpu_backend = backend if isinstance(backend, RoutedBackend) else None
        self.gpu: BatchRenderer | None = None
        self.capacity = jobs_in_flight(self.processes, settings.dali_max_batch if self.gpu_backend else 0)
        self._preparing: set[str] = set()  # messages whose job has not yet reached its render call
        vis = settings.visibility_timeout_s
        self.extend_every_s = max(0.05, vis / 3)  # renew our claims well before anyone may take them
        # look for others' stale messages, those of workers whose heartbeat stopped, and our orphans
        self.claim_every_s = max(0.1, min(HEARTBEAT_EVERY_S, vis / 2))
        self.stopping = asyncio.Event()
        self.inflight: dict[str, asyncio.Task] = {}  # message id -> its handler
        self.processed = 0
        self._stop_at: float | None = None
        self._grace = settings.shutdown_grace_s

    # -- life cycle ---------------------------------------------------------------------------------------------

    def stop(self, grace: float | None = None) -> None:
        """Begin a graceful stop (SIGTERM): no more reading; in-flight jobs get `shutdown_grace_s` to finish. A
        second call (a second signal) shortens the grace to `grace` (default: none left)."""
        if self.stopping.is_set():
            self._grace = 0.0 if grace is None else grace
            return
        if grace is not None:
            self._grace = grace
        self._stop_at = time.monotonic()
        self.stopping.set()

    async def run(self) -> None:
        self.redis = connect(self.settings.redis_url)
        keys = Keys(self.settings.key_prefix)
        self.store = JobStore(self.redis, keys)
        self.queue = JobQueue(self.redis, keys)
        self.storage: Storage = open_storage(self.settings)
        self.retention = Retention(
            self.redis,
            self.storage,
            keys,
            self.settings.retention_s,
            self.settings.cleanup_interval_s,
            self.name,
        )
        cpu_backend = self.gpu_backend.vips if self.gpu_backend else self.backend
        self.pool = RenderPool(self.settings, cpu_backend, self.processes)
        if not await self._unless_stopped(self._start_renderers()):
            await self._close()
            return
        self.renderers = Renderers(self.pool, self.gpu, self.settings.gpu_spill)
        spill = ", spilling to idle vips processes" if self.settings.gpu_spill else ""
        log.info(
            "worker %s: %d render processes%s, up to %d jobs in flight, batches of up to %d",
            self.name,
            self.processes,
            f" + 1 GPU render process (batches of up to {self.gpu.max_batch}{spill})" if self.gpu else "",
            self.capacity,
            self.settings.batch_size,
        )
        background: list[asyncio.Task] = []
        try:
            await self._until_ready()
            background = [
                asyncio.create_task(self._heartbeat(), name="heartbeat"),
                asyncio.create_task(self._keep_claims(), name="keep-claims"),
                asyncio.create_task(self._housekeeping(), name="housekeeping"),
                asyncio.create_task(
                    Deliverer(self.settings, self.store, Outbox(self.redis, keys), self.name).run(), name="webhooks"
                ),
            ]
            await self._consume()
            await self._drain()
        finally:
            await cancel_and_wait(background)
            await cancel_and_wait(list(self.inflight.values()))
            await self._close()

    async def _close(self) -> None:
        await self.pool.close()
        if self.gpu is not None:
            await self.gpu.close()
        await self.storage.aclose()
        await self.redis.aclose()
        log.info("worker %s stopped (%d jobs done)", self.name, self.processed)

    async def _start_renderers(self) -> None:
        await self.pool.start()
        if self.gpu_backend is not None:
            await self._start_gpu()

    async def _unless_stopped(self, start: Awaitable[None]) -> bool:
        """Run a start-up step; a stop (a signal) meanwhile cancels it (what it started is stopped) and gives
        False, so a worker that is still starting stops at once instead of finishing its start first."""
        task = asyncio.ensure_future(start)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            task.result()
            return True
        await cancel_and_wait([task])
        return False

    async def _start_gpu(self) -> None:
        """The GPU render process; with THUMBIFY_BACKEND=auto a GPU that fails to start leaves a vips-only worker."""
        s = self.settings
        pool = RenderPool(s, self.gpu_backend, size=1)
        gpu = BatchRenderer(pool, s.dali_max_batch, s.batch_wait_ms / 1000, lambda: bool(self._preparing))
        try:
            await gpu.start()
        except Exception as exc:
            await pool.close()
            if s.backend == "gpu":
                await self.pool.close()
                raise
            log.error("the GPU render process did not start (%s); this worker runs vips only", exc)
            self.capacity = jobs_in_flight(self.processes)
            return
        self.gpu = gpu

    async def _until_ready(self) -> None:
        delay = 0.2
        while not self.stopping.is_set():
            try:
                await self.queue.ensure_group()
                return
            except REDIS_DOWN as exc:
                log.warning("waiting for redis (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a stop begins."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # -- reading ------------------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        last_claim = 0.0
        delay = 0.2
        while not self.stopping.is_set():
            free = self.capacity - len(self.inflight)
            if free <= 0:
                await asyncio.wait(list(self.inflight.values()), timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                if time.monotonic() - last_claim > self.claim_every_s:
                    last_claim = time.monotonic()
                    await self._recover(free)
                    free = self.capacity - len(self.inflight)
                    if free <= 0:
                        continue
                await self._read_batch(min(free, self.settings.batch_size))
                delay = 0.2
            except REDIS_DOWN as exc:
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)
                last_claim = 0.0  # once it answers again, take back what we were sent but never heard
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    log.warning("the consumer group is gone (redis lost its data?); creating it again")
                    await self._until_ready()
                    continue
                log.warning("redis refused (%s); retrying in %.1fs", exc, delay)  # OOM, MISCONF, ...
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:  # a bug: log it, but never let it take the worker down
                log.exception("consumer loop error; retrying in %.1fs", delay)
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _read_batch(self, count: int) -> None:
        """Up to `count` messages in one blocking read; each starts at once. Redis answers a blocked read as soon as a
        message arrives (only a BLOCK that times out is timed at 10 Hz), and `_consume` reads again at once, so no
        polling is needed to fill a batch: a burst arrives in the next reads. (GPU batches gather in
        `BatchRenderer`.)"""
        busy = bool(self.inflight)
        read = asyncio.ensure_future(self.queue.read(self.name, count, 200 if busy else 1000))
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not read.done():  # stopping: a reply lost to this cancel leaves the message in our pending list,
            read.cancel()  # which `_drain` hands back
            with contextlib.suppress(asyncio.CancelledError, *REDIS_DOWN):
                await read
            return
        batch = read.result()
        if batch:
            BATCH_SIZE.observe(self._dispatch(batch))

    async def _recover(self, free: int) -> None:
        """Messages to take on besides new ones: our own deliveries no handler holds (their reply was lost to a
        dropped connection), then other consumers' messages idle past the visibility timeout (they died)."""
        own = await self.queue.read_own_pending(self.name, len(self.inflight) + free)
        orphans = [m for m in own if m.id not in self.inflight][:free]
        if orphans:
            log.info("taking back %d message(s) delivered to us whose reply was lost", len(orphans))
            free -= self._dispatch(orphans)
        if free <= 0:
            return
        orphaned = await self.queue.claim_orphaned(self.name, min(free, self.settings.batch_size))
        if orphaned:
            log.info("claimed %d message(s) of a worker whose heartbeat stopped: %s", len(orphaned), _ids(orphaned))
            free -= self._dispatch(orphaned)
        if free <= 0:
            return
        idle_ms = int(self.settings.visibility_timeout_s * 1000)
        stale = await self.queue.claim_stale(self.name, idle_ms, min(free, self.settings.batch_size))
        if stale:
            log.info("claimed %d message(s) left by a worker that stopped: %s", len(stale), _ids(stale))
            self._dispatch(stale)

    def _dispatch(self, messages: list[Message]) -> int:
        started = 0
        for message in messages:
            if message.id in self.inflight:
                continue
            task = asyncio.create_task(self._handle(message), name=f"job-{message.job_id}")
            self.inflight[message.id] = task
            self._preparing.add(message.id)
            task.add_done_callback(lambda _t, mid=message.id: self._done(mid))
            started += 1
        JOBS_IN_FLIGHT.set(len(self.inflight))
        return started

    def _done(self, message_id: str) -> None:
        self.inflight.pop(message_id, None)
        self._preparing.discard(message_id)
        JOBS_IN_FLIGHT.set(len(self.inflight))

    # -- background ---------------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Say we are alive; on the way out (a clean stop), say we are not, so that we are removed from the group."""
        try:
            while True:
                try:
                    await self.queue.beat(self.name, HEARTBEAT_TTL_S)
                except REDIS_DOWN as exc:
                    log.debug("could not renew the heartbeat (%s)", exc)
                raise_if_cancelled()
                await asyncio.sleep(HEARTBEAT_EVERY_S)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.queue.retire(self.name), 2)

    async def _keep_claims(self) -> None:
        """Renew the claims on what we hold, so a long image is not taken over while we still work on it."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(self.extend_every_s)
            ids = list(self.inflight)
            if not ids:
                continue
            try:
                lost = await self.queue.extend(self.name, ids)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away or refusing: try again next time
                log.debug("could not renew claims (%s)", exc)
                continue
            lost = [i for i in lost if i in self.inflight]
            if lost:
                log.info("messages %s are no longer ours (taken over?); a duplicate writes the same result", lost)

    async def _housekeeping(self) -> None:
        """Promote due retries onto the stream; sweep expired jobs when the cleanup lock is ours."""
        next_sweep = 0.0
        while True:
            try:
                while await self.queue.promote_due(100) == 100:
                    pass
                if self.settings.retention_s and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + self.settings.cleanup_interval_s
                    await self.retention.maybe_sweep()
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                log.debug("housekeeping: redis unavailable (%s)", exc)
            except Exception:
                log.exception("housekeeping failed; trying again")
            raise_if_cancelled()
            await asyncio.sleep(PROMOTE_EVERY_S)

    # -- shutdown -----------------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Give in-flight jobs what is left of the grace period, then hand back what did not finish."""
        deadline = (self._stop_at or time.monotonic()) + self._grace
        if self.inflight:
            log.info("stopping: waiting up to %.1fs for %d job(s) in flight", self._grace, len(self.inflight))
        while self.inflight:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Re-read the deadline often: a second signal shortens the grace.
            await asyncio.wait(list(self.inflight.values()), timeout=min(remaining, 0.2))
            deadline = (self._stop_at or time.monotonic()) + self._grace
        unfinished = list(self.inflight.values())
        self.pool.stop_replacing()  # render processes stopped from here on are not worth starting again
        if self.gpu is not None:
            self.gpu.stop_replacing()
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.wait(unfinished, timeout=5)
        try:
            ids = await asyncio.wait_for(self.queue.own_pending_ids(self.name), 5)
            released = await asyncio.wait_for(self.queue.release(self.name, ids), 5)
        except Exception as exc:  # Redis away: the messages stay pending and are claimed after the timeout
            log.warning("could not hand back unfinished jobs (%s); others take them after the visibility timeout", exc)
            return
        if released:
            log.info("handed %d unfinished job(s) back to the queue", released)

    # -- one job ------------------------------------------------------------------------------------------------

    async def _redis(self, op: Callable[..., Awaitable[T]], *args) -> T:
        """`op(*args)`, retried with backoff for as long as Redis does not answer (a stop cancels the wait)."""
        delay = 0.2
        while True:
            try:
                return await op(*args)
            except REDIS_DOWN as exc:
                log.warning("redis unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _handle(self, message: Message) -> None:
        logs.open_context(job_id=message.job_id)  # this task's own context: every line about the job says which
        try:
            await self._handle_one(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug: the message stays pending and is taken on again (by us, or by another worker).
            log.exception("job %s: unexpected error; it will be retried", message.job_id)

    async def _handle_one(self, message: Message) -> None:
        job_id = message.job_id
        attempts, job = await self._redis(self.store.take, job_id)
        if job is None:
            await self._redis(self.queue.ack, message)  # deleted, or a duplicate delivery of a finished job
            return
        logs.bind(request_id=job.request_id)  # the upload's request: its lines and the API's join in one query
        limit = self.settings.max_attempts
        if attempts > limit:
            # Only a try that ended without recording anything gets here: the worker running it died.
            last = job.error or {}
            error = GaveUp(
                f"gave up after {attempts - 1} attempts; last error: "
                f"{last.get('detail', 'the worker processing it stopped (killed or crashed)')}"
            ).as_error()
            error["type"] = last.get("type", error["type"])
            await self._redis(self.queue.bury, message, error, attempts - 1)
            log.warning("job %s: %s", job_id, error["detail"])
            JOBS.labels("dead", self.backend.name).inc()
            JOB_ERRORS.labels(GaveUp.slug).inc()
            return
        try:
            thumbnails = await self._process(job, message.id)
        except ThumbifyError as exc:
            failure = exc
        except Exception as exc:
            log.exception("job %s: unexpected error", job_id)
            failure = ThumbifyError(f"{exc.__class__.__name__}: {exc}")
        else:
            await self._finished(message, job, thumbnails)
            return
        JOB_ERRORS.labels(failure.slug).inc()
        if failure.permanent:
            log.info("job %s failed: %s", job_id, failure.detail)
            await self._redis(self.queue.fail, message, failure.as_error())
            JOBS.labels("failed", self.backend.name).inc()
        elif attempts >= limit:
            error = failure.as_error()
            error["detail"] = f"{failure.detail} (gave up after {attempts} attempts)"
            log.warning("job %s: %s; moved to the dead-letter stream", job_id, error["detail"])
            await self._redis(self.queue.bury, message, error, attempts)
            JOBS.labels("dead", self.backend.name).inc()
        else:
            s = self.settings
            delay = backoff_delay(attempts, s.retry_base_s, s.retry_max_s)
            log.warning("job %s: %s; retry %d of %d in %.2fs", job_id, failure.detail, attempts + 1, limit, delay)
            await self._redis(self.queue.retry_later, message, delay, failure.as_error())
            JOBS.labels("retry", self.backend.name).inc()

    async def _finished(self, message: Message, job: Job, thumbnails: list[Thumbnail]) -> None:
        source = job.source if "facts" in job.source else None
        outcome = await self._redis(self.queue.complete, message, [t.model_dump() for t in thumbnails], source)
        if outcome == GONE:  # deleted while we worked: take back what we wrote
            await self.storage.delete_prefix(thumbnails_prefix(job.id))
            return
        if outcome != OK:  # a duplicate delivery; the job was done already, with the same files
            return
        self.processed += 1
        JOBS.labels("done", self.backend.name).inc()
        log.info("job %s done: %d thumbnail(s)", job.id, len(thumbnails))
        if self.settings.delete_originals:
            try:
                await self.storage.delete_prefix(original_key(job.id))
            except Exception as exc:  # retention removes it later
                log.warning("job %s: could not delete the original (%s)", job.id, exc)

    async def _process(self, job: Job, message_id: str) -> list[Thumbnail]:
        with tracing.job_span(job.traceparent, {logs.JOB_ID: job.id, logs.REQUEST_ID: job.request_id}):
            return await self._process_traced(job, message_id)

    async def _process_traced(self, job: Job, message_id: str) -> list[Thumbnail]:
        started = time.perf_counter()
        try:
            async with self.storage.local_copy(job.original_key or original_key(job.id), job.original_etag) as path:
                self._preparing.discard(message_id)  # the GPU batch gathering need not wait for this job any more
                if job.verify:  # the API judged only its header (a large direct upload, an object in the bucket)
                    with tracing.span("verify"):
                        await asyncio.to_thread(probe_for, path, self.settings)
                with tracing.span("render", {"thumbify.backend": self.backend.name}):
                    renditions = await self._render(path, job)
        except FileNotFoundError as exc:
            raise OriginalMissing("the uploaded original is missing from storage") from exc
        except OSError as exc:
            raise StorageFailed(f"could not read the original: {exc}") from exc
        JOB_SECONDS.labels(self.backend.name).observe(time.perf_counter() - started)
        facts = next((r.facts for r in renditions if r.facts), None)
        if facts:  # stored with the outcome (`_finished`): the job's source as GET /v1/jobs and webhooks show it
            job.source["facts"] = facts
        thumbnails = []
        for r in renditions:
            try:
                with tracing.span("store", {"thumbify.thumbnail.name": r.name}):
                    await self.storage.put_bytes(thumbnail_key(job.id, r.name), r.data)
            except OSError as exc:
                raise StorageFailed(f"could not store thumbnail {r.name}: {exc}") from exc
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
        return thumbnails

    async def _render(self, path: Path, job: Job) -> list[Rendition]:
        """Where the image is routed (`route.decide`, once per image; vips on CPU nodes), as `Renderers` sends it."""
        fmt = job.source["format"]
        where: Route = "vips"
        if self.gpu is not None:
            cap, size = self.settings.one_shot_max_pixels, source_size(job.source)
            # Without the probed size (an old job) the header says it: read off the event loop.
            where = decide(path, fmt, size, cap) if size else await asyncio.to_thread(decide, path, fmt, None, cap)
        return await self.renderers.render(path, fmt, job.spec, job.stem, where)


def _ids(messages: list[Message]) -> str:
    return ", ".join(m.job_id for m in messages[:5]) + (" ..." if len(messages) > 5 else "")
