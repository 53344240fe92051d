"""`thumbify serve` as a new user runs it: the embedded Redis, a worker and the API from one command; stopped with
Ctrl-C or SIGTERM it leaves no process behind, and a restart on the same data folder still has the jobs (AOF)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyvips
from conftest import ROOT, clean_env, log_tail, make_jpeg, port_is_free, wait_ready

from thumbify.redis_conn import free_port

THUMBIFY = Path(sys.executable).parent / "thumbify"


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, ppid, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), fields[19]


def descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every process below `root`: pid -> (start time, command line)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))):
            children.setdefault(st[1], []).append(int(entry))
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st is None:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out[pid] = (st[2], cmd)
        todo += children.get(pid, [])
    return out


def still_running(procs: dict[int, tuple[str, str]]) -> dict[int, str]:
    """Those of `procs` that still run (the same process: same start time; zombies count as gone)."""
    alive = {}
    for pid, (started, cmd) in procs.items():
        st = _stat(pid)
        if st and st[2] == started and st[0] != "Z":
            alive[pid] = cmd
    return alive


def wait_gone(procs: dict[int, tuple[str, str]], timeout: float = 30.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    while (alive := still_running(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


class Serve:
    """One `thumbify serve` run, in its own session (so Ctrl-C can be sent to its process group as a terminal does)."""

    def __init__(
        self,
        tmp: Path,
        data_dir: Path,
        port: int,
        run: int,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`command`: how to run `thumbify` (default: the installed entry point, from `tmp`; anything else runs
        from the repository root). `env`: default nothing preset, so the embedded Redis is the default."""
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = tmp / f"serve-{run}.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [*(command or [str(THUMBIFY)]), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                cwd=tmp if command is None else ROOT,
                env=env or clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children: dict[int, tuple[str, str]] = {}
        self.client = httpx.Client(base_url=self.base_url, timeout=60.0)

    def ready(self) -> None:
        wait_ready(self.base_url, [self.proc], [self.log], timeout=90)
        # The worker may still be importing; wait until both children are there.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.children = descendants(self.proc.pid)
            cmds = " | ".join(c for _, c in self.children.values())
            if "redis-server" in cmds and "gpu_worker" in cmds:
                return
            time.sleep(0.1)
        raise AssertionError(f"serve did not start redis-server and a worker: {self.children}\n{log_tail(self.log)}")

    def stop(self, sig: int, group: bool) -> int:
        """Send `sig` (to the whole process group, like Ctrl-C in a terminal, or to serve alone, like `kill`)."""
        self.children.update(descendants(self.proc.pid))
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            self.client.close()

    def cleanup(self) -> None:
        """Whatever the test's outcome: nothing of this run may survive it."""
        self.client.close()
        if self.proc.poll() is None:
            self.children.update(descendants(self.proc.pid))
            self.proc.kill()
            self.proc.wait()
        for pid in still_running(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


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
