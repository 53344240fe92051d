"""Hostile clients and an unlucky operator against the API: a killed API's upload slots, stalled uploads, a crowd of
long-polls on one job, malformed multipart and Range headers, and an Idempotency-Key reused for another request.

Real processes throughout: uvicorn serving the app, a worker where one is needed, real redis-servers, raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.faults import wait_for
from support.images import make_jpeg
from support.keys import bearer, create_key
from support.problems import PROBLEM_BASE, assert_problem
from support.service import Service, start_service, stop_service, wait_ready
from support.uploads import StalledUpload, multipart

from thumbify.keyspace import Keys
from thumbify.ratelimit import Limits
from thumbify.redis_conn import connect

LEASE_S = 3.0
IDLE_TIMEOUT_S = 2.0


@pytest.fixture
def keyed(redis_server: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Service, str]]:
    """An API (no worker) with one key allowed 8 uploads at once and upload-slot leases of LEASE_S; more settings
    by indirect parametrization. Write chunks of 64 bytes, so that the first bytes of a stalled upload are spooled
    (a body under one chunk is held in memory) and the spool shows which uploads are in flight."""
    keys_file = tmp_path / "keys.json"
    key = create_key(keys_file, "hasty")
    env = {"api_keys_file": keys_file, "upload_lease_s": LEASE_S, "upload_chunk_bytes": 64}
    env |= getattr(request, "param", {})
    svc = start_service(tmp_path, redis_server, extra_env=env, with_worker=False)
    try:
        yield svc, key
    finally:
        stop_service(svc)


@contextlib.contextmanager
def stalled_uploads(svc: Service, key: str, data: bytes, count: int = 8) -> Iterator[list[StalledUpload]]:
    """`count` stalled uploads with the key, once the server has spooled each; closed on exit."""
    stalled = [StalledUpload(svc.base_url, data, bearer(key)) for _ in range(count)]
    try:
        wait_for(lambda: len(svc.spool_files()) == count, 30, "the stalled uploads spooled")
        yield stalled
    finally:
        for upload in stalled:
            upload.close()


def restart_api(svc: Service) -> None:
    """Start the API again, on the same port, settings and Redis, after it died."""
    proc = svc.start("api", list(svc.procs["api"].args))
    wait_ready(svc.base_url, [proc], svc.logs)


# -- 1. upload slots outlive no API -----------------------------------------------------------------------------------


def test_a_killed_api_does_not_lock_a_key_out(keyed) -> None:
    svc, key = keyed
    jpeg = make_jpeg(64, 48)
    with stalled_uploads(svc, key, jpeg):
        assert_problem(svc.submit(jpeg, headers=bearer(key)), 429, "rate-limited", "8 uploads in flight")
        svc.procs["api"].send_signal(signal.SIGKILL)
        svc.procs["api"].wait(30)
    restart_api(svc)
    # Each refusal meanwhile must not extend the dead process's leases: the key is free once they run out.
    started = time.monotonic()
    while (r := svc.submit(jpeg, headers=bearer(key))).status_code == 429:
        assert time.monotonic() - started < LEASE_S + 30, f"the key is still locked out: {r.text}"
        time.sleep(0.2)
    assert r.status_code == 202, r.text


def test_a_refused_enter_does_not_extend_the_leases(redis_server: str) -> None:
    prefix, client = f"t{uuid.uuid4().hex[:10]}", "alice"

    async def enter(leave: bool) -> tuple[bool, list, int]:
        """Whether a slot was given; then the leases and when their set expires (ms)."""
        redis = connect(redis_server)
        try:
            limits = Limits(redis, Keys(prefix), rate=0, burst=1, max_uploads=2, lease_s=LEASE_S)
            slot = await limits.enter_upload(client)
            if slot is not None and leave:
                await slot.release()
            key = limits.keys.uploads(client)
            return slot is not None, await redis.zrange(key, 0, -1, withscores=True), await redis.pexpiretime(key)
        finally:
            await redis.aclose()

    # Two processes enter and die (their loop ends without leaving: nobody renews their leases any more).
    assert asyncio.run(enter(leave=False))[0]
    entered, *leases = asyncio.run(enter(leave=False))
    assert entered and len(leases[0]) == 2 and leases[1] == leases[0][1][1]  # the set ends with its last lease
    # Refused while they last; a refusal changes no lease and not the set's expiry.
    refused, *after = asyncio.run(enter(leave=True))
    assert not refused and after == leases
    # Once the leases run out the slots are free again.
    wait_for(lambda: asyncio.run(enter(leave=True))[0], LEASE_S + 10, "the dead leases to expire", 0.2)


def test_a_live_upload_keeps_its_slot_past_the_lease(redis_server: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        redis = connect(redis_server)
        try:
            limits = Limits(redis, Keys(prefix), rate=0, burst=1, max_uploads=1, lease_s=1.0)
            slot = await limits.enter_upload("bob")
            assert slot is not None
            await asyncio.sleep(3.0)  # three lease times: renewed all along
            assert await limits.enter_upload("bob") is None
            await slot.release()
            other = await limits.enter_upload("bob")
            assert other is not None
            await other.release()
        finally:
            await redis.aclose()

    asyncio.run(main())


# -- 10. stalled uploads ----------------------------------------------------------------------------------------------

STALLS_TIME_OUT = pytest.mark.parametrize("keyed", [{"upload_idle_timeout_s": IDLE_TIMEOUT_S}], indirect=True)


@STALLS_TIME_OUT
def test_a_stalled_upload_is_dropped_and_frees_its_slot(keyed) -> None:
    svc, key = keyed
    jpeg = make_jpeg(64, 48)
    with stalled_uploads(svc, key, jpeg) as stalled:
        for upload in stalled:
            answer = upload.answer()  # within the socket's 30 s timeout, or this test fails
            if answer is not None:
                status, headers, body = answer
                assert status == 408 and headers["content-type"].startswith("application/problem+json"), body
                assert headers.get("connection") == "close"
                assert PROBLEM_BASE + "upload-timeout" in body.decode()
    wait_for(lambda: not svc.spool_files(), 10, "the spool to be emptied")
    with stalled_uploads(svc, key, jpeg):  # all 8 slots are free again: 8 more uploads are each taken and spooled
        pass


@STALLS_TIME_OUT
def test_a_refused_upload_that_stalls_still_gets_its_answer(keyed) -> None:
    """A body the server reads only to drop it (here: its Idempotency-Key is busy, 409) must not keep the request
    waiting for the rest forever: the answer comes once the client has been idle for the timeout."""
    svc, key = keyed
    headers = {**bearer(key), "Idempotency-Key": "busy"}
    first = StalledUpload(svc.base_url, make_jpeg(64, 48), headers)
    try:
        wait_for(svc.spool_files, 30, "the first upload spooled")
        second = StalledUpload(svc.base_url, make_jpeg(64, 48), headers)
        try:
            answer = second.answer()  # within the socket's 30 s timeout, or this test fails
            assert answer is not None and answer[0] == 409, answer
        finally:
            second.close()
    finally:
        first.close()


# -- 3. many long-polls on one job -----------------------------------------------------------------------------------

WAITERS = 500


def test_500_long_polls_on_one_job_all_get_it_done(service: Service) -> None:
    worker = service.procs["worker"]
    worker.send_signal(signal.SIGSTOP)  # the job stays queued while the crowd gathers
    try:
        job_id = service.submit_ok(make_jpeg(64, 48))["id"]

        async def crowd() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=WAITERS + 10, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=service.base_url, limits=limits, timeout=90) as client:
                tasks = [
                    asyncio.create_task(client.get(f"/v1/jobs/{job_id}", params={"wait": 30})) for _ in range(WAITERS)
                ]
                done, _ = await asyncio.wait(tasks, timeout=8)
                early = [t.result() for t in done if not t.exception()]
                assert not done, f"{len(done)} answered early: {[(r.status_code, r.text[:120]) for r in early[:3]]}"
                worker.send_signal(signal.SIGCONT)
                return await asyncio.gather(*tasks)

        answers = asyncio.run(crowd())
    finally:
        worker.send_signal(signal.SIGCONT)
    statuses = [r.status_code for r in answers]
    assert statuses == [200] * WAITERS, {s: statuses.count(s) for s in set(statuses)}
    assert {r.json()["status"] for r in answers} == {"done"}


def test_a_job_deleted_while_waited_on_answers_404_at_once(service: Service) -> None:
    worker = service.procs["worker"]
    worker.send_signal(signal.SIGSTOP)  # the job stays queued while it is waited on
    try:
        job_id = service.submit_ok(make_jpeg(64, 48))["id"]

        async def wait_and_delete() -> tuple[httpx.Response, float]:
            async with httpx.AsyncClient(base_url=service.base_url, timeout=60) as client:
                waiting = asyncio.create_task(client.get(f"/v1/jobs/{job_id}", params={"wait": 30}))
                await asyncio.sleep(1.0)
                assert not waiting.done()
                assert (await client.delete(f"/v1/jobs/{job_id}")).status_code == 204
                deleted = time.monotonic()
                answer = await waiting
                return answer, time.monotonic() - deleted

        answer, after = asyncio.run(wait_and_delete())
    finally:
        worker.send_signal(signal.SIGCONT)
    assert_problem(answer, 404, "not-found")
    assert after < 10, f"the waiter answered {after:.1f}s after the deletion, not at once"


# -- 4. malformed multipart Content-Type ----------------------------------------------------------------------------

BAD_CONTENT_TYPES = [
    "multipart/form-data; boundary=" + "b" * 257,
    "multipart/form-data; boundary=" + "b" * 5000,
    'multipart/form-data; boundary="' + "b" * 300 + '"',
    'multipart/form-data; boundary="unterminated',
    'multipart/form-data; boundary=""',
    "multipart/form-data; boundary=;",
    "multipart/form-data; boundary=\xe9\xe9",
    "multipart/form-data;;;; boundary",
    "multipart/form-data; boundary=x; boundary=y",
]


@pytest.mark.parametrize("content_type", BAD_CONTENT_TYPES, ids=lambda c: c[:48])
def test_a_malformed_multipart_content_type_is_422(service: Service, content_type: str) -> None:
    before = service.snapshot()
    body, _ = multipart([("file", "a.jpg", make_jpeg(32, 32))])
    r = service.client.post("/v1/jobs", content=body, headers={"Content-Type": content_type.encode("latin-1")})
    assert_problem(r, 422, "invalid-upload")
    assert service.snapshot() == before


# -- Range errors ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thumbnail(service: Service) -> tuple[str, int]:
    job = service.run_job(make_jpeg(320, 240), sizes="64")
    assert job["status"] == "done", job
    thumb = job["thumbnails"][0]
    return thumb["url"], thumb["bytes"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_unsatisfiable_range_is_416_problem_json(service: Service, thumbnail, method: str) -> None:
    url, size = thumbnail
    r = service.client.request(method, url, headers={"Range": f"bytes={size + 10}-"})
    assert r.status_code == 416 and r.headers["content-type"].startswith("application/problem+json"), r.text
    assert r.headers["content-range"] == f"bytes */{size}"
    if method == "GET":
        assert r.json()["type"] == PROBLEM_BASE + "range-not-satisfiable"


@pytest.mark.parametrize("value", ["bytes=9-2", "items=0-1", "bytes", "bytes=,,"])
def test_a_malformed_range_is_400_problem_json(service: Service, thumbnail, value: str) -> None:
    url, _ = thumbnail
    assert_problem(service.client.get(url, headers={"Range": value}), 400, "malformed-range", "range")


def test_good_ranges_and_a_stale_if_range_still_work(service: Service, thumbnail) -> None:
    url, size = thumbnail
    whole = service.client.get(url)
    part = service.client.get(url, headers={"Range": "bytes=2-11"})
    assert part.status_code == 206 and part.content == whole.content[2:12]
    # If-Range that does not match: the Range is ignored, as RFC 9110 says, even a bad one.
    stale = service.client.get(url, headers={"Range": f"bytes={size + 10}-", "If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == whole.content


# -- Idempotency-Key reused with another request -----------------------------------------------------------------------


def test_an_idempotency_key_reused_for_another_request_is_422(service: Service) -> None:
    key = {"Idempotency-Key": f"order-{uuid.uuid4().hex}"}
    jpeg, other = make_jpeg(64, 48), make_jpeg(48, 64)
    first = service.submit(jpeg, headers=key, sizes="64")
    assert first.status_code == 202, first.text
    before = service.snapshot()
    for retry in ({"data": other, "sizes": "64"}, {"data": jpeg, "sizes": "128"}, {"data": jpeg}):
        r = service.submit(retry.pop("data"), headers=key, **retry)
        assert_problem(r, 422, "idempotency-key-reused", "Idempotency-Key")
        assert "idempotent-replayed" not in r.headers
    assert service.snapshot() == before  # the refused uploads left nothing
    # The same request again still replays the first job.
    again = service.submit(jpeg, headers=key, sizes="64")
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
