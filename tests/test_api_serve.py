"""`thumbify serve` as a new user runs it: the embedded Redis, a worker and the API from one command; stopped with
Ctrl-C or SIGTERM it leaves no process behind, and a restart on the same data folder still has the jobs (AOF)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import pyvips
from support.images import make_jpeg
from support.processes import wait_gone
from support.serve import Serve
from support.service import log_tail, port_is_free

from thumbify.redis_conn import free_port

pytestmark = pytest.mark.service  # it runs `thumbify serve`

THUMBIFY = Path(sys.executable).parent / "thumbify"


def test_serve_runs_stops_cleanly_and_keeps_jobs_across_restart(tmp_path: Path):
    assert THUMBIFY.exists(), f"{THUMBIFY} is not installed"
    data_dir = tmp_path / "data"
    port = free_port()
    jpeg = make_jpeg(400, 300)

    # First run: upload, get a done job, download its thumbnail; stop with Ctrl-C.
    first = Serve(tmp_path, data_dir, port, 1)
    try:
        first.ready()
        r = first.client.post("/v1/jobs", files={"file": ("holiday.jpg", jpeg, "image/jpeg")}, data={"sizes": "100"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        job = first.client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
        assert job["status"] == "done", f"{job}\n{log_tail(first.log)}"
        [thumb] = job["thumbnails"]
        thumb_bytes = first.client.get(thumb["url"]).content
        assert pyvips.Image.new_from_buffer(thumb_bytes, "").width == thumb["width"] == 100

        first.stop(signal.SIGINT, group=True)
        left = wait_gone(first.children)
        assert not left, f"processes left running after Ctrl-C: {left}\n{log_tail(first.log)}"
        assert port_is_free(port), f"port {port} still bound after Ctrl-C"
        assert (data_dir / "redis").is_dir() and any((data_dir / "redis").rglob("*.aof")), "no AOF was written"
    finally:
        first.cleanup()

    # Second run on the same data folder: the job is still there; stop with SIGTERM to serve alone.
    second = Serve(tmp_path, data_dir, port, 2)
    try:
        second.ready()
        r = second.client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, f"the job did not survive the restart: {r.status_code} {r.text}"
        assert r.json()["status"] == "done"
        assert r.json()["thumbnails"] == job["thumbnails"]
        assert second.client.get(thumb["url"]).content == thumb_bytes
        listed = second.client.get("/v1/jobs").json()["items"]
        assert job_id in [j["id"] for j in listed]

        code = second.stop(signal.SIGTERM, group=False)
        left = wait_gone(second.children)
        assert not left, f"processes left running after SIGTERM to serve (exit {code}): {left}\n{log_tail(second.log)}"
        assert port_is_free(port), f"port {port} still bound after SIGTERM"
    finally:
        second.cleanup()

    # Third run, killed outright (SIGKILL: no handler, no cleanup runs): its children must still not survive it.
    if sys.platform != "linux":
        return  # children follow a killed parent through Linux's PR_SET_PDEATHSIG only
    third = Serve(tmp_path, data_dir, port, 3)
    try:
        third.ready()
        assert third.client.get(f"/v1/jobs/{job_id}").json()["status"] == "done"
        assert third.stop(signal.SIGKILL, group=False) == -signal.SIGKILL
        left = wait_gone(third.children)
        assert not left, f"processes left running after SIGKILL to serve: {left}\n{log_tail(third.log)}"
        assert port_is_free(port), f"port {port} still bound after SIGKILL"
    finally:
        third.cleanup()
