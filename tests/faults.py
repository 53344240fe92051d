"""Fault-injection helpers for the reliability tests: extra workers, broken storage, process and port bookkeeping.

Everything here acts on real things: processes get real signals, storage is broken by putting a regular file where
the worker must create a folder (the tests run as root, so permissions would not stop a write), Redis is a real
redis-server that is really killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyvips
import redis
from conftest import PROBLEM_BASE, PYTHON, ROOT, Service

# Every process a reliability test starts (API, workers, their render processes, redis-servers) inherits this
# variable, with a value unique to the test, so the test can prove afterwards that none of them is left running.
TAG_VAR = "THUMBIFY_RELIABILITY_TEST_TAG"


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
            pipe.hgetall(f"{svc.key_prefix}:job:{job_id}")
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
        return int(r.xpending(f"{svc.key_prefix}:jobs", "workers")["pending"])


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


# -- processes ----------------------------------------------------------------------------------------------------


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return True


def tagged_processes(tag: str) -> list[str]:
    """Live processes (not zombies) carrying `TAG_VAR=tag`, as 'pid cmdline' strings. The test runner's own
    multiprocessing resource tracker (one per process that ever starts a `spawn` child, living as long as that
    process) is not counted: it belongs to pytest, not to the test."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        if needle in _environ(pid).split(b"\0") and not _is_zombie(pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "multiprocessing.resource_tracker" in cmd and _parent(pid) == os.getpid():
                continue
            found.append(f"{pid} {cmd.strip()}")
    return found


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def render_children(pid: int) -> list[int]:
    """The live render processes of worker `pid` (its `spawn` children; not its resource tracker)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z" and b"spawn_main" in cmdline:
            out.append(int(entry))
    return out


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True)
