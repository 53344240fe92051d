"""Direct-to-bucket uploads (issue 15): POST /v1/uploads answers presigned URLs, the client sends the bytes to the
bucket itself, POST /v1/uploads/{id}/complete judges the object and queues the job.

The bucket is LocalStack's S3 (support/localstack.py), which checks what it is sent against the presigned URL or
POST policy, so a refusal here is the bucket's own. The service is real: uvicorn, a worker, redis-server, with API
keys. Only what the API answered is sent to the bucket: no credentials of the test's own."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from support.direct import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    MIB,
    Direct,
    assert_colour,
    direct_service,
    fetch_thumbnail,
    object_key,
    post_form,
    put_single,
    send,
)
from support.faults import start_worker
from support.images import make_jpeg, noise_image, solid_image
from support.keys import bearer, create_key
from support.localstack import BUCKET, LocalStackS3
from support.problems import PROBLEM_BASE, assert_names_field, assert_problem
from support.service import start_service, stop_service

from thumbify.keyspace import Keys
from thumbify.retention import Retention
from thumbify.settings import Settings
from thumbify.storage.s3 import S3Storage
from thumbify.uploads import UploadStore

COLOUR = (40, 120, 200)
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


@pytest.fixture(scope="module")
def coloured_jpeg() -> bytes:
    return solid_image(800, 600, COLOUR).jpegsave_buffer(Q=95)


def assert_coloured_thumbnails(d: Direct, job: dict, longest: int) -> None:
    """The job is done, with one thumbnail whose longest side is `longest`, of the 4:3 source's solid colour."""
    assert job["status"] == "done", job
    [thumb] = job["thumbnails"]
    image = fetch_thumbnail(d.svc, thumb, d.headers())
    assert (image.width, image.height) == (longest, longest * 3 // 4)
    assert_colour(image, COLOUR)


# -- the three ways to send the bytes ---------------------------------------------------------------------------------


def test_a_browser_form_post_becomes_thumbnails(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "holiday.jpg", method="POST", options={"sizes": "256"})
    assert upload["method"] == "POST" and "parts" not in upload, upload
    datetime.fromisoformat(upload["expires_at"])  # ISO 8601
    pending = direct.get_upload(upload["id"]).json()
    assert pending == {"id": upload["id"], "status": "pending", "expires_at": upload["expires_at"], "job_id": None}

    r = post_form(upload, coloured_jpeg, "holiday.jpg")  # the returned fields and the file, nothing else
    assert r.status_code == 204, r.text
    assert object_key(upload) in direct.stored()

    job = direct.complete_ok(upload)
    assert job["source"]["origin"] == "direct", job
    job = direct.wait(job["id"])
    assert_coloured_thumbnails(direct, job, 256)
    completed = direct.get_upload(upload["id"]).json()
    assert completed["status"] == "completed" and completed["job_id"] == upload["id"], completed


def test_a_presigned_put_with_prefer_wait(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "put.jpg", method="PUT", options={"sizes": ["128"], "format": "png"})
    assert upload["method"] == "PUT" and "fields" not in upload and "parts" not in upload, upload
    assert put_single(upload, coloured_jpeg).status_code == 200
    r = direct.complete(upload, headers={"Prefer": "wait=30"})
    assert r.status_code == 201, r.text  # finished within the wait: the finished job
    job = r.json()
    assert_coloured_thumbnails(direct, job, 128)
    assert job["thumbnails"][0]["format"] == "png", job


def test_a_multipart_upload_of_two_parts(direct: Direct) -> None:
    image = noise_image(2200, 2200)  # 4.8 MP: under the service's pixel limit
    assert image.width * image.height < MAX_PIXELS
    data = image.pngsave_buffer(compression=1)
    assert len(data) > 10 * MIB, len(data)
    upload = direct.create_ok(data, "noise.png", method="PUT", parts=2, options={"sizes": "300"})
    assert upload["part_size"] == -(-len(data) // 2) and [p["number"] for p in upload["parts"]] == [1, 2], upload
    parts = send(upload, data, "noise.png")
    job = direct.complete_ok(upload, json={"parts": parts})
    assert not direct.s3.open_multipart_uploads(direct.prefix), "complete must complete the multipart upload"
    stored = direct.s3.client().get_object(Bucket=BUCKET, Key=object_key(upload))["Body"].read()
    assert stored == data, "the object is not the file, its two parts in order"
    job = direct.wait(job["id"])
    assert job["status"] == "done", job
    [thumb] = job["thumbnails"]
    thumbnail = fetch_thumbnail(direct.svc, thumb, direct.headers())
    assert (thumbnail.width, thumbnail.height) == (300, 300)


# -- what the bucket itself refuses -----------------------------------------------------------------------------------


def test_the_bucket_refuses_a_form_over_the_declared_size(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "small.jpg", method="POST")
    r = post_form(upload, coloured_jpeg + b"\0" * 1024, "small.jpg")  # 1 KiB more than declared
    assert r.status_code == 400 and "EntityTooLarge" in r.text, r.text
    assert object_key(upload) not in direct.stored()
    assert_problem(direct.complete(upload), 409, "upload-not-received")


def test_the_bucket_refuses_a_put_of_another_length(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "small.jpg", method="PUT")
    for data in (coloured_jpeg + b"\0" * 1024, coloured_jpeg[:-1]):
        r = put_single(upload, data)
        assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text, r.text
    assert object_key(upload) not in direct.stored()


def test_the_bucket_refuses_another_key_or_an_expired_url(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "k.jpg", method="PUT")
    key = object_key(upload)
    elsewhere = dict(upload, url=upload["url"].replace(key, f"{direct.prefix}elsewhere.jpg"))
    assert elsewhere["url"] != upload["url"], upload
    r = put_single(elsewhere, coloured_jpeg)
    assert r.status_code == 403 and "SignatureDoesNotMatch" in r.text, r.text
    form = direct.create_ok(coloured_jpeg, "k.jpg", method="POST")
    moved = dict(form, fields={**form["fields"], "key": f"{direct.prefix}elsewhere.jpg"})
    r = post_form(moved, coloured_jpeg)
    assert r.status_code == 403 and "AccessDenied" in r.text, r.text  # the policy pins the key
    # An expired URL for the same key (the API's own live 60 s at least: one is made here, as the API makes them).
    expired = direct.s3.client().generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": key, "ContentLength": len(coloured_jpeg)}, ExpiresIn=1
    )
    time.sleep(2)
    r = httpx.put(expired, content=coloured_jpeg)
    assert r.status_code == 403 and "expired" in r.text, r.text
    assert not {key, f"{direct.prefix}elsewhere.jpg"} & direct.stored()


# -- what complete refuses: the object is judged, and deleted when refused --------------------------------------------


def test_a_renamed_pdf_is_refused_at_complete_and_deleted(direct: Direct) -> None:
    upload = direct.create_ok(PDF, "photo.jpg", method="PUT", content_type="image/jpeg")
    send(upload, PDF)
    assert object_key(upload) in direct.stored()
    # The type a streamed upload of the same bytes gets (test_api_bad_input).
    assert_problem(direct.complete(upload), 415, "unsupported-media", "not an image")
    assert object_key(upload) not in direct.stored(), "a refused object must be deleted"
    assert_problem(direct.complete(upload), 404, "not-found")  # the upload is closed
    assert_problem(direct.get_upload(upload["id"]), 404, "not-found")


def test_an_image_over_the_pixel_limit_is_refused_at_complete(direct: Direct) -> None:
    data = solid_image(3000, 2500, COLOUR).jpegsave_buffer()  # 7.5 MP, over the service's 6 MP
    upload = direct.create_ok(data, "big.jpg", method="POST")
    send(upload, data, "big.jpg")
    before = direct.svc.job_ids_in_redis()
    assert_problem(direct.complete(upload), 422, "too-many-pixels")
    assert object_key(upload) not in direct.stored()
    assert direct.svc.job_ids_in_redis() == before, "no job for a refused upload"


@pytest.mark.parametrize(
    ("size", "status", "slug"), [(0, 422, "invalid-upload"), (MAX_UPLOAD_BYTES + 1, 413, "too-large")], ids=str
)
def test_an_object_of_a_wrong_size_is_refused_at_complete(
    direct: Direct, coloured_jpeg: bytes, size: int, status: int, slug: str
) -> None:
    upload = direct.create_ok(coloured_jpeg, "sized.jpg", method="POST")
    # The policy allows 1..size bytes, so such an object can only come from elsewhere: put with the bucket's keys.
    direct.s3.client().put_object(Bucket=BUCKET, Key=object_key(upload), Body=coloured_jpeg[:size].ljust(size, b"\0"))
    assert_problem(direct.complete(upload), status, slug)
    assert object_key(upload) not in direct.stored()


def with_late_bad_chunk(png: bytes) -> bytes:
    """`png` with a text chunk whose CRC is wrong put just before IEND: past the first 64 KiB of a large file."""
    bad = struct.pack(">I", 12) + b"tEXtComment\0late" + struct.pack(">I", zlib.crc32(b"tEXtComment\0late") ^ 1)
    return png[:-12] + bad + png[-12:]


def test_damage_past_the_checked_head_fails_the_job(direct: Direct) -> None:
    # A checksum only a full read sees: a streamed upload of it is refused at once (test_corrupt_inputs), the API's
    # look at a direct upload's first 64 KiB cannot see it, the worker's full check of its copy does.
    data = with_late_bad_chunk(noise_image(300, 300).pngsave_buffer(compression=1))
    assert len(data) > 128 * 1024
    upload = direct.create_ok(data, "late.png", method="PUT")
    send(upload, data)
    job = direct.wait(direct.complete_ok(upload)["id"])
    assert job["status"] == "failed" and job["thumbnails"] == [], job
    assert job["error"]["type"] == PROBLEM_BASE + "corrupt-image", job


# -- the upload's life ------------------------------------------------------------------------------------------------


def test_complete_before_the_bytes_then_after_then_again(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "later.jpg", method="PUT", options={"sizes": "64"})
    assert_problem(direct.complete(upload), 409, "upload-not-received")
    assert direct.get_upload(upload["id"]).json()["status"] == "pending"  # still open
    send(upload, coloured_jpeg)
    first = direct.complete_ok(upload)
    again = direct.complete_ok(upload, json={})  # idempotent: the same job, not a second one
    assert again["id"] == first["id"] == upload["id"]
    assert_coloured_thumbnails(direct, direct.wait(first["id"]), 64)
    assert direct.complete_ok(upload)["status"] == "done"


def test_another_keys_upload_is_not_found(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "mine.jpg", who="alice", method="PUT")
    send(upload, coloured_jpeg)
    assert_problem(direct.get_upload(upload["id"], who="bob"), 404, "not-found")
    assert_problem(direct.complete(upload, who="bob"), 404, "not-found")
    r = direct.svc.client.delete(f"/v1/uploads/{upload['id']}", headers=direct.headers("bob"))
    assert_problem(r, 404, "not-found")
    assert object_key(upload) in direct.stored()
    assert_problem(direct.complete({"complete_url": "/v1/uploads/nosuchupload/complete"}), 404, "not-found")


def test_deleting_an_upload_removes_its_object_and_its_parts(direct: Direct, coloured_jpeg: bytes) -> None:
    single = direct.create_ok(coloured_jpeg, "gone.jpg", method="PUT")
    send(single, coloured_jpeg)
    multi_size = 12 * MIB
    multi = direct.create_ok(b"\0" * multi_size, "gone.tif", method="PUT", parts=2)
    first = multi["parts"][0]
    assert httpx.put(first["url"], content=b"\0" * first["size"], timeout=60).status_code == 200
    assert direct.s3.open_multipart_uploads(direct.prefix), "the part should have begun a multipart upload"
    for upload in (single, multi):
        r = direct.svc.client.delete(f"/v1/uploads/{upload['id']}", headers=direct.headers())
        assert r.status_code == 204, r.text
        assert_problem(direct.get_upload(upload["id"]), 404, "not-found")
        assert_problem(
            direct.svc.client.delete(f"/v1/uploads/{upload['id']}", headers=direct.headers()), 404, "not-found"
        )
    assert object_key(single) not in direct.stored()
    assert object_key(multi) not in direct.s3.open_multipart_uploads(direct.prefix), "the multipart upload is aborted"


def on_redis(d: Direct, work: Callable[[redis.asyncio.Redis], Awaitable[object]]) -> None:
    """`work(client)` in an event loop of its own, with a client of the service's Redis (closed after)."""

    async def go():
        client = redis.asyncio.Redis.from_url(d.svc.redis_url, decode_responses=True)
        try:
            await work(client)
        finally:
            await client.aclose()

    asyncio.run(go())


def sweep(d: Direct, tmp_path: Path, now: float) -> None:
    """One retention sweep at `now`, run here against the service's Redis and bucket, as a worker runs it."""

    async def work(client: redis.asyncio.Redis) -> None:
        storage = S3Storage(Settings(**d.s3.env(d.prefix), data_dir=tmp_path / "data"))
        try:
            await Retention(client, storage, Keys(d.svc.key_prefix), 3600, 30, owner="test").sweep(now=now)
        finally:
            await storage.aclose()

    on_redis(d, work)


def test_complete_after_expiry_is_gone(direct: Direct, coloured_jpeg: bytes) -> None:
    upload = direct.create_ok(coloured_jpeg, "late.jpg", method="PUT")
    send(upload, coloured_jpeg)

    async def expire(client: redis.asyncio.Redis) -> None:
        # The record's expiry moved back: the shortest URL life (60 s) is too long for a test to wait out.
        store = UploadStore(client, Keys(direct.svc.key_prefix))
        await store.add(dataclasses.replace(await store.get(upload["id"]), expires_at=time.time() - 1))

    on_redis(direct, expire)
    assert_problem(direct.complete(upload), 410, "upload-expired")
    assert object_key(upload) not in direct.stored(), "an expired upload's object is deleted"


def test_an_abandoned_upload_is_swept_after_it_expires(direct: Direct, coloured_jpeg: bytes, tmp_path: Path) -> None:
    upload = direct.create_ok(coloured_jpeg, "abandoned.jpg", method="PUT")
    send(upload, coloured_jpeg)
    multi = direct.create_ok(b"\0" * 12 * MIB, "abandoned.tif", method="PUT", parts=2)
    first = multi["parts"][0]
    assert httpx.put(first["url"], content=b"\0" * first["size"], timeout=60).status_code == 200
    expires = max(datetime.fromisoformat(u["expires_at"]).timestamp() for u in (upload, multi))

    sweep(direct, tmp_path, now=time.time())  # not expired yet: kept
    assert object_key(upload) in direct.stored() and direct.get_upload(upload["id"]).status_code == 200
    sweep(direct, tmp_path, now=expires + 61)  # past expires_at + 60 s
    assert object_key(upload) not in direct.stored(), "the abandoned object must be deleted"
    assert object_key(multi) not in direct.s3.open_multipart_uploads(direct.prefix), "its multipart upload aborted"
    for u in (upload, multi):
        assert_problem(direct.get_upload(u["id"]), 404, "not-found")


# -- bad requests -----------------------------------------------------------------------------------------------------

BAD_UPLOADS = [
    ({"filename": "a.jpg", "size": 0}, 422, None, "size"),
    ({"filename": "a.jpg", "size": MAX_UPLOAD_BYTES + 1}, 413, "too-large", None),
    ({"filename": "a.jpg", "size": 8 * MIB, "parts": 2}, 422, None, "parts"),  # 4 MiB parts: under S3's 5 MiB
    ({"filename": "a.jpg", "size": 1000, "parts": 0}, 422, None, "parts"),
    ({"filename": "a.jpg", "size": 1000, "method": "PATCH"}, 422, None, "method"),
    ({"filename": "a.jpg", "size": 1000, "options": {"qualty": "80"}}, 422, "invalid-options", "qualty"),
    ({"filename": "a.jpg", "size": 1000, "options": {"sizes": "big"}}, 422, "invalid-options", "sizes"),
    ({"size": 1000}, 422, None, "filename"),
    ({"filename": "", "size": 1000}, 422, None, "filename"),
]


@pytest.mark.parametrize(("body", "status", "slug", "field"), BAD_UPLOADS)
def test_bad_upload_requests(direct: Direct, body: dict, status: int, slug: str | None, field: str | None) -> None:
    before = direct.stored()
    assert_names_field(direct.create(**body), status, field, slug)
    assert direct.stored() == before


def test_multipart_complete_needs_its_parts(direct: Direct) -> None:
    data = b"\0" * 12 * MIB
    upload = direct.create_ok(data, "parts.tif", method="PUT", parts=2)
    parts = send(upload, data)
    for body in (None, {"parts": parts[:1]}, {"parts": [dict(p, etag='"0000"') for p in parts]}):
        assert_names_field(direct.complete(upload, json=body), 422, "parts")
    assert direct.get_upload(upload["id"]).json()["status"] == "pending"


# -- the worker and a changed original; local storage ----------------------------------------------------------------


def test_the_worker_refuses_an_original_changed_after_complete(
    localstack: LocalStackS3, redis_server: str, tmp_path: Path, coloured_jpeg: bytes
) -> None:
    with direct_service(tmp_path, redis_server, localstack, with_worker=False) as d:  # no worker takes it yet
        upload = d.create_ok(coloured_jpeg, "first.jpg", method="PUT")
        send(upload, coloured_jpeg)
        job = d.complete_ok(upload)
        # Re-uploaded to the still-valid URL before a worker took the job: same size, other bytes.
        other = coloured_jpeg[:-202] + bytes(200) + coloured_jpeg[-2:]
        assert put_single(upload, other).status_code == 200
        start_worker(d.svc, "worker")
        done = d.wait(job["id"])
        assert done["status"] == "failed" and done["thumbnails"] == [], done
        assert done["error"]["type"] == PROBLEM_BASE + "original-changed", done


def test_urls_are_made_for_the_public_endpoint(
    localstack: LocalStackS3, redis_server: str, tmp_path: Path, coloured_jpeg: bytes
) -> None:
    # The same server under another name, as a client outside the cluster would reach the bucket.
    public = localstack.url.replace("127.0.0.1", "localhost")
    with direct_service(tmp_path, redis_server, localstack, s3_public_endpoint_url=public, with_worker=False) as d:
        for method in ("POST", "PUT"):
            upload = d.create_ok(coloured_jpeg, "public.jpg", method=method)
            assert upload["url"].startswith(public + "/"), upload
            send(upload, coloured_jpeg)  # signed for that host: the bucket takes it
            assert d.complete_ok(upload)["status"] == "queued"


def test_local_storage_has_no_direct_uploads(redis_server: str, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.json"
    admin = bearer(create_key(keys_file, "admin", "admin", "submit", "read"))
    svc = start_service(tmp_path, redis_server, extra_env={"api_keys_file": keys_file}, with_worker=False)
    try:
        r = svc.client.post("/v1/uploads", json={"filename": "a.jpg", "size": 1000}, headers=admin)
        assert_problem(r, 501, "direct-uploads-unavailable", "/v1/jobs")
        r = svc.client.post("/v1/jobs", json={"source_key": "photos/a.jpg"}, headers=admin)
        assert_problem(r, 501, "direct-uploads-unavailable")
        r = svc.client.post("/v1/jobs", params={"source_key": "photos/a.jpg"}, headers=admin)
        assert_problem(r, 501, "direct-uploads-unavailable")
        assert (
            svc.client.post("/v1/jobs", files={"file": ("a.jpg", make_jpeg(64, 48))}, headers=admin).status_code == 202
        )
    finally:
        stop_service(svc)
