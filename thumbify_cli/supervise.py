"""`thumbify serve`: one process owning an embedded Redis, N workers and the API, supervising them like any init.

- The data folder is locked for the life of the process (`flock` on `<data_dir>/serve.lock`, which holds the PID): a
  second `serve` on the same folder refuses, naming that PID, before it touches anything, so two servers never
  share one Redis socket and append-only file.
- Every child is watched (and reaped): one that dies is logged and started again, Redis on the same folder, AOF and
  socket or port, so the API and the workers reconnect by themselves. A child that dies `MAX_FAILURES` times within
  `FAILURE_WINDOW_S` is not started again: `serve` stops everything and exits non-zero, for an outside supervisor
  (systemd, Kubernetes) to see.
- SIGTERM or SIGINT at any moment, start-up included, stops the workers (they hand back what they cannot finish
  within their grace), then Redis, and leaves nothing running.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from thumbify.process import die_with_parent
from thumbify.redis_conn import EmbeddedRedis
from thumbify.settings import Settings
from thumbify_cli.stop_signals import StopSignals

MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
WATCH_EVERY_S = 0.2
GAVE_UP = 1  # the exit code after a child failed too often

# Its lines go where every process's go (thumbify/logs.py, configured by the command before this runs).
log = logging.getLogger("thumbify.serve")


class FolderInUse(RuntimeError):
    """Another `thumbify serve` holds the data folder."""


class DataLock:
    """An exclusive `flock` on `<data_dir>/serve.lock`, held until the process exits (the kernel drops it even on
    SIGKILL, so a crash never leaves the folder locked). The file holds the owner's PID, for the refusal message."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "serve.lock"
        self._fd: int | None = None

    def acquire(self) -> DataLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderInUse(
                f"{self.path.parent} is in use by another `thumbify serve` (pid {holder}, holding {self.path}); "
                "stop it or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the file stays: unlinking a lock file lets two processes lock two different files
            self._fd = None


def port_in_use(host: str, port: int) -> bool:
    """True when `host:port` cannot be bound (as uvicorn binds it, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


@dataclass
class Child:
    """One supervised process: `start()` brings it up and returns it (for Redis: once it answers). On stop it gets
    SIGTERM and `grace` seconds, together with the other children of its `tier`; higher tiers stop first."""

    name: str
    start: Callable[[], subprocess.Popen]
    grace: float
    tier: int = 0
    process: subprocess.Popen | None = None
    deaths: deque[float] = field(default_factory=deque)

    def failed(self, now: float) -> bool:
        """Record a failure; True once there were `MAX_FAILURES` within `FAILURE_WINDOW_S`."""
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > FAILURE_WINDOW_S:
            self.deaths.popleft()
        return len(self.deaths) >= MAX_FAILURES


class Supervisor:
    """Watches children from one thread: reaps and restarts one that exits; after too many fast failures calls
    `give_up(reason)` once and restarts nothing more."""

    def __init__(self, give_up: Callable[[str], None]) -> None:
        self.children: list[Child] = []
        self.gave_up: str | None = None
        self._give_up = give_up
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def add(self, child: Child) -> Child:
        """Start `child` now (in the caller's thread, so a signal interrupts it) and watch it from then on."""
        self.children.append(child)
        child.process = child.start()
        return child

    def watch(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_EVERY_S):
            for child in self.children:
                if self._stopping.is_set() or self.gave_up:
                    return
                proc = child.process
                if proc is not None and proc.poll() is None:  # poll() also reaps a child that exited
                    continue
                if proc is not None:
                    log.warning("%s (pid %s) exited with %s", child.name, proc.pid, _how(proc.returncode))
                if child.failed(time.monotonic()):
                    self.gave_up = f"{child.name} failed {MAX_FAILURES} times within {FAILURE_WINDOW_S:g}s; giving up"
                    log.error(self.gave_up)
                    self._give_up(self.gave_up)
                    return
                child.process = None
                try:
                    child.process = child.start()
                except Exception as exc:  # counted as a failure at the next look
                    log.error("could not restart %s: %s", child.name, exc)
                    continue
                log.info("%s restarted (pid %s)", child.name, child.process.pid)

    def stop(self) -> None:
        """Stop watching, then stop the children tier by tier, highest first (workers before the Redis they hand
        their unfinished jobs back to): SIGTERM to the whole tier, then each gets its grace, then SIGKILL."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        for tier in sorted({c.tier for c in self.children}, reverse=True):
            running = [c for c in self.children if c.tier == tier and c.process is not None]
            for child in running:
                if child.process.poll() is None:
                    child.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            for child in running:
                try:
                    child.process.wait(max(0.1, started + child.grace - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %gs; killing it", child.name, child.grace)
                    child.process.kill()
                    child.process.wait()


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def serve(settings: Settings, api, signals: StopSignals) -> int:
    """Run everything until a signal, or until a child fails too often; the exit code. `api` is the uvicorn
    `Server` to run in this thread (it reads the environment this sets up when it starts); `signals`, installed
    by the command before anything else, stop it at any moment."""
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    try:
        lock = DataLock(data).acquire()
    except FolderInUse as exc:
        log.error("%s", exc)
        return 2
    if port_in_use(settings.host, settings.port):
        log.error("%s:%s is in use; choose another --port", settings.host, settings.port)
        lock.release()
        return 2
    # uvicorn replaces the handlers while it runs, and raises the signal again once it has shut down.
    signals.on_stop = lambda: setattr(api, "should_exit", True)
    signals.check()

    def give_up(reason: str) -> None:
        api.should_exit = True

    supervisor = Supervisor(give_up)
    # THUMBIFY_* variables go to this process's environment: the API reads its settings from it when it starts.
    os.environ["THUMBIFY_DATA_DIR"] = str(data)
    try:
        if not settings.redis_url:
            embedded = EmbeddedRedis(data / "redis", appendfsync=settings.redis_appendfsync)
            supervisor.add(Child("redis-server", lambda: embedded.start().process, grace=10.0))
            os.environ["THUMBIFY_REDIS_URL"] = embedded.url
            log.info(
                "embedded redis %s (AOF under %s, fsync %s)", embedded.url, embedded.directory, embedded.appendfsync
            )
            signals.check()
        env = {**os.environ, "MALLOC_ARENA_MAX": "2"}

        def spawn_worker() -> subprocess.Popen:
            argv = [sys.executable, "-m", "gpu_worker"]
            return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)

        for i in range(settings.workers):
            # Workers get their own shutdown grace (they hand back what they cannot finish), and a little more.
            supervisor.add(Child(f"worker {i + 1}", spawn_worker, grace=settings.shutdown_grace_s + 10, tier=1))
            signals.check()
        supervisor.watch()
        log.info(
            "%d worker(s); API on http://%s:%s (docs at /docs); data in %s",
            settings.workers,
            settings.host,
            settings.port,
            data,
        )
        api.run()
        signals.check()
    finally:
        supervisor.stop()
        lock.release()
    return GAVE_UP if supervisor.gave_up else 0
