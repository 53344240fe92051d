"""The real worker behind the real queue, for benchmarks: a redis-server of our own (EmbeddedRedis on a free port),
`python -m gpu_worker` subprocesses, and jobs put in exactly as the API puts them (original in local storage, job
record + stream entry in one transaction), without HTTP in the way."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import PYTHON, ROOT, stop_process
from thumbify.jobs import JobStore, new_job_id
from thumbify.keyspace import Keys
from thumbify.probe import probe
from thumbify.queue import JobQueue
from thumbify.redis_conn import EmbeddedRedis, connect, free_port
from thumbify.spec import ThumbnailSpec, safe_stem
from thumbify.storage import original_key, thumbnails_prefix


@dataclass
class RoundResult:
    seconds: float
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class QueueHarness:
    """One redis-server; `add_worker(prefix, env)` starts a worker process consuming the queue under `prefix`."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="thumbify-bench-"))
        self.data = self.dir / "data"
        self.redis = EmbeddedRedis(self.dir / "redis", port=free_port())
        self.workers: dict[str, subprocess.Popen] = {}
        self._info: dict[Path, dict] = {}

    def start(self) -> QueueHarness:
        (self.data / "objects" / "originals").mkdir(parents=True, exist_ok=True)
        self.redis.start()
        return self

    def worker_env(self, prefix: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            **os.environ,
            "THUMBIFY_REDIS_URL": self.redis.url,
            "THUMBIFY_DATA_DIR": str(self.data),
            "THUMBIFY_KEY_PREFIX": prefix,
            "THUMBIFY_LOG_LEVEL": "warning",
            "MALLOC_ARENA_MAX": "2",
        }
        env.update(extra or {})
        return env

    def add_worker(self, prefix: str, extra_env: dict[str, str] | None = None, processes: int = 1) -> list[int]:
        pids = []
        for i in range(processes):
            proc = subprocess.Popen(
                [PYTHON, "-m", "gpu_worker"],
                cwd=ROOT,
                env=self.worker_env(prefix, extra_env),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self.workers[f"{prefix}#{i}"] = proc
            pids.append(proc.pid)
        return pids

    def source_info(self, path: Path) -> dict:
        if path not in self._info:
            info = probe(path, 10**10)
            self._info[path] = info.public(path.name) | {"sha256": "0" * 64}
        return self._info[path]

    def place(self, path: Path, job_id: str) -> None:
        dest = self.data / "objects" / original_key(job_id)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copyfile(path, dest)

    def run_round(
        self, prefix: str, files: list[Path], spec: ThumbnailSpec | None = None, timeout: float = 600.0
    ) -> RoundResult:
        return asyncio.run(self._round(prefix, files, spec or ThumbnailSpec(), timeout))

    async def _round(self, prefix: str, files: list[Path], spec: ThumbnailSpec, timeout: float) -> RoundResult:
        redis = connect(self.redis.url)
        keys = Keys(prefix)
        store, queue = JobStore(redis, keys), JobQueue(redis, keys)
        jobs = []
        for path in files:
            job_id = new_job_id()
            self.place(path, job_id)
            jobs.append((job_id, store.record(job_id, self.source_info(path), spec, safe_stem(path.name))))
        pending = {job_id for job_id, _ in jobs}
        result = RoundResult(0.0)
        pubsub = redis.pubsub()
        await pubsub.subscribe(keys.events)
        await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
        try:
            started = time.perf_counter()
            async with redis.pipeline(transaction=True) as pipe:
                for job_id, record in jobs:
                    store.add_to(pipe, job_id, record)
                    queue.add_to(pipe, job_id)
                await pipe.execute()
            deadline = started + timeout
            while pending and time.perf_counter() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if not message:
                    continue
                job_id, _, status = message["data"].partition(" ")
                if job_id in pending and status in ("done", "failed"):
                    pending.discard(job_id)
                    (result.done.append(job_id) if status == "done" else result.failed.setdefault(job_id, ""))
            result.seconds = time.perf_counter() - started
            for job_id in list(result.failed):
                job = await store.get(job_id)
                result.failed[job_id] = str(job.error if job else "gone")
            for job_id in pending:
                result.failed[job_id] = "timed out"
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()
            await redis.aclose()
        return result

    def thumbnail_path(self, job_id: str) -> Path | None:
        folder = self.data / "objects" / thumbnails_prefix(job_id)
        found = sorted(folder.glob("thumb_*")) if folder.is_dir() else []
        return found[0] if found else None

    def clear(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            (self.data / "objects" / original_key(job_id)).unlink(missing_ok=True)
            shutil.rmtree(self.data / "objects" / thumbnails_prefix(job_id), ignore_errors=True)

    def stop(self) -> None:
        for proc in self.workers.values():
            stop_process(proc)
        self.workers.clear()
        self.redis.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> QueueHarness:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
