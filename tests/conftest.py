"""Fixtures and hooks only; what they are built from lives in tests/support/ (named for what each module holds).

Nothing here is mocked. `redis_server` is one `EmbeddedRedis` for the session; `service` is uvicorn serving
`api.app:create_app` plus one `python -m gpu_worker`, both pointed at that Redis and at a temporary data folder
(support/service.py); `localstack` is one LocalStack S3 for the session and `direct` a keyed Thumbify on it per
module (support/localstack.py, support/direct.py). Every process started here is stopped (and waited for) on
teardown; the subprocess logs are written to files and attached to the report of any test that fails, and printed
at the end of the session if they hold a traceback.

Every test gets one tier, assigned here (`pytest_collection_modifyitems`), so that a run can pick one:
- `service`: it starts processes or servers: it uses a fixture that does (`SERVICE_FIXTURES`, or one built on them),
  or its module or the test itself is marked `service` because it starts them itself (CLI, `serve`, workers);
- `gpu`: it needs a real GPU: a skip that says "no GPU", a `gpu` parameter (the device, `dali-gpu`, `tiles-gpu`,
  `router-gpu`), or a `gpu` mark (test_kernels_gpu.py);
- `fast`: the rest, in-process. A `fast` test that starts a process fails (an audit hook sees it): mark it `service`.
`pytest -m fast -n 2` is the quick loop (under a minute on two cores, pytest-xdist); `pytest -m "not gpu"` is what
a machine without a GPU can run.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pyvips
from support import images
from support.backends import backend_params, opened
from support.direct import Direct, direct_service
from support.images import make_jpeg
from support.localstack import LocalStackS3, missing_reason
from support.service import Service, port_is_free, report_tracebacks, start_service, stop_service

from thumbify.redis_conn import EmbeddedRedis, free_port

# Fixtures that start a process or a server (those built on them are found through each test's fixture closure; a
# fixture that asks for one by name, with `request.getfixturevalue`, is listed itself, or marks its parameter).
SERVICE_FIXTURES = {"redis_server", "own_redis", "s3", "localstack", "rendered", "mode"}
_NO_GPU = re.compile(r"\bno GPU\b")
# Audit events of a process being started. multiprocessing's spawn (a render pool) raises none: the tests that start
# render processes are marked `service` by hand.
_PROCESS_EVENTS = {"subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork"}
_fast_test: list[pytest.Item] = []  # the `fast` test running now, if any
_started: list[str] = []  # what it started


def _needs_gpu(item: pytest.Item) -> bool:
    if item.get_closest_marker("gpu"):
        return True
    skips = [*item.iter_markers("skipif"), *item.iter_markers("skip")]
    if any(_NO_GPU.search(str(mark.kwargs.get("reason", ""))) for mark in skips):
        return True
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "gpu" in re.split(r"[-\[\]]", callspec.id)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Assign each test its tier (see the module docstring)."""
    for item in items:
        starts_processes = item.get_closest_marker("service") or SERVICE_FIXTURES & set(item.fixturenames)
        if starts_processes and not item.get_closest_marker("service"):
            item.add_marker(pytest.mark.service)
        if _needs_gpu(item) and not item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.gpu)
        if not (item.get_closest_marker("service") or item.get_closest_marker("gpu")):
            item.add_marker(pytest.mark.fast)


def _audit(event: str, args: tuple) -> None:
    if _fast_test and event in _PROCESS_EVENTS:
        _started.append(f"{event} {str(args[0])[:200]}")


sys.addaudithook(_audit)


def _refuse_processes(item: pytest.Item):
    """A `fast` test (its own fixtures included) must not start processes: `pytest -m fast` would lie."""
    watching = item.get_closest_marker("fast") is not None
    if watching:
        _fast_test.append(item)
        _started.clear()
    try:
        result = yield
    finally:
        _fast_test.clear()
    if watching and _started:
        raise pytest.fail.Exception(f"this `fast` test started a process ({_started[0]}): mark it `service`")
    return result


pytest_runtest_setup = pytest.hookimpl(wrapper=True)(_refuse_processes)
pytest_runtest_call = pytest.hookimpl(wrapper=True)(_refuse_processes)


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


@pytest.fixture(scope="session")
def localstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStackS3]:
    """LocalStack's S3, one for the session (about 10 s to start): the server that checks presigned URLs and POST
    policies. Skipped, saying why, where scripts/get-localstack.sh found no Python 3.13+ to install it with."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("localstack")
    with LocalStackS3(base / "root", base / "localstack.log").start() as server:
        yield server


@pytest.fixture(scope="module")
def direct(localstack: LocalStackS3, redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Direct]:
    """A Thumbify (API and worker) on LocalStack's S3 with API keys (support/direct.py), one per test module."""
    with direct_service(tmp_path_factory.mktemp("direct"), redis_server, localstack) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test that used `service` (or `direct`) gets the subprocess logs in its report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        svc = funcargs["direct"].svc if isinstance(funcargs.get("direct"), Direct) else funcargs.get("service")
        if isinstance(svc, Service):
            report.sections.append(("service logs", svc.log_text()))


@pytest.fixture(scope="module", params=backend_params())
def any_backend(request: pytest.FixtureRequest):
    """Each backend this machine has in turn (vips, DALI, tiles and the router on cpu; their GPU variants)."""
    with opened(request.param) as backend:
        yield backend


@pytest.fixture(scope="session")
def photo_12mp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 4000x3000 photo-like JPEG and its full-resolution decode as float64."""
    data = images.photo_like(4000, 3000, seed=1, quality=95)
    path = images.write(tmp_path_factory.mktemp("photo") / "photo.jpg", data)
    full = pyvips.Image.new_from_buffer(data, "").numpy().astype(np.float64)
    return path, full
