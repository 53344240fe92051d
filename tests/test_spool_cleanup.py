"""Upload spool files of an API killed mid-upload are removed when an API starts on the folder again, and an API
started beside a live upload leaves that upload alone (real uvicorn processes, real SIGKILL, real stalled
uploads)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.faults import wait_for
from support.images import make_jpeg
from support.service import PYTHON, Service, start_service, stop_service, wait_ready

from thumbify.redis_conn import free_port

pytestmark = pytest.mark.timeout(180)

BOUNDARY = "spool-test-boundary"


class StalledUpload:
    """A POST /v1/jobs that sends the part headers and the first bytes of a JPEG, then nothing until `finish()`."""

    def __init__(self, base_url: str, jpeg: bytes) -> None:
        self.jpeg = jpeg
        self.started = threading.Event()
        self._go_on = threading.Event()
        self.response: httpx.Response | Exception | None = None
        self.thread = threading.Thread(target=self._post, args=(base_url,), daemon=True)
        self.thread.start()
        assert self.started.wait(10)

    def _body(self) -> Iterator[bytes]:
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode() + self.jpeg[:4096]
        self.started.set()
        self._go_on.wait(60)
        yield self.jpeg[4096:] + f"\r\n--{BOUNDARY}--\r\n".encode()

    def _post(self, base_url: str) -> None:
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
        try:
            self.response = httpx.post(f"{base_url}/v1/jobs", content=self._body(), headers=headers, timeout=60)
        except httpx.HTTPError as exc:
            self.response = exc

    def finish(self) -> httpx.Response | Exception | None:
        self._go_on.set()
        self.thread.join(60)
        return self.response


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
        stalled = StalledUpload(svc.base_url, jpeg)
        [left] = wait_for(lambda: uploads(svc), 10, "the stalled upload's spool file")
        svc.procs["api"].send_signal(signal.SIGKILL)
        svc.procs["api"].wait(10)
        stalled.finish()
        assert uploads(svc) == {left}

        # An API starting on the folder removes it (before it answers its first request).
        second = start_api(svc, "api-2", free_port())
        assert left not in uploads(svc), svc.spool_files()

        # An upload in flight on that API survives a third API starting beside it, and completes.
        live = StalledUpload(second, jpeg)
        [in_flight] = wait_for(lambda: uploads(svc), 10, "the live upload's spool file")
        start_api(svc, "api-3", free_port())
        assert in_flight in uploads(svc), svc.spool_files()
        response = live.finish()
        assert isinstance(response, httpx.Response) and response.status_code == 202, response
        assert not uploads(svc)
    finally:
        stop_service(svc)
