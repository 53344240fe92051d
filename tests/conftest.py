"""Fixtures and hooks only; what they are built from lives in tests/support/ (named for what each module holds).

Nothing here is mocked. `redis_server` is one `EmbeddedRedis` for the session; `service` is uvicorn serving
`api.app:create_app` plus one `python -m gpu_worker`, both pointed at that Redis and at a temporary data folder
(support/service.py). Every process started here is stopped (and waited for) on teardown; the subprocess logs are
written to files and attached to the report of any test that fails, and printed at the end of the session if they
hold a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pyvips
from support import images
from support.backends import backend_params
from support.images import make_jpeg
from support.service import Service, port_is_free, report_tracebacks, start_service, stop_service

from gpu_worker.backends.vips import configure_vips
from thumbify.redis_conn import EmbeddedRedis, free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port; yields its URL."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), port=free_port()).start()
    try:
        yield server.url
    finally:
        port = server.port
        server.stop()
        assert port_is_free(port), f"redis port {port} is still bound after stop"


@pytest.fixture(scope="session")
def service(
    redis_server: str, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Service]:
    """The API and one worker, real subprocesses on loopback; a warm-up job proves the stack works end to end."""
    svc = start_service(tmp_path_factory.mktemp("service"), redis_server)
    try:
        job = svc.run_job(make_jpeg(64, 48), "warmup.jpg")
        assert job["status"] == "done", f"warm-up job did not finish: {job}\n{svc.log_text()}"
        yield svc
    finally:
        stop_service(svc)
        report_tracebacks(pytestconfig, svc)
        port = int(svc.base_url.rsplit(":", 1)[1])
        assert port_is_free(port), f"API port {port} is still bound after stop"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test that used `service` gets the subprocess logs in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        svc = getattr(item, "funcargs", {}).get("service")
        if isinstance(svc, Service):
            report.sections.append(("service logs", svc.log_text()))


@pytest.fixture(scope="module", params=backend_params())
def any_backend(request: pytest.FixtureRequest):
    """Each backend this machine has in turn (vips, DALI, tiles and the router on cpu; their GPU variants)."""
    configure_vips(1)
    backend = request.param()
    yield backend
    close = getattr(backend, "close", None)
    if close is not None:
        close()


@pytest.fixture(scope="module")
def photo_12mp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 4000x3000 photo-like JPEG and its full-resolution decode as float64."""
    data = images.photo_like(4000, 3000, seed=1, quality=95)
    path = images.write(tmp_path_factory.mktemp("photo") / "photo.jpg", data)
    full = pyvips.Image.new_from_buffer(data, "").numpy().astype(np.float64)
    return path, full
