"""The load proof: 1,000 small jobs through the HTTP API at concurrency 32 with two workers; none lost, none
duplicated. It drives the service with `benchmarks/load.py`, the same code that measures a deployed URL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyvips
from support.service import PYTHON, start_service, stop_service

from benchmarks.load import run_load

JOBS = 1000
CONCURRENCY = 32


def test_a_thousand_jobs_at_concurrency_32_with_two_workers(redis_server: str, tmp_path: Path) -> None:
    svc = start_service(tmp_path, redis_server)
    try:
        svc.start("worker-2", [PYTHON, "-m", "gpu_worker"])
        result = asyncio.run(run_load(svc.base_url, JOBS, CONCURRENCY, size="64", timeout=240))
        assert result["problems"] == [], result["problems"][:20]
        assert result["done"] == JOBS
        # None lost, none duplicated: exactly the jobs uploaded are in Redis, each with one valid thumbnail.
        ids = svc.job_ids_in_redis()
        assert len(ids) == JOBS
        for job_id in ids:
            files = list(svc.thumbnails_dir(job_id).iterdir())
            assert len(files) == 1, (job_id, files)
            assert pyvips.Image.new_from_file(str(files[0])).width == 64
        with svc.redis() as r:
            assert r.xlen(svc.keys.stream) == 0  # every message acknowledged and removed
            assert r.xlen(svc.keys.dead) == 0
        assert all(proc.poll() is None for proc in svc.procs.values()), svc.log_text()
    finally:
        stop_service(svc)
