"""A running Thumbify for tests: the API (uvicorn) and a worker as real subprocesses on loopback, pointed at a real
Redis and a temporary data folder (`start_service`/`stop_service`, the `Service` handle tests talk through), and the
small process helpers they are built from (`clean_env`, `wait_ready`, `stop_process`, `log_tail`, `port_is_free`)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from thumbify.keyspace import Keys
from thumbify.redis_conn import free_port

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TERMINAL = {"done", "failed"}

# Small caps so the limit tests stay fast.
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 100_000_000


# -- processes ------------------------------------------------------------------------------------------------------


def clean_env(**values: object) -> dict[str, str]:
    """This process's environment without any THUMBIFY_* variable, plus `values` as THUMBIFY_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBIFY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({f"THUMBIFY_{k.upper()}": str(v) for k, v in values.items()})
    return env


def port_is_free(port: int) -> bool:
    """Nothing listens on the loopback port (connections in TIME_WAIT don't count: the server's own restart
    binds with SO_REUSEADDR too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 20.0) -> None:
    """Signal one process we started, wait for it; kill it if it does not go within `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path, chars: int = 6000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} was not written)"
    return text if len(text) <= chars else "...\n" + text[-chars:]


def wait_ready(base_url: str, procs: list[subprocess.Popen], logs: list[Path], timeout: float = 60.0) -> None:
    """Poll /readyz until 200; fail at once, with the logs, if a process exits meanwhile."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                dump = "\n".join(f"--- {p.name} ---\n{log_tail(p)}" for p in logs)
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} during start-up\n{dump}")
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=2.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    dump = "\n".join(f"--- {p.name} ---\n{log_tail(p)}" for p in logs)
    raise RuntimeError(f"{base_url}/readyz did not answer 200 within {timeout}s (last: {last})\n{dump}")


# -- the service object tests use ----------------------------------------------------------------------------------


@dataclass
class Service:
    base_url: str
    data_dir: Path
    redis_url: str
    key_prefix: str
    client: httpx.Client
    logs: list[Path] = field(default_factory=list)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    logs_dir: Path = Path(".")

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        """Start one more process of this service (e.g. another worker); `stop_service` stops it too."""
        log = self.logs_dir / f"{name}.log"
        self.logs.append(log)
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT
            )
        self.procs[name] = proc
        return proc

    # requests

    def submit(
        self,
        data: bytes,
        filename: str = "image.jpg",
        *,
        content_type: str = "image/jpeg",
        params: dict | None = None,
        headers: dict | None = None,
        **options: object,
    ) -> httpx.Response:
        """POST /v1/jobs with `data` as the multipart `file` and `options` as form fields (`params`: as query)."""
        form = {k: (v if isinstance(v, list) else str(v)) for k, v in options.items()}
        return self.client.post(
            "/v1/jobs",
            files={"file": (filename, data, content_type)},
            data=form,
            params=params,
            headers=headers,
        )

    def submit_ok(self, data: bytes, filename: str = "image.jpg", **kwargs) -> dict:
        r = self.submit(data, filename, **kwargs)
        assert r.status_code == 202, f"upload refused: {r.status_code} {r.text}"
        return r.json()

    def get_job(self, job_id: str, **params) -> httpx.Response:
        return self.client.get(f"/v1/jobs/{job_id}", params=params)

    def wait(self, job_id: str, timeout: float = 60.0) -> dict:
        """The job once it is done or failed (long-polling with ?wait=); an assertion error if it does not end."""
        deadline = time.monotonic() + timeout
        job: dict = {}
        while True:
            remaining = deadline - time.monotonic()
            r = self.get_job(job_id, wait=max(0.0, min(30.0, remaining)))
            assert r.status_code == 200, f"GET job {job_id}: {r.status_code} {r.text}"
            job = r.json()
            if job["status"] in TERMINAL:
                return job
            if remaining <= 0:
                raise AssertionError(f"job {job_id} did not end within {timeout}s; last seen: {job}")

    def run_job(self, data: bytes, filename: str = "image.jpg", **kwargs) -> dict:
        return self.wait(self.submit_ok(data, filename, **kwargs)["id"])

    # what is on disk and in Redis

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def originals_dir(self) -> Path:
        return self.data_dir / "objects" / "originals"

    def thumbnails_dir(self, job_id: str) -> Path:
        return self.data_dir / "objects" / "thumbnails" / job_id

    def spool_files(self) -> set[str]:
        """The spool's files, but the API processes' owner locks (api/spool.py), which live as long as they do."""
        if not self.spool_dir.exists():
            return set()
        return {p.name for p in self.spool_dir.iterdir() if not (p.name.startswith("owner-") and p.suffix == ".lock")}

    def originals(self) -> set[str]:
        return {p.name for p in self.originals_dir.iterdir()} if self.originals_dir.exists() else set()

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    @property
    def keys(self) -> Keys:
        """The names of this service's Redis keys."""
        return Keys(self.key_prefix)

    def job_ids_in_redis(self) -> set[str]:
        """Every job record under this service's key prefix (read from Redis itself, not through the API)."""
        with self.redis() as r:
            keys = set(r.scan_iter(match=self.keys.job("*"), count=1000))
            indexed = set(r.zrange(self.keys.index, 0, -1))
        return {k.rsplit(":", 1)[1] for k in keys} | indexed

    def snapshot(self) -> dict[str, set[str]]:
        """What a rejected upload must not change."""
        return {"spool": self.spool_files(), "originals": self.originals(), "jobs": self.job_ids_in_redis()}

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{log_tail(p)}" for p in self.logs)


def start_service(
    base: Path,
    redis_url: str,
    *,
    key_prefix: str | None = None,
    extra_env: dict | None = None,
    with_worker: bool = True,
) -> Service:
    """Start uvicorn (the API) and, unless told not to, one worker as subprocesses; the caller must call
    `stop_service`."""
    data_dir = (base / "data").resolve()
    logs_dir = base / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    key_prefix = key_prefix or f"t{uuid.uuid4().hex[:10]}"
    defaults = {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_pixels": MAX_PIXELS, "image_processes": 2}
    env = clean_env(
        **{**defaults, **(extra_env or {})},  # extra_env may override the defaults
        redis_url=redis_url,
        data_dir=data_dir,
        key_prefix=key_prefix,
        host="127.0.0.1",
        port=port,
    )
    commands = {
        "api": [PYTHON, "-m", "uvicorn", "api.app:create_app", "--factory", "--no-server-header"]
        + ["--host", "127.0.0.1", "--port", str(port)],
        "worker": [PYTHON, "-m", "gpu_worker"],
    }
    if not with_worker:
        del commands["worker"]
    base_url = f"http://127.0.0.1:{port}"
    service = Service(base_url, data_dir, redis_url, key_prefix, httpx.Client(base_url=base_url, timeout=60.0))
    service.env, service.logs_dir = env, logs_dir
    try:
        for name, argv in commands.items():
            service.start(name, argv)
        wait_ready(base_url, list(service.procs.values()), service.logs)
    except BaseException:
        stop_service(service)
        raise
    return service


def stop_service(service: Service) -> None:
    service.client.close()
    for proc in service.procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in service.procs.values():
        stop_process(proc)


# A traceback as Python prints it, or inside a JSON log line (ECS `error.stack_trace`, thumbify/logs.py).
_TRACEBACK = re.compile(r'^Traceback \(most recent call last\):|"stack_trace":', re.MULTILINE)


def has_traceback(text: str) -> bool:
    return bool(_TRACEBACK.search(text))


def report_tracebacks(config: pytest.Config, service: Service) -> None:
    """Print the subprocess logs at the end of the run when they hold a traceback (a bug somewhere)."""
    bad = [p for p in service.logs if p.exists() and has_traceback(p.read_text(errors="replace"))]
    if not bad:
        return
    text = "\n".join(f"--- {p} ---\n{log_tail(p, 20000)}" for p in bad)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "service logs with tracebacks", red=True)
        reporter.write_line(text)
    else:
        print(text, file=sys.stderr)
