"""`thumbify serve` as the parent of its processes, run for real (`python -m thumbify_cli serve` on a temporary data
folder and a free port) and hit with real signals: a signal at any moment of start-up ends it within seconds and
leaves nothing; its embedded Redis, killed, is reaped and started again on the same data; it gives up after
repeated fast failures; a second `serve` on the same data folder refuses and touches nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from support.faults import wait_for
from support.images import make_jpeg
from support.processes import TAG_VAR, descendants, gone, group_members, stat, tagged_processes
from support.serve import Serve
from support.service import PYTHON, clean_env, log_tail

from api.waiter import JobWaiter
from gpu_worker.deliverer import Deliverer
from thumbify.jobs import JobStore
from thumbify.keyspace import Keys
from thumbify.outbox import Outbox
from thumbify.ratelimit import Limits
from thumbify.redis_conn import cancel_and_wait, connect, free_port
from thumbify.settings import Settings

pytestmark = [
    pytest.mark.service,  # it runs `serve` and signals it
    pytest.mark.timeout(240),
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; children follow a killed parent on Linux only"),
]

CLI = [PYTHON, "-m", "thumbify_cli"]


class Tagged(Serve):
    """A `serve` run whose every process (its children, theirs, redis-server) carries a tag in its environment, so
    that the test can prove none of them survives."""

    def __init__(
        self, tmp: Path, data_dir: Path, port: int | None = None, run: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.tag = uuid.uuid4().hex
        super().__init__(tmp, data_dir, port or free_port(), run, CLI, clean_env() | {TAG_VAR: self.tag} | (env or {}))

    def __enter__(self) -> Tagged:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def left_behind(self, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while (alive := tagged_processes(self.tag)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return alive

    def exit_code(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except Exception:
            raise AssertionError(f"serve did not exit within {timeout}s\n{log_tail(self.log)}") from None

    def redis_pid(self) -> int | None:
        found = [pid for pid, (_, cmd) in descendants(self.proc.pid).items() if "redis-server" in cmd]
        return found[0] if found else None

    def ready_again(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False


def _run_job(serve: Serve) -> dict:
    r = serve.client.post("/v1/jobs", files={"file": ("a.jpg", make_jpeg(160, 120), "image/jpeg")})
    assert r.status_code == 202, r.text
    job = serve.client.get(f"/v1/jobs/{r.json()['id']}", params={"wait": 30}).json()
    assert job["status"] == "done", f"{job}\n{log_tail(serve.log)}"
    return job


# -- signals during start-up -----------------------------------------------------------------------------------------

MOMENTS = ["0.2s", "1s", "2s", "render processes starting"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", MOMENTS)
def test_a_signal_at_any_moment_of_start_up_ends_serve_at_once(tmp_path: Path, sig: int, moment: str):
    data_dir = tmp_path / "data"
    with Tagged(tmp_path, data_dir) as serve:
        if moment.endswith("s"):
            time.sleep(float(moment[:-1]))
        else:  # the worker has chosen its backend: it is spawning its render processes now
            wait_for(lambda: "backend:" in log_tail(serve.log), 90, "the worker to start", interval=0.01)
        sent = time.monotonic()
        # SIGINT as a terminal's Ctrl-C sends it, to the whole process group; SIGTERM as `kill` does, to serve alone.
        if sig == signal.SIGINT:
            os.killpg(serve.proc.pid, sig)
        else:
            serve.proc.send_signal(sig)
        serve.exit_code(timeout=15)
        took = time.monotonic() - sent
        left = serve.left_behind()
        assert not left, f"processes left running: {left}\n{log_tail(serve.log)}"
        assert not group_members(serve.proc.pid), "processes left in serve's process group"
        assert not (data_dir / "redis" / "redis.sock").exists(), "a stale redis.sock was left"
        assert took < 10, f"serve took {took:.1f}s to stop\n{log_tail(serve.log)}"


# -- the embedded Redis is supervised --------------------------------------------------------------------------------


def _embedded_client(data_dir: Path, pid: int) -> redis.Redis:
    """A client of serve's embedded redis-server `pid`: on its unix socket, or for a deep data folder on the loopback
    port that redis-server shows in its title ("redis-server 127.0.0.1:N")."""
    socket = data_dir / "redis" / "redis.sock"
    if socket.exists():
        return redis.Redis(unix_socket_path=str(socket))
    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    return redis.Redis.from_url(f"redis://{title.split()[1]}/0")


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_a_killed_redis_is_reaped_and_restarted_on_the_same_data(tmp_path: Path, appendfsync: str):
    with Tagged(tmp_path, tmp_path / "data", env={"THUMBIFY_REDIS_APPENDFSYNC": appendfsync}) as serve:
        serve.ready()
        before = _run_job(serve)
        pid = serve.redis_pid()
        started = stat(pid).started
        with _embedded_client(tmp_path / "data", pid) as client:
            assert client.config_get("appendfsync") == {"appendfsync": appendfsync}  # THUMBIFY_REDIS_APPENDFSYNC
            if appendfsync == "everysec":
                # Redis may hold writes back up to 2 s while a slow fsync runs (README, "Redis persistence"); a job
                # whose finish is lost so is redone by its worker (test_reliability), which is not checked here.
                wait_for(lambda: client.info("persistence")["aof_buffer_length"] == 0, 10, "the AOF buffer written")
        # With "always", killed at once: Redis wrote and synced each write before acknowledging it.
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: gone(pid, started), 10, "the killed redis-server to be reaped (no zombie)")
        wait_for(serve.ready_again, 30, "/readyz to answer 200 again")
        assert serve.redis_pid() not in (None, pid)
        r = serve.client.get(f"/v1/jobs/{before['id']}")
        assert r.status_code == 200 and r.json()["status"] == "done", r.text  # the AOF was read back
        _run_job(serve)  # the API and the worker reconnected by themselves
        assert "redis-server restarted" in log_tail(serve.log), log_tail(serve.log)
        assert serve.stop(signal.SIGTERM, group=False) == 128 + signal.SIGTERM
        assert not serve.left_behind()


def test_serve_gives_up_when_redis_keeps_dying(tmp_path: Path):
    with Tagged(tmp_path, tmp_path / "data") as serve:
        serve.ready()
        for _ in range(5):
            pid = wait_for(serve.redis_pid, 30, "a redis-server")
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda pid=pid: serve.redis_pid() != pid or serve.proc.poll() is not None, 30, "a restart")
        code = serve.exit_code(timeout=60)
        assert code == 1, log_tail(serve.log)
        assert "redis-server failed 5 times within 60s; giving up" in log_tail(serve.log)
        assert not serve.left_behind()


# -- one server per data folder --------------------------------------------------------------------------------------


def _listing(data_dir: Path) -> dict[str, int]:
    """Every file of the data folder but the append-only files (the running server's Redis may write), by inode."""
    return {str(p.relative_to(data_dir)): p.lstat().st_ino for p in data_dir.rglob("*") if "appendonly" not in p.name}


def test_a_second_serve_on_the_same_folder_refuses_and_touches_nothing(tmp_path: Path):
    data_dir = tmp_path / "data"
    with Tagged(tmp_path, data_dir, run=1) as first:
        first.ready()
        _run_job(first)
        lock = (data_dir / "serve.lock").read_text()
        assert lock.strip() == str(first.proc.pid)
        # Same folder on another port, same folder on the same port, another folder on the busy port.
        tries = [(data_dir, None), (data_dir, first.port), (tmp_path / "other", first.port)]
        for run, (folder, port) in enumerate(tries):
            files = _listing(data_dir)
            assert "redis/redis.sock" in files
            with Tagged(tmp_path, folder, port, run=run + 2) as second:
                assert second.exit_code(timeout=60) != 0, log_tail(second.log)
                if folder == data_dir:
                    assert f"pid {first.proc.pid}" in log_tail(second.log), log_tail(second.log)
                else:
                    assert "in use" in log_tail(second.log), log_tail(second.log)
                assert not second.left_behind()
            assert _listing(data_dir) == files, "the refused serve changed the running server's folder"
            assert (data_dir / "serve.lock").read_text() == lock
            _run_job(first)  # and the first one still works
        first.stop(signal.SIGTERM, group=False)
        assert not first.left_behind()
        # Once the first has stopped, the folder is free again.
        with Tagged(tmp_path, data_dir, run=9) as third:
            third.ready()
            assert (data_dir / "serve.lock").read_text().strip() == str(third.proc.pid)


# -- stopping what talks to Redis ------------------------------------------------------------------------------------


async def _webhook_deliverer(redis, prefix: str) -> asyncio.Task:
    keys = Keys(prefix)
    settings = Settings(redis_url="redis://unused", key_prefix=prefix)
    return asyncio.create_task(Deliverer(settings, JobStore(redis, keys), Outbox(redis, keys), "w1").run())


async def _job_waiter(redis, prefix: str) -> asyncio.Task:
    return asyncio.create_task(JobWaiter(redis, f"{prefix}:events")._listen())


async def _upload_lease(redis, prefix: str) -> asyncio.Task:
    limits = Limits(redis, Keys(prefix), rate=0, burst=1, max_uploads=1, lease_s=0.003)  # renews every millisecond
    return (await limits.enter_upload("client"))._renewing


@pytest.mark.parametrize("start", [_webhook_deliverer, _job_waiter, _upload_lease], ids=lambda f: f.__name__[1:])
def test_redis_loops_stop_when_cancelled_whatever_moment_the_cancel_lands(redis_server: str, start):
    """redis-py can swallow a cancel that lands while a command runs (the task goes on); the service's loops call
    `raise_if_cancelled` after their commands, so one cancel always stops them (a worker once took 5 s to stop,
    waiting on its webhook loop)."""

    async def main():
        client = connect(redis_server)
        try:
            for i in range(60):
                task = await start(client, f"cancel-{uuid.uuid4().hex[:8]}")
                await asyncio.sleep(i * 0.0005)  # the cancel lands at a different point of the loop each time
                await cancel_and_wait([task], timeout=3)
                assert task.done(), f"try {i}: the loop still runs 3 s after a cancel"
                assert task.cancelled() or task.exception() is None, f"try {i}: {task.exception()!r}"
        finally:
            await client.aclose()

    asyncio.run(main())
