"""What the API does before it reads an upload: backpressure, idempotency keys, and a Redis that is down.

Real processes throughout: uvicorn serving the app, a worker where one is needed, and redis-servers started here.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.images import make_jpeg
from support.problems import PROBLEM_TYPE, assert_problem
from support.service import PYTHON, Service, port_is_free, start_service, stop_service

from thumbify.redis_conn import EmbeddedRedis, free_port


@pytest.fixture
def api_only(redis_server: str, tmp_path: Path) -> Iterator[Service]:
    """An API with no worker (its queue only grows), capped at three queued jobs."""
    svc = start_service(tmp_path, redis_server, with_worker=False, extra_env={"max_queue_depth": 3})
    try:
        yield svc
    finally:
        stop_service(svc)


# -- backpressure -----------------------------------------------------------------------------------------------------


def test_a_full_queue_answers_503_before_the_upload_is_read(api_only: Service) -> None:
    jpeg = make_jpeg(64, 48)
    ids = [api_only.submit_ok(jpeg)["id"] for _ in range(3)]
    before = api_only.snapshot()
    r = api_only.submit(make_jpeg(1600, 1200))
    body = assert_problem(r, 503, "queue-full")
    assert int(r.headers["retry-after"]) > 0
    assert "queue" in body["detail"]
    assert api_only.snapshot() == before  # nothing spooled, stored or recorded
    # Once a worker drains the queue, uploads are taken again.
    api_only.start("worker", [PYTHON, "-m", "gpu_worker"])
    assert all(api_only.wait(job_id)["status"] == "done" for job_id in ids)
    deadline = time.monotonic() + 10  # the worker acks a moment after it marks a job done
    while (r := api_only.submit(jpeg)).status_code == 503:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert r.status_code == 202 and api_only.wait(r.json()["id"])["status"] == "done"


# -- idempotency keys -------------------------------------------------------------------------------------------------


def count_jobs(svc: Service) -> int:
    return len(svc.job_ids_in_redis())


def test_a_retried_request_with_the_same_key_gets_the_same_job(api_only: Service) -> None:
    jpeg = make_jpeg(64, 48)
    first = api_only.submit(jpeg, headers={"Idempotency-Key": "order-1"}, sizes="64")
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    again = api_only.submit(jpeg, headers={"Idempotency-Key": "order-1"}, sizes="64")
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert count_jobs(api_only) == 1
    # Another key, or none, is another job.
    other = api_only.submit_ok(jpeg, headers={"Idempotency-Key": "order-2"})
    assert other["id"] != first.json()["id"]
    assert count_jobs(api_only) == 2


def test_a_key_belongs_to_one_client(api_only: Service) -> None:
    jpeg = make_jpeg(64, 48)
    mine = api_only.submit_ok(jpeg, headers={"Idempotency-Key": "shared"})["id"]
    # Another client address on loopback: the same key is a new job there.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=api_only.base_url, transport=transport, timeout=30) as other_client:
        r = other_client.post(
            "/v1/jobs", files={"file": ("a.jpg", jpeg, "image/jpeg")}, headers={"Idempotency-Key": "shared"}
        )
    assert r.status_code == 202 and r.json()["id"] != mine


def test_a_key_whose_job_was_deleted_makes_a_new_job(api_only: Service) -> None:
    jpeg = make_jpeg(64, 48)
    first = api_only.submit_ok(jpeg, headers={"Idempotency-Key": "k"})["id"]
    assert api_only.client.delete(f"/v1/jobs/{first}").status_code == 204
    r = api_only.submit(jpeg, headers={"Idempotency-Key": "k"})
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers
    assert r.json()["id"] != first


def test_a_failed_request_does_not_hold_its_key(api_only: Service) -> None:
    r = api_only.submit(b"not an image at all", "x.jpg", headers={"Idempotency-Key": "retry-me"})
    assert_problem(r, 415, "unsupported-media")
    r = api_only.submit(make_jpeg(64, 48), headers={"Idempotency-Key": "retry-me"})
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é"])
def test_a_malformed_key_is_422_naming_the_header(api_only: Service, key: str) -> None:
    before = api_only.snapshot()
    r = api_only.submit(make_jpeg(64, 48), headers={"Idempotency-Key": key.encode("utf-8")})
    body = assert_problem(r, 422, "invalid-options")
    assert "Idempotency-Key" in body["detail"]
    assert api_only.snapshot() == before


def test_the_same_key_in_flight_is_409(api_only: Service) -> None:
    """A second request with the key while the first is still uploading: 409, and then the first's job."""
    jpeg = make_jpeg(64, 48)
    started = threading.Event()
    result: dict[str, httpx.Response] = {}
    boundary = "slowboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def slow_body() -> Iterator[bytes]:
        yield head + jpeg[:100]
        started.set()
        time.sleep(2.0)
        yield jpeg[100:] + tail

    def slow_upload() -> None:
        with httpx.Client(base_url=api_only.base_url, timeout=30) as c:
            result["slow"] = c.post(
                "/v1/jobs",
                content=slow_body(),
                headers={"Idempotency-Key": "busy", "content-type": f"multipart/form-data; boundary={boundary}"},
            )

    thread = threading.Thread(target=slow_upload)
    thread.start()
    assert started.wait(10)
    time.sleep(0.3)  # the first request has claimed the key by now
    r = api_only.submit(jpeg, headers={"Idempotency-Key": "busy"})
    assert_problem(r, 409, "conflict")
    thread.join(30)
    assert result["slow"].status_code == 202, result["slow"].text
    replay = api_only.submit(jpeg, headers={"Idempotency-Key": "busy"})
    assert replay.status_code == 202 and replay.json()["id"] == result["slow"].json()["id"]
    assert count_jobs(api_only) == 1


# -- Redis outage ------------------------------------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    try:
        yield server
    finally:
        server.stop()
        assert port_is_free(server.port)


def test_while_redis_is_down_the_api_answers_503_and_recovers_by_itself(own_redis: EmbeddedRedis, tmp_path) -> None:
    svc = start_service(tmp_path / "svc", own_redis.url, with_worker=False)
    try:
        job_id = svc.submit_ok(make_jpeg(64, 48))["id"]
        own_redis.stop()
        started = time.monotonic()
        for r in (
            svc.submit(make_jpeg(64, 48)),
            svc.get_job(job_id),
            svc.get_job(job_id, wait=5),
            svc.client.get("/v1/jobs"),
            svc.client.get("/readyz"),
        ):
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith(PROBLEM_TYPE)
            assert int(r.headers["retry-after"]) > 0
        assert time.monotonic() - started < 20  # answered, not hung
        assert svc.client.get("/healthz").status_code == 200  # the process itself is fine
        assert svc.spool_files() == set()  # the refused upload left nothing behind
        own_redis.start()  # same port, same folder: the AOF brings the job back
        deadline = time.monotonic() + 20
        while svc.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover after Redis came back"
            time.sleep(0.2)
        assert svc.get_job(job_id).json()["status"] == "queued"
        assert svc.submit(make_jpeg(64, 48)).status_code == 202
    finally:
        stop_service(svc)


def test_a_hung_redis_gets_503_not_a_hung_api(own_redis: EmbeddedRedis, tmp_path) -> None:
    """A redis-server that stops answering (SIGSTOP) without closing its sockets: the API times out and says 503."""
    svc = start_service(tmp_path / "svc", own_redis.url, with_worker=False)
    try:
        job_id = svc.submit_ok(make_jpeg(64, 48))["id"]
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = svc.get_job(job_id)
            assert r.status_code == 503 and r.headers["content-type"].startswith(PROBLEM_TYPE), r.text
            assert time.monotonic() - started < 30
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while svc.get_job(job_id).status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover after Redis answered again"
            time.sleep(0.2)
    finally:
        stop_service(svc)
