"""Upload spool files of an API killed mid-upload are removed when an API starts on the folder again, and an API
started beside a live upload leaves that upload alone (real uvicorn processes, real SIGKILL, real stalled
uploads)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from support.faults import wait_for
from support.images import make_jpeg
from support.service import PYTHON, Service, start_service, stop_service, wait_ready
from support.uploads import StalledUpload

from thumbify.redis_conn import free_port

pytestmark = pytest.mark.timeout(180)


def uploads(svc: Service) -> set[str]:
    return {name for name in svc.spool_files() if name.startswith("upload-") and name.endswith(".part")}


def start_api(svc: Service, name: str, port: int) -> str:
    """One more API process of `svc` (same data folder, same Redis) on `port`; its base URL once it is ready."""
    argv = [PYTHON, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)]
    proc = svc.start(name, argv)
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, [proc], svc.logs)
    return base_url


def test_a_killed_apis_spool_files_go_and_a_live_upload_stays(redis_server: str, tmp_path: Path):
    # Chunks of 1 KiB: a stalled upload's first 4 KiB are spooled (a body under one chunk is held in memory).
    svc = start_service(tmp_path, redis_server, extra_env={"upload_chunk_bytes": 1024}, with_worker=False)
    jpeg = make_jpeg(800, 600)
    try:
        # An upload stalls half-way; the API is killed under it: its spool file stays behind.
        stalled = StalledUpload(svc.base_url, jpeg, sent=4096)
        [left] = wait_for(lambda: uploads(svc), 10, "the stalled upload's spool file")
        svc.procs["api"].send_signal(signal.SIGKILL)
        svc.procs["api"].wait(10)
        stalled.finish()
        assert uploads(svc) == {left}

        # An API starting on the folder removes it (before it answers its first request).
        second = start_api(svc, "api-2", free_port())
        assert left not in uploads(svc), svc.spool_files()

        # An upload in flight on that API survives a third API starting beside it, and completes.
        live = StalledUpload(second, jpeg, sent=4096)
        [in_flight] = wait_for(lambda: uploads(svc), 10, "the live upload's spool file")
        start_api(svc, "api-3", free_port())
        assert in_flight in uploads(svc), svc.spool_files()
        answer = live.finish()
        assert answer is not None and answer[0] == 202, answer
        assert not uploads(svc)
    finally:
        stop_service(svc)
