"""Worker heartbeats, against real processes: a worker killed with SIGKILL in the middle of a slow job costs seconds,
not the visibility timeout: another worker sees its heartbeat stop, claims the job and finishes it, and the dead
worker is removed from the consumer group."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest
from support import images
from support.faults import check_thumbnails, log_of, start_worker, statuses, wait_for
from support.service import start_service, stop_service

pytestmark = pytest.mark.timeout(240)


def test_a_killed_workers_job_is_taken_over_within_seconds(redis_server: str, tmp_path: Path):
    # The visibility timeout stays at 300 s: only the heartbeat can bring the job back within the wait below.
    svc = start_service(tmp_path, redis_server, extra_env={"image_processes": 1}, with_worker=False)
    try:
        first = start_worker(svc, "worker-1")
        name = f"{socket.gethostname()}-{first.pid}"
        heartbeat = svc.keys.worker(name)
        # Two 4096-px AVIFs of a source that is slow to encode: seconds of work, in worker-1's render process.
        job = svc.submit_ok(images.slow_avif_source(), "slow.png", sizes="4096,4000", format="avif")["id"]
        wait_for(lambda: statuses(svc, [job])[job] == "processing", 60, "worker-1 to start the job")
        second = start_worker(svc, "worker-2")
        with svc.redis() as r:
            wait_for(lambda: _beating(r, svc, second.pid), 60, "worker-2's heartbeat")
            assert r.exists(heartbeat), "worker-1 publishes no heartbeat"
            [held] = r.xpending_range(svc.keys.stream, "workers", "-", "+", 10)
            assert held["consumer"] == name, held  # still worker-1's when it is killed
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            done = svc.wait(job, timeout=90)
            assert done["status"] == "done", done
            assert done["attempts"] == 2, done  # the killed worker's try counts
            check_thumbnails(svc, done)
            assert "heartbeat stopped" in log_of(svc, "worker-2"), log_of(svc, "worker-2")[-3000:]
            wait_for(lambda: name not in _consumers(r, svc), 30, "the dead worker to leave the consumer group")
            assert name not in r.smembers(svc.keys.workers)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
        with svc.redis() as r:  # a clean stop ends the heartbeat at once
            assert not _beating(r, svc, second.pid)
    finally:
        stop_service(svc)


def _beating(r, svc, pid: int) -> bool:
    return bool(r.exists(svc.keys.worker(f"{socket.gethostname()}-{pid}")))


def _consumers(r, svc) -> set[str]:
    return {c["name"] for c in r.xinfo_consumers(svc.keys.stream, "workers")}
