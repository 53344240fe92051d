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
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from gpu_worker.backends.base import Backend, Rendition
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

    async def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        """Render in the next free child, within `image_timeout_s` of handing it over."""
        child = await self._acquire(("render", str(path), fmt, spec, stem))
        try:
            await _readable(child.conn, self.timeout)
            kind, payload = child.conn.recv()
        except TimeoutError:
            self._replace(child, kill=True)
            raise ImageTimeout(
                f"the image took longer than {self.timeout:g}s to process; its render process was stopped"
            ) from None
        except (EOFError, OSError):
            detail = await self._death(child)
            self._replace(child, kill=True)
            raise WorkerCrashed(f"the render process died while processing the image ({detail})") from None
        except BaseException:  # cancelled (shutdown): the child may still be busy, so it cannot be reused
            self._replace(child, kill=True)
            raise
        child.tasks += 1
        self._idle.put_nowait(child)
        if kind == "ok":
            return payload
        raise payload

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
            args=(theirs, self.settings, self._backend_blob),
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


def child_main(conn: Connection, settings: Settings, backend_blob: bytes | None) -> None:
    """A render process: answer ("ok", renditions) or ("error", ThumbifyError) for each task until told to stop
    (None) or the parent goes away."""
    from gpu_worker.memory import limit_malloc_arenas
    from thumbify.process import die_with_parent

    die_with_parent()
    if os.getppid() == 1:  # the parent died before the line above took effect
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, which decides
    limit_malloc_arenas()
    if backend_blob is not None:
        from gpu_worker.backends.vips import configure_vips

        configure_vips(settings.vips_concurrency)
        backend = pickle.loads(backend_blob)
    else:
        from gpu_worker.select import select_backend

        backend = select_backend(settings)
    conn.send("ready")
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        _, path, fmt, spec, stem = task
        try:
            reply = ("ok", backend.render(Path(path), fmt, spec, stem))
        except ThumbifyError as exc:
            reply = ("error", exc)
        except Exception as exc:  # a bug or an exhausted resource: worth a retry, and a traceback in the log
            traceback.print_exc()
            reply = ("error", RenderFailed(f"{exc.__class__.__name__}: {exc}"))
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return
        except Exception as exc:  # the error did not pickle: say what it was in one that does
            conn.send(("error", RenderFailed(f"{reply[1].__class__.__name__}: {reply[1]} ({exc})")))
