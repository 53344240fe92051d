"""Batches end to end: `POST /v1/batches` with many files, each an ordinary job; a bad file refused alone; the
counts, `?wait=`, the paged jobs, DELETE, owner isolation; one signed `batch.completed` webhook delivered to a real
receiver (a server in this test on loopback, allow-listed) when the last job ends.

Real things only: redis-server, uvicorn, the worker process, an HTTP receiver; keys made by `thumbify keys create`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks import Webhook
from support.images import jpeg_with_sof_size, make_jpeg
from support.keys import bearer, create_key
from support.problems import assert_problem
from support.service import MAX_UPLOAD_BYTES, Service, start_service, stop_service
from support.webhooks import Receiver

SECRET = "whsec_" + base64.b64encode(b"thumbify-batches-test-secret-32b").decode()
MAX_FILES = 50
NOT_AN_IMAGE = b"this is a text file, not an image " * 20
BAD_HEADER = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00" + bytes(range(256)) * 4  # sniffed as JPEG, unreadable header


@pytest.fixture(scope="module")
def batched(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, dict]]:
    """The API and a worker with two keys, a small batch cap, and webhooks allowed to loopback over http."""
    base = tmp_path_factory.mktemp("batches")
    keys_file = base / "keys.json"
    keys = {name: bearer(create_key(keys_file, name)) for name in ("alice", "bob")}
    env = {
        "api_keys_file": keys_file,
        "max_batch_files": MAX_FILES,
        "callback_allow_http": "true",
        "callback_allow_hosts": '["127.0.0.1"]',
        "webhook_secret": SECRET,
        "webhook_retry_base_s": 0.05,
        "webhook_retry_max_s": 0.5,
    }
    svc = start_service(base, redis_server, extra_env=env)
    svc.client.headers.update(keys["alice"])
    try:
        yield svc, keys
    finally:
        stop_service(svc)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver([200])
    yield hook
    hook.close()


def submit_batch(
    svc: Service, files: list[tuple[str, bytes]], headers: dict | None = None, **options
) -> httpx.Response:
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return svc.client.post("/v1/batches", files=parts, data={k: str(v) for k, v in options.items()}, headers=headers)


def completed(svc: Service, batch_id: str, timeout: float = 120.0) -> dict:
    """The batch once every job has ended (long-polling with ?wait=)."""
    deadline = time.monotonic() + timeout
    while True:
        r = svc.client.get(f"/v1/batches/{batch_id}", params={"wait": 10})
        assert r.status_code == 200, r.text
        if r.json()["status"] == "completed":
            return r.json()
        assert time.monotonic() < deadline, f"batch not completed: {r.json()}\n{svc.log_text()}"


def settled(svc: Service, batch_id: str, timeout: float = 60.0) -> dict:
    """The completed batch once its callback is no longer pending."""
    deadline = time.monotonic() + timeout
    while (batch := completed(svc, batch_id))["callback"]["state"] == "pending":
        assert time.monotonic() < deadline, f"callback still pending: {batch['callback']}\n{svc.log_text()}"
        time.sleep(0.1)
    return batch


def batch_jobs(svc: Service, batch_id: str, **params) -> list[dict]:
    """Every job of the batch, page by page."""
    items, cursor = [], None
    while True:
        query = params | ({"cursor": cursor} if cursor else {})
        page = svc.client.get(f"/v1/batches/{batch_id}/jobs", params=query)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        if not (cursor := page.json()["next_cursor"]):
            return items


def test_a_batch_of_50_with_3_bad_files_ends_47_done_3_failed_and_one_webhook(batched, receiver: Receiver) -> None:
    svc, _ = batched
    good = make_jpeg(64, 48)
    whole = make_jpeg(640, 480)
    files = [(f"img{i}.jpg", good) for i in range(MAX_FILES)]
    files[5] = ("notes.jpg", NOT_AN_IMAGE)  # refused at upload: 415
    files[17] = ("header.jpg", BAD_HEADER)  # refused at upload: its header cannot be read
    files[40] = ("cut.jpg", whole[: len(whole) // 2])  # accepted, fails in the worker
    r = submit_batch(svc, files, callback_url=receiver.url, sizes="32")
    assert r.status_code == 202, r.text
    created = r.json()
    assert r.headers["location"] == f"/v1/batches/{created['id']}"
    assert created["counts"] == {"queued": 48, "processing": 0, "done": 0, "failed": 2}
    assert [j["source"]["filename"] for j in created["jobs"]] == [
        n for i, (n, _) in enumerate(files) if i not in (5, 17)
    ]
    assert {j["batch_id"] for j in created["jobs"]} == {created["id"]}
    assert all(j["callback"] is None for j in created["jobs"])  # batch_events=batch: no per-job webhooks
    refused = {e["index"]: e for e in created["rejected"]}
    assert sorted(refused) == [5, 17] and refused[5]["filename"] == "notes.jpg"
    assert refused[5]["problem"]["type"].endswith("/unsupported-media") and refused[5]["problem"]["status"] == 415
    assert refused[17]["problem"]["status"] == 422

    batch = settled(svc, created["id"])
    assert batch["counts"] == {"queued": 0, "processing": 0, "done": 47, "failed": 3}
    assert batch["completed_at"] and batch["callback"]["state"] == "delivered"
    failed = batch_jobs(svc, created["id"], status="failed")
    assert [j["source"]["filename"] for j in failed] == ["cut.jpg"]
    listed = batch_jobs(svc, created["id"], limit=20)
    assert sorted(j["id"] for j in listed) == sorted(j["id"] for j in created["jobs"])

    (headers, body), *more = receiver.received
    assert more == []  # one webhook for the batch, none for its jobs
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "batch.completed" and headers["webhook-id"] == f"batch_{created['id']}_completed"
    assert payload["data"]["id"] == created["id"]
    assert payload["data"]["counts"] == {"queued": 0, "processing": 0, "done": 47, "failed": 3}


@pytest.mark.parametrize(
    ("events", "expected"),
    [("both", ["batch.completed", "job.done", "job.done"]), ("jobs", ["job.done", "job.done"])],
)
def test_batch_events_chooses_the_webhooks(batched, receiver: Receiver, events: str, expected: list[str]) -> None:
    svc, _ = batched
    files = [("a.jpg", make_jpeg(40, 30)), ("b.jpg", make_jpeg(30, 40))]
    r = submit_batch(svc, files, callback_url=receiver.url, batch_events=events)
    assert r.status_code == 202, r.text
    created = r.json()
    batch = settled(svc, created["id"]) if events == "both" else completed(svc, created["id"])
    assert batch["events"] == events and (batch["callback"] is None) == (events == "jobs")
    for job in created["jobs"]:
        deadline = time.monotonic() + 60
        while svc.wait(job["id"])["callback"]["state"] == "pending":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    types = sorted(Webhook(SECRET).verify(body, headers)["type"] for headers, body in receiver.received)
    assert types == expected


def test_get_with_wait_answers_with_the_completed_batch(batched) -> None:
    svc, _ = batched
    created = submit_batch(svc, [(f"{i}.jpg", make_jpeg(48, 48)) for i in range(3)]).json()
    assert created["status"] == "queued" and created["callback"] is None
    r = svc.client.get(f"/v1/batches/{created['id']}", params={"wait": 30})
    assert r.status_code == 200 and r.json()["status"] == "completed", r.text
    assert r.json()["counts"] == {"queued": 0, "processing": 0, "done": 3, "failed": 0}


def test_another_key_sees_404(batched) -> None:
    svc, keys = batched
    created = submit_batch(svc, [("a.jpg", make_jpeg(32, 32))]).json()
    path = f"/v1/batches/{created['id']}"
    for r in (
        svc.client.get(path, headers=keys["bob"]),
        svc.client.get(path, params={"wait": 1}, headers=keys["bob"]),
        svc.client.get(f"{path}/jobs", headers=keys["bob"]),
        svc.client.delete(path, headers=keys["bob"]),
        svc.client.get(f"/v1/jobs/{created['jobs'][0]['id']}", headers=keys["bob"]),
    ):
        assert_problem(r, 404, "not-found")
    assert svc.client.get(path).status_code == 200


def test_delete_removes_every_job_and_file(batched) -> None:
    svc, _ = batched
    created = submit_batch(svc, [(f"{i}.jpg", make_jpeg(40, 40)) for i in range(3)]).json()
    completed(svc, created["id"])
    job_ids = [j["id"] for j in created["jobs"]]
    assert all(svc.thumbnails_dir(job_id).exists() for job_id in job_ids)
    assert svc.client.delete(f"/v1/batches/{created['id']}").status_code == 204
    assert_problem(svc.client.get(f"/v1/batches/{created['id']}"), 404, "not-found")
    for job_id in job_ids:
        assert_problem(svc.get_job(job_id), 404, "not-found")
        assert not svc.thumbnails_dir(job_id).exists() and job_id not in svc.originals()
    with svc.redis() as r:
        assert not list(r.scan_iter(match=svc.keys.batch(created["id"]) + "*"))
        assert not set(job_ids) & svc.job_ids_in_redis()


def test_deleting_a_batchs_jobs_one_by_one_takes_the_batch_with_the_last(batched) -> None:
    svc, _ = batched
    created = submit_batch(svc, [(f"{i}.jpg", make_jpeg(40, 40)) for i in range(2)]).json()
    completed(svc, created["id"])
    first, second = (j["id"] for j in created["jobs"])
    assert svc.client.delete(f"/v1/jobs/{first}").status_code == 204
    batch = svc.client.get(f"/v1/batches/{created['id']}").json()
    assert batch["counts"] == {"queued": 0, "processing": 0, "done": 1, "failed": 0}
    assert svc.client.delete(f"/v1/jobs/{second}").status_code == 204
    assert_problem(svc.client.get(f"/v1/batches/{created['id']}"), 404, "not-found")


def test_over_max_batch_files_is_413_and_writes_nothing(batched) -> None:
    svc, _ = batched
    before = svc.snapshot()
    r = submit_batch(svc, [(f"{i}.jpg", make_jpeg(16, 16)) for i in range(MAX_FILES + 1)])
    body = assert_problem(r, 413, "too-many-files", str(MAX_FILES))
    assert body["limit"] == MAX_FILES
    assert svc.snapshot() == before


def test_each_files_limits_are_a_single_uploads_and_refuse_it_alone(batched) -> None:
    svc, _ = batched
    too_big = make_jpeg(32, 32) + bytes(MAX_UPLOAD_BYTES)  # a JPEG's magic, past the byte limit
    huge = jpeg_with_sof_size(20_000, 20_000)  # its header says 400 megapixels
    files = [("big.jpg", too_big), ("ok.jpg", make_jpeg(32, 32)), ("huge.jpg", huge), ("empty.jpg", b"")]
    r = submit_batch(svc, files)
    assert r.status_code == 202, r.text
    refused = {e["filename"]: e["problem"] for e in r.json()["rejected"]}
    assert {name: p["type"].rsplit("/", 1)[1] for name, p in refused.items()} == {
        "big.jpg": "too-large",
        "huge.jpg": "too-many-pixels",
        "empty.jpg": "invalid-upload",
    }
    assert refused["huge.jpg"]["width"] == 20_000 and refused["big.jpg"]["status"] == 413
    assert [j["source"]["filename"] for j in r.json()["jobs"]] == ["ok.jpg"]
    assert completed(svc, r.json()["id"])["counts"] == {"queued": 0, "processing": 0, "done": 1, "failed": 3}
    assert not svc.spool_files()


def test_a_batch_of_only_bad_files_is_422_with_each_files_problem(batched) -> None:
    svc, _ = batched
    before = svc.snapshot()
    r = submit_batch(svc, [("a.txt", NOT_AN_IMAGE), ("b.jpg", BAD_HEADER)])
    body = assert_problem(r, 422, "invalid-upload", "every file")
    assert [e["index"] for e in body["rejected"]] == [0, 1]
    assert svc.snapshot() == before


def test_bad_options_refuse_the_whole_batch(batched) -> None:
    svc, _ = batched
    before = svc.snapshot()
    assert_problem(submit_batch(svc, [("a.jpg", make_jpeg(16, 16))], sizes="0"), 422, "invalid-options")
    assert_problem(submit_batch(svc, [("a.jpg", make_jpeg(16, 16))], batch_events="some"), 422, "invalid-options")
    assert svc.snapshot() == before
