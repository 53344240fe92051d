"""Fault-injection helpers for the reliability tests: extra workers, broken storage, job records read from Redis.

Everything here acts on real things: processes get real signals, storage is broken by putting a regular file where
the worker must create a folder (the tests run as root, so permissions would not stop a write), Redis is a real
redis-server that is really killed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyvips
import redis

from support.problems import PROBLEM_BASE
from support.service import PYTHON, ROOT, Service


def start_worker(svc: Service, name: str, **settings: object) -> subprocess.Popen:
    """One more `python -m gpu_worker` for `svc`, with `settings` (THUMBIFY_*) on top of the service's own;
    `stop_service` stops it too."""
    env = {**svc.env, **{f"THUMBIFY_{k.upper()}": str(v) for k, v in settings.items()}}
    log = svc.logs_dir / f"{name}.log"
    svc.logs.append(log)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [PYTHON, "-m", "gpu_worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    svc.procs[name] = proc
    return proc


def wait_for(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `check` until it returns something truthy (returned); an AssertionError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def job_rows(svc: Service, ids: list[str]) -> dict[str, dict[str, str]]:
    """Each job's record, read from Redis itself."""
    with svc.redis() as r:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(svc.keys.job(job_id))
        return dict(zip(ids, pipe.execute(), strict=True))


def wait_retrying(svc: Service, ids: list[str], tries: int, slug: str, what: str) -> None:
    """Wait until every job has been tried `tries` times; then each must still be queued or processing (retried,
    not failed) with the error it last recorded of problem type `slug`."""
    wait_for(lambda: all(int(r.get("attempts", 0)) >= tries for r in job_rows(svc, ids).values()), 30, what)
    rows = job_rows(svc, ids)
    assert all(r["status"] in ("queued", "processing") for r in rows.values()), rows
    errors = [json.loads(r["error"]) for r in rows.values() if r["error"] != "null"]
    assert errors and all(e["type"] == PROBLEM_BASE + slug for e in errors), errors


def statuses(svc: Service, ids: list[str]) -> dict[str, str]:
    return {job_id: row.get("status", "gone") for job_id, row in job_rows(svc, ids).items()}


def pending_count(svc: Service) -> int:
    """Messages delivered to some worker and not yet acknowledged."""
    with svc.redis() as r:
        return int(r.xpending(svc.keys.stream, "workers")["pending"])


def log_of(svc: Service, name: str) -> str:
    path = svc.logs_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def broken_thumbnail_storage(data_dir: Path) -> Iterator[Path]:
    """Storage refuses every thumbnail write while inside: `objects/thumbnails` becomes a regular file, so the
    worker's `mkdir thumbnails/<job>` fails (ENOTDIR). Restored (as an empty folder) on exit."""
    folder = data_dir / "objects" / "thumbnails"
    if folder.is_dir():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_bytes(b"not a folder\n")
    try:
        yield folder
    finally:
        repair_thumbnail_storage(data_dir)


def repair_thumbnail_storage(data_dir: Path) -> None:
    folder = data_dir / "objects" / "thumbnails"
    if folder.is_file():
        folder.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def check_thumbnails(svc: Service, job: dict) -> None:
    """The job's thumbnails are on disk once each (no other visible file in its folder), decode, and have the
    sizes the job says."""
    folder = svc.thumbnails_dir(job["id"])
    names = sorted(t["name"] for t in job["thumbnails"])
    assert names, job
    on_disk = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert on_disk == names, (on_disk, names)
    for thumb in job["thumbnails"]:
        path = folder / thumb["name"]
        assert path.stat().st_size == thumb["bytes"]
        image = pyvips.Image.new_from_file(str(path), access="sequential")
        assert (image.width, image.height) == (thumb["width"], thumb["height"]), thumb
        image.avg()  # decodes every pixel: a truncated file raises here


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)
