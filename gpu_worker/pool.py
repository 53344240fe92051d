"""Render processes: a small pool of child processes, each rendering one image at a time.

Rendering runs in children rather than threads so that one image can be stopped: a task that passes its deadline
(`image_timeout_s`) gets its child killed and replaced and raises `ImageTimeout`; a child that dies under an image
(a crash, the OOM killer) is replaced too, and the task raises `WorkerCrashed`. The worker's event loop talks to the
children over pipes (no thread hop): a task is one pickled message out and one back, a few tens of microseconds
next to the milliseconds of even a small thumbnail.

Children are started with the `spawn` context (a fresh interpreter: nothing of the parent's threads, event loop or
libvips state is inherited), configured like a worker (2 malloc arenas, libvips cache off, `vips_concurrency`
threads), and die with their parent even when it is killed with SIGKILL (PR_SET_PDEATHSIG). A child counts as
idle only once it has said it is ready, so a task's deadline never includes a child's start-up.

GPU nodes add a pool of one child holding the routed GPU backend (one DALI pipeline, not one per core), fed whole
batches by a `BatchRenderer`: single-image requests gathered for up to `batch_wait_ms` or until `dali_max_batch`
are waiting. A batch task's deadline is `image_timeout_s` × its images; the child answers each image as soon as it
is done. A batch that overruns or whose child dies loses only the images not yet answered, and each of those is
tried again alone (its own `image_timeout_s`), so one bad image fails only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from gpu_worker.backends.base import Backend, BatchBackend, Item, OnResult, Refused, Rendition, Result, Route
from gpu_worker.metrics import RENDER_BATCH, RENDER_REPLACED, RENDERS
from thumbify import tracing
from thumbify.errors import ImageTimeout, RenderFailed, ThumbifyError, WorkerCrashed
from thumbify.settings import Settings
from thumbify.spec import ThumbnailSpec

log = logging.getLogger("thumbify.worker")

START_TIMEOUT_S = 60.0


class _Child:
    __slots__ = ("process", "conn", "tasks")

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.tasks = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid


class RenderPool:
    def __init__(self, settings: Settings, backend: Backend, size: int | None = None) -> None:
        self.settings = settings
        self.size = size or settings.image_process_count()
        self.timeout = settings.image_timeout_s
        self.backend_name = backend.name
        # The backend travels to each child pickled when it can (the CPU backend is a plain object); otherwise the
        # child builds its own from the settings.
        try:
            self._backend_blob: bytes | None = pickle.dumps(backend)
        except Exception:
            self._backend_blob = None
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: asyncio.Queue[_Child] = asyncio.Queue()
        self._children: set[_Child] = set()
        self._starting: set[asyncio.Task] = set()
        self._reapers: set[asyncio.Task] = set()
        self._closing = False
        self.replaced = 0  # children replaced after a timeout or a crash
        self._asked = 0  # `render` calls rendering or waiting for a child

    # -- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every child and wait until each is ready; raises if one cannot start."""
        children = [self._spawn() for _ in range(self.size)]
        try:
            await asyncio.gather(*(self._until_ready(c) for c in children))
        except BaseException:
            for child in children:
                self._kill(child)
            raise
        for child in children:
            self._idle.put_nowait(child)

    def stop_replacing(self) -> None:
        """From now on a child that is killed or dies is not replaced (the pool is about to close)."""
        self._closing = True

    async def close(self, timeout: float = 5.0) -> None:
        """Stop every child: idle ones are asked to exit, busy ones (their tasks were cancelled) are killed."""
        self._closing = True
        for task in list(self._starting):
            task.cancel()
        idle = set()
        while not self._idle.empty():
            idle.add(self._idle.get_nowait())
        for child in list(self._children):
            if child in idle:
                with contextlib.suppress(OSError, ValueError):
                    child.conn.send(None)
            else:
                self._kill(child)
        deadline = time.monotonic() + timeout
        for child in list(self._children):
            await self._reap(child, max(0.1, deadline - time.monotonic()))
        self._children.clear()
        if self._reapers:
            await asyncio.wait(list(self._reapers), timeout=max(0.1, deadline - time.monotonic()))

    def pids(self) -> list[int]:
        return [c.pid for c in self._children if c.pid]

    # -- rendering ------------------------------------------------------------------------------------------------

    def idle(self) -> int:
        """How many `render` calls asked now would start at once (children not asked for)."""
        return max(0, self.size - self._asked)

    async def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        """Render in the next free child, within `image_timeout_s` of handing it over."""
        self._asked += 1
        try:
            return await self._render(path, fmt, spec, stem)
        finally:
            self._asked -= 1

    async def _render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        child = await self._acquire(("render", str(path), fmt, spec, stem))
        handed_ns = time.time_ns()
        try:
            await _readable(child.conn, self.timeout)
            kind, payload, *stages = child.conn.recv()  # stage timings follow when we trace
        except TimeoutError:
            raise await self._lost(child, True, "the image", self.timeout) from None
        except (EOFError, OSError):
            raise await self._lost(child, False, "the image", self.timeout) from None
        except BaseException:  # cancelled (shutdown): the child may still be busy, so it cannot be reused
            self._replace(child, kill=True)
            raise
        child.tasks += 1
        self._idle.put_nowait(child)
        if stages:
            tracing.render_stages(stages[0], handed_ns)
        if kind == "ok":
            return payload
        raise payload

    async def render_batch(
        self, items: Sequence[Item], routes: Sequence[Route] | None = None, on_result: OnResult | None = None
    ) -> list[Result]:
        """Several images as one task of the next free child (its backend's `render_batch`, given where each image
        was routed), within `image_timeout_s` × their number of handing it over. One result per item, in order
        (`Refused` for one its backend leaves to vips); `on_result(index, result)` as each arrives. Past the
        deadline, or if the child dies, the child is replaced and each item not yet answered gets `ImageTimeout` or
        `WorkerCrashed`."""
        task = ("batch", [(str(p), f, s, st) for p, f, s, st in items], list(routes) if routes else None)
        child = await self._acquire(task)
        results: list[Result | None] = [None] * len(items)
        seconds = self.timeout * max(1, len(items))
        deadline = time.monotonic() + seconds
        lost: ThumbifyError | None = None  # the error of every image not answered
        try:
            while True:
                await _readable(child.conn, max(0.0, deadline - time.monotonic()))
                message = child.conn.recv()
                if message[0] == "done":
                    break
                _, index, _, payload = message
                results[index] = payload
                if on_result is not None:
                    on_result(index, results[index])
        except TimeoutError:
            lost = await self._lost(child, True, _what(len(items)), seconds)
        except (EOFError, OSError):
            lost = await self._lost(child, False, _what(len(items)), seconds)
        except BaseException:  # cancelled (shutdown): the child may still be busy, so it cannot be reused
            self._replace(child, kill=True)
            raise
        if lost is None:
            child.tasks += 1
            self._idle.put_nowait(child)
            lost = RenderFailed("the render process finished its batch without an answer for this image")
        return [lost if r is None else r for r in results]

    async def _lost(self, child: _Child, timed_out: bool, what: str, seconds: float) -> ThumbifyError:
        """Replace a child that overran its deadline or died under its task; the error for that task."""
        if timed_out:
            self._replace(child, kill=True)
            return ImageTimeout(f"{what} took longer than {seconds:g}s to process; its render process was stopped")
        detail = await self._death(child)
        self._replace(child, kill=True)
        return WorkerCrashed(f"the render process died while processing {what} ({detail})")

    async def _acquire(self, task: tuple) -> _Child:
        """An idle, live child that has accepted `task`."""
        while True:
            child = await self._idle.get()
            if not child.process.is_alive():  # died while idle (e.g. OOM-killed): not this task's fault
                code = child.process.exitcode
                log.warning("render process %s died while idle (exit %s); replacing it", child.pid, code)
                self._replace(child, kill=False)
                continue
            try:
                child.conn.send(task)
            except (OSError, ValueError):
                self._replace(child, kill=True)
                continue
            return child

    # -- children -----------------------------------------------------------------------------------------------

    def _spawn(self) -> _Child:
        # Started from the event loop's thread: PR_SET_PDEATHSIG in the child is tied to the thread that forked it.
        ours, theirs = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=child_main,
            args=(theirs, self.settings, self._backend_blob, tracing.enabled()),
            name=f"thumbify-render-{self.backend_name}",
            daemon=True,
        )
        process.start()
        theirs.close()  # so that the child's death reads as EOF here
        child = _Child(process, ours)
        self._children.add(child)
        return child

    async def _until_ready(self, child: _Child) -> None:
        try:
            await _readable(child.conn, START_TIMEOUT_S)
            message = child.conn.recv()
        except (TimeoutError, EOFError, OSError) as exc:
            raise RuntimeError(
                f"render process {child.pid} did not start (exit code {child.process.exitcode}): {exc!r}"
            ) from exc
        if message != "ready":
            raise RuntimeError(f"render process {child.pid} said {message!r} instead of ready")

    def _replace(self, child: _Child, kill: bool) -> None:
        """Retire `child` and start another in the background; it joins the idle queue once ready."""
        self._children.discard(child)
        if kill:
            self._kill(child)
        else:
            child.conn.close()
        reaper = asyncio.ensure_future(self._reap(child, 5.0))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)
        if self._closing:
            return
        self.replaced += 1
        RENDER_REPLACED.inc()
        task = asyncio.ensure_future(self._start_replacement())
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start_replacement(self) -> None:
        delay = 0.5
        while not self._closing:
            child = self._spawn()
            try:
                await self._until_ready(child)
            except asyncio.CancelledError:
                self._kill(child)
                raise
            except Exception as exc:
                log.error("could not start a render process (%s); retrying in %.1fs", exc, delay)
                self._children.discard(child)
                self._kill(child)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self._closing:
                self._children.discard(child)
                self._kill(child)
                return
            self._idle.put_nowait(child)
            return

    @staticmethod
    def _kill(child: _Child) -> None:
        with contextlib.suppress(Exception):
            child.process.kill()
        with contextlib.suppress(Exception):
            child.conn.close()

    @staticmethod
    async def _reap(child: _Child, timeout: float) -> None:
        """Wait for the child to exit (without blocking the loop); kill it if it takes longer than `timeout`."""
        deadline = time.monotonic() + timeout
        while child.process.is_alive():  # is_alive() reaps an exited child
            if time.monotonic() > deadline:
                with contextlib.suppress(Exception):
                    child.process.kill()
                deadline = time.monotonic() + 5.0
            await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            child.conn.close()

    @staticmethod
    async def _death(child: _Child) -> str:
        """How the child died, for the error: 'killed by SIGKILL', 'exit code 1', ..."""
        for _ in range(50):
            if not child.process.is_alive():
                break
            await asyncio.sleep(0.01)
        code = child.process.exitcode
        if code is None:
            return "it closed its pipe"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"


# `BatchRenderer.take_spillable`'s answer to the images it takes back: render them on vips (gpu_worker/renderers.py).
SPILLED = Refused("spilled to an idle vips process while the GPU was busy")


@dataclass
class _Request:
    item: Item
    route: Route
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class BatchRenderer:
    """Single-image requests gathered into batches for a pool of one batch child (the GPU render process).

    A batch goes as soon as `max_batch` requests wait, or the oldest has waited `wait_s`, or `more_coming()` says
    no job on its way could join it (so a lone image does not wait for company that is not coming). While one batch
    renders the next gathers. Sizes are counted in `sizes` and the `thumbify_render_batch_size` histogram."""

    def __init__(
        self, pool: RenderPool, max_batch: int, wait_s: float, more_coming: Callable[[], bool] = lambda: False
    ) -> None:
        self.pool = pool
        self.max_batch = max(1, max_batch)
        self.wait_s = wait_s
        self.more_coming = more_coming
        self.sizes: Counter[int] = Counter()  # batches run, by size
        self.routes: Counter[str] = Counter()  # images in those batches, by the backend they were routed to
        self._pending: list[_Request] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.busy = False  # a batch is rendering

    async def start(self) -> None:
        await self.pool.start()
        self._task = asyncio.create_task(self._serve(), name="render-batches")

    def stop_replacing(self) -> None:
        self.pool.stop_replacing()

    async def close(self) -> None:
        self.pool.stop_replacing()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for request in self._pending:
            request.future.cancel()
        self._pending.clear()
        await self.pool.close()

    def pids(self) -> list[int]:
        return self.pool.pids()

    async def render(
        self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str, route: Route = "dali"
    ) -> list[Rendition] | Refused:
        """The image's renditions from the next batch, on the backend it was routed to, or its refusal (render it on
        vips elsewhere); raises what rendering it raised."""
        return await self.submit(path, fmt, spec, stem, route)

    def submit(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str, route: Route = "dali") -> asyncio.Future:
        """`render`, queued now: the future of its result (`SPILLED` if `take_spillable` takes it back)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request((path, fmt, spec, stem), route, future))
        self._arrived.set()
        return future

    def take_spillable(self, count: int) -> int:
        """Take back up to `count` of the newest DALI images that would not be in the next batch to start (one is
        rendering, or more wait than a batch holds): each one's future gets `SPILLED`. How many were taken."""
        if count <= 0:
            return 0
        waiting = [r for r in self._pending if not r.future.done()]
        beyond = waiting if self.busy else waiting[self.max_batch :]
        taken = [r for r in beyond if r.route == "dali"][-count:]
        gone = {id(r) for r in taken}
        self._pending = [r for r in self._pending if id(r) not in gone]
        for request in taken:
            request.future.set_result(SPILLED)
        return len(taken)

    async def _serve(self) -> None:
        while True:
            batch = await self._gather()
            self.sizes[len(batch)] += 1
            RENDER_BATCH.observe(len(batch))
            for request in batch:
                self.routes[request.route] += 1
                RENDERS.labels(request.route, "routed").inc()
            self.busy = True
            try:
                await self._render(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: fail this batch's images (they are retried), keep serving
                log.exception("a render batch of %d failed", len(batch))
                for request in batch:
                    _settle(request.future, RenderFailed(f"{exc.__class__.__name__}: {exc}"))
            finally:
                self.busy = False

    async def _gather(self) -> list[_Request]:
        while True:
            self._pending = [r for r in self._pending if not r.future.done()]  # a cancelled job leaves
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            left = self._pending[0].arrived + self.wait_s - time.monotonic()
            if len(self._pending) >= self.max_batch or left <= 0 or not self.more_coming():
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        return batch

    async def _render(self, batch: list[_Request]) -> None:
        results = await self.pool.render_batch(
            [r.item for r in batch],
            [r.route for r in batch],
            lambda index, result: _settle(batch[index].future, result),
        )
        lost = [(r, result) for r, result in zip(batch, results, strict=True) if not r.future.done()]
        if len(batch) == 1 or not lost:
            for request, result in lost:
                _settle(request.future, result)
            return
        # The batch overran its deadline or its process died: the images it had not answered go again, one by one,
        # so that only the one at fault fails.
        log.warning("%s; trying its %d unanswered image(s) one at a time", lost[0][1], len(lost))
        for request, _ in lost:
            if not request.future.done():
                (result,) = await self.pool.render_batch([request.item], [request.route])
                _settle(request.future, result)


def _what(count: int) -> str:
    return "the image" if count == 1 else f"a batch of {count} images"


def _settle(future: asyncio.Future, result: Result) -> None:
    if future.done():  # cancelled: its job was stopped
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


async def _readable(conn: Connection, timeout: float) -> None:
    """Wait until `conn` has data (or EOF) without a thread: the loop watches its file descriptor."""
    if conn.poll(0):
        return
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
    finally:
        loop.remove_reader(fd)


# -- the child ----------------------------------------------------------------------------------------------------


def child_main(conn: Connection, settings: Settings, backend_blob: bytes | None, timed: bool = False) -> None:
    """A render process: answer ("ok", renditions) or ("error", ThumbifyError) for each task until told to stop
    (None) or the parent goes away; with `timed` (the worker traces), the render's stage timings follow (the
    backends' `timings` hook, plus its "total"). A batch task is answered ("item", index, kind, payload) per image,
    as each is done (kind "refused": payload is the `Refused`), then ("done", None)."""
    from gpu_worker.memory import limit_malloc_arenas
    from thumbify import logs
    from thumbify.process import die_with_parent

    die_with_parent()
    logs.configure_from(settings, "render")
    if os.getppid() == 1:  # the parent died before the line above took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which decides
    limit_malloc_arenas()
    if backend_blob is not None:
        from gpu_worker.backends.vips import configure_vips

        configure_vips(settings.vips_concurrency)
        backend = pickle.loads(backend_blob)
        if isinstance(backend, BatchBackend):  # the GPU backend builds its DALI pipeline before saying it is ready
            backend.start()
    else:
        from gpu_worker.backend_choice import select_backend

        backend = select_backend(settings)
    timings: dict[str, float] | None = {} if timed and not isinstance(backend, BatchBackend) else None
    if timings is not None:
        backend.timings = timings  # type: ignore[attr-defined]
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        if task[0] == "batch":
            if not _render_batch(conn, backend, task[1], task[2]):
                return
            continue
        _, path, fmt, spec, stem = task
        if timings is not None:
            timings.clear()
        started = time.perf_counter()
        reply = _reply(_attempt(backend.render, Path(path), fmt, spec, stem))
        if timings is not None and reply[0] == "ok":
            reply = (*reply, {**timings, "total": time.perf_counter() - started})
        if not _send(conn, reply):
            return


def _render_batch(conn: Connection, backend: Backend, items: list, routes: list | None) -> bool:
    """Render a batch task with the backend's `render_batch` (a `BatchBackend`: the routed GPU backend), or one
    image after another; answer each image as soon as it is done. False once the parent is gone."""
    items = [(Path(path), fmt, spec, stem) for path, fmt, spec, stem in items]
    answered: set[int] = set()
    alive = True

    def report(index: int, result: Result) -> None:
        nonlocal alive
        if alive and index not in answered:
            answered.add(index)
            alive = _send(conn, ("item", index, *_reply(result)))

    try:
        if isinstance(backend, BatchBackend):
            for index, result in enumerate(backend.render_batch(items, on_result=report, routes=routes)):
                report(index, result)
        else:
            for index, item in enumerate(items):
                report(index, _attempt(backend.render, *item))
    except Exception as exc:  # the batch itself failed: every image not answered gets the error
        for index in range(len(items)):
            report(index, exc)
    return alive and _send(conn, ("done", None))


def _attempt(render: Callable[..., list[Rendition]], *args) -> Result:
    try:
        return render(*args)
    except Exception as exc:
        return exc


def _reply(result: Result) -> tuple[str, object]:
    if isinstance(result, list):
        return "ok", result
    if isinstance(result, Refused):
        return "refused", result
    if isinstance(result, ThumbifyError):
        return "error", result
    # A bug or an exhausted resource: worth a retry, and a traceback in the log.
    log.error("render failed: %s", result, exc_info=result)
    return "error", RenderFailed(f"{result.__class__.__name__}: {result}")


def _send(conn: Connection, message: tuple) -> bool:
    """Send one answer; False once the parent is gone."""
    try:
        conn.send(message)
    except (OSError, ValueError):
        return False
    except Exception as exc:  # the error did not pickle: say what it was in one that does
        *head, _, payload = message
        conn.send((*head, "error", RenderFailed(f"{payload.__class__.__name__}: {payload} ({exc})")))
    return True
