"""Storage: the same contract for the local folder and S3 (a real `rclone serve s3`), S3's failures, and the whole
service on S3 — uploads, thumbnails streamed or redirected to presigned URLs, deletion — over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.faults import start_worker, wait_retrying
from support.images import make_jpeg
from support.s3server import RcloneS3
from support.service import start_service, stop_service

from thumbify.errors import StorageFailed
from thumbify.settings import Settings
from thumbify.storage import LocalStorage, open_storage
from thumbify.storage.s3 import S3Storage


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    base = tmp_path_factory.mktemp("s3")
    server = RcloneS3(base / "root", base / "rclone.log").start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(s3: RcloneS3, tmp: Path, **overrides) -> Settings:
    values = {**s3.env(prefix=f"p{uuid.uuid4().hex[:8]}/"), "data_dir": tmp / "data", **overrides}
    return Settings(**values)


def run_on(storage, work):
    """`work(storage)` in an event loop of its own, the storage's connections closed after (an S3 client belongs to
    the loop it was made in)."""

    async def go():
        try:
            return await work(storage)
        finally:
            await storage.aclose()

    return asyncio.run(go())


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.service)])
def make_storage(request: pytest.FixtureRequest, tmp_path: Path):
    """A factory of fresh storages of one kind (one per event loop: an S3 client belongs to its loop)."""
    if request.param == "local":
        settings = Settings(data_dir=tmp_path / "data")
    else:
        settings = settings_for(request.getfixturevalue("s3"), tmp_path, s3_part_mib=5)
    return lambda: open_storage(settings)


# -- one contract, both kinds -----------------------------------------------------------------------------------------


def test_bytes_round_trip(make_storage) -> None:
    data = os.urandom(70_000)

    async def work(st):
        await st.put_bytes("thumbnails/job1/thumb_a_256x192.jpg", data)
        stored = await st.stat("thumbnails/job1/thumb_a_256x192.jpg")
        return stored, await st.read("thumbnails/job1/thumb_a_256x192.jpg")

    stored, back = run_on(make_storage(), work)
    assert stored is not None and stored.size == len(data) and stored.key == "thumbnails/job1/thumb_a_256x192.jpg"
    assert back == data


def test_put_file_moves_the_spool_file_and_local_copy_gives_the_bytes(make_storage, tmp_path: Path) -> None:
    # 12 MiB: over the 5 MiB part size, so S3 takes it as a three-part multipart upload.
    data = os.urandom(12 * 1024 * 1024 + 123)
    spool = tmp_path / "upload.part"
    spool.write_bytes(data)

    async def work(st):
        await st.put_file("originals/job2", spool)
        assert not spool.exists(), "the spool file must be gone once stored"
        async with st.local_copy("originals/job2") as path:
            copied = path
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return copied, digest

    storage = make_storage()
    copied, digest = run_on(storage, work)
    assert digest == hashlib.sha256(data).hexdigest()
    if isinstance(storage, S3Storage):
        assert not copied.exists(), "the worker's temporary copy must be removed after the render"
        assert not list(storage.spool.glob(".s3-*")), "no temporary download left in the spool"


def test_missing_objects(make_storage) -> None:
    async def work(st):
        assert await st.stat("thumbnails/nope/x.jpg") is None
        with pytest.raises(FileNotFoundError):
            await st.read("thumbnails/nope/x.jpg")
        with pytest.raises(FileNotFoundError):
            async with st.local_copy("originals/nope"):
                pass
        assert await st.delete_prefix("thumbnails/nope") == 0

    run_on(make_storage(), work)


def test_delete_prefix_takes_the_job_and_nothing_that_merely_shares_its_prefix(make_storage) -> None:
    async def work(st):
        for name in ("a.jpg", "b.webp", "c.png"):
            await st.put_bytes(f"thumbnails/abc/{name}", b"x")
        await st.put_bytes("thumbnails/abcd/keep.jpg", b"y")
        await st.put_bytes("originals/abc", b"o")
        await st.put_bytes("originals/abcd", b"p")
        removed = await st.delete_prefix("thumbnails/abc"), await st.delete_prefix("originals/abc")
        left = [await st.stat(k) for k in ("thumbnails/abc/a.jpg", "thumbnails/abcd/keep.jpg", "originals/abcd")]
        return removed, left

    (thumbs, original), (gone, kept, other) = run_on(make_storage(), work)
    assert (thumbs, original) == (3, 1)
    assert gone is None and kept is not None and other is not None


def test_keys_cannot_leave_the_storage(make_storage) -> None:
    async def work(st):
        for key in ("../escape", "thumbnails/../../escape", "/abs"):
            with pytest.raises(ValueError):
                await st.put_bytes(key, b"x")

    run_on(make_storage(), work)


def test_ping(make_storage, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    assert run_on(make_storage(), lambda st: st.ping()) is None
    # ...and it fails where storage cannot be written: a spool folder that is a file, a bucket that does not exist.
    if "local" in request.node.callspec.id:
        storage = open_storage(Settings(data_dir=tmp_path / "blocked"))
        shutil.rmtree(storage.spool)
        storage.spool.write_text("a file where its temporary files should go")
    else:
        storage = open_storage(settings_for(request.getfixturevalue("s3"), tmp_path, s3_bucket="no-such-bucket"))
    with pytest.raises(Exception):  # noqa: B017 - each kind raises its own error; what matters is that it raises
        run_on(storage, lambda st: st.ping())


# -- S3 only -----------------------------------------------------------------------------------------------------------


def test_s3_objects_carry_content_type_and_cache_headers(s3: RcloneS3, tmp_path: Path) -> None:
    settings = settings_for(s3, tmp_path)

    async def work(st):
        await st.put_bytes("thumbnails/j/thumb_x_10x10.webp", b"RIFF....WEBP")
        url = await st.presigned_get("thumbnails/j/thumb_x_10x10.webp", 60)
        async with httpx.AsyncClient() as client:
            return await client.get(url)

    response = run_on(S3Storage(settings), work)
    assert response.status_code == 200, response.text
    assert response.content == b"RIFF....WEBP"
    assert response.headers["content-type"] == "image/webp"
    assert "immutable" in response.headers.get("cache-control", "")
    assert f"{settings.s3_prefix}thumbnails/j/thumb_x_10x10.webp" in s3.objects(settings.s3_prefix)


def test_local_storage_has_no_presigned_urls(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects", tmp_path / "spool")
    assert asyncio.run(storage.presigned_get("thumbnails/j/x.jpg", 60)) is None


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"s3_secret_access_key": "wrong-secret-key-123"}, "SignatureDoesNotMatch"),
        ({"s3_access_key_id": "nobody-we-know"}, "InvalidAccessKeyId"),
        ({"s3_bucket": "no-such-bucket"}, "NoSuchBucket"),
    ],
)
def test_s3_refusals_are_storage_failures(s3: RcloneS3, tmp_path: Path, overrides: dict, says: str) -> None:
    storage = S3Storage(settings_for(s3, tmp_path, **overrides))
    with pytest.raises(StorageFailed, match=says):
        run_on(storage, lambda st: st.put_bytes("thumbnails/j/x.jpg", b"x"))
    with pytest.raises(StorageFailed):
        run_on(storage, lambda st: st.ping())


@pytest.mark.service
def test_s3_down_is_a_storage_failure_not_a_missing_object(tmp_path: Path) -> None:
    server = RcloneS3(tmp_path / "root", tmp_path / "rclone.log").start()
    storage = S3Storage(settings_for(server, tmp_path))
    run_on(storage, lambda st: st.put_bytes("originals/j", b"x"))
    server.stop()
    for work in (lambda st: st.stat("originals/j"), lambda st: st.read("originals/j"), lambda st: st.ping()):
        with pytest.raises(StorageFailed):
            run_on(storage, work)


@pytest.mark.service
def test_a_cancelled_multipart_upload_leaves_nothing(tmp_path: Path) -> None:
    # A server held to 8 MiB/s, so the 24 MiB upload is surely in flight when it is cancelled.
    server = RcloneS3(tmp_path / "root", tmp_path / "rclone.log", "--bwlimit", "8M").start()
    settings = settings_for(server, tmp_path, s3_part_mib=5)
    big = tmp_path / "big.part"
    big.write_bytes(os.urandom(24 * 1024 * 1024))

    async def work(st):
        task = asyncio.ensure_future(st.put_file("originals/cancelled", big))
        deadline = time.monotonic() + 20
        while not await st._open_uploads(settings.s3_prefix):
            assert time.monotonic() < deadline and not task.done(), "the multipart upload never started"
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await st._open_uploads(settings.s3_prefix)

    try:
        uploads = run_on(S3Storage(settings), work)
        assert uploads == [], "the multipart upload must be aborted"
        assert server.objects(settings.s3_prefix) == set(), "no object and no part may be left"
        assert big.exists(), "the spool file stays the caller's to remove"
    finally:
        server.stop()


def test_s3_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="THUMBIFY_S3_BUCKET"):
        Settings(storage="s3")


# -- the service on S3 ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_service(s3: RcloneS3, redis_server: str, tmp_path_factory: pytest.TempPathFactory):
    prefix = f"svc{uuid.uuid4().hex[:6]}/"
    svc = start_service(tmp_path_factory.mktemp("s3svc"), redis_server, extra_env=s3.env(prefix))
    try:
        yield svc, prefix
    finally:
        stop_service(svc)


def test_a_job_on_s3_end_to_end(s3: RcloneS3, s3_service) -> None:
    svc, prefix = s3_service
    job = svc.run_job(make_jpeg(800, 600), "holiday.jpg", sizes="256,64")
    assert job["status"] == "done", job
    assert f"{prefix}originals/{job['id']}" in s3.objects(prefix)
    names = {t["name"] for t in job["thumbnails"]}
    assert {k.rsplit("/", 1)[1] for k in s3.objects(f"{prefix}thumbnails/{job['id']}/")} == names
    assert not (svc.data_dir / "objects").exists(), "nothing may be stored in the local folder"
    assert not [p for p in svc.spool_files() if not p.startswith(".ping")], "no spool or download files left"

    thumb = job["thumbnails"][0]
    r = svc.client.get(thumb["url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    key = f"{prefix}thumbnails/{job['id']}/{thumb['name']}"
    assert r.content == (s3.root / "thumbify-test" / key).read_bytes()
    assert len(r.content) == thumb["bytes"]
    again = svc.client.get(thumb["url"], headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    # Streamed from S3 too: a Last-Modified, and If-Modified-Since answered from it.
    unchanged = svc.client.get(thumb["url"], headers={"If-Modified-Since": r.headers["last-modified"]})
    assert unchanged.status_code == 304 and unchanged.headers["last-modified"] == r.headers["last-modified"]

    assert svc.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert not s3.objects(f"{prefix}originals/{job['id']}") and not s3.objects(f"{prefix}thumbnails/{job['id']}")


def test_thumbnails_redirect_to_presigned_urls(s3: RcloneS3, s3_service, tmp_path: Path, redis_server: str) -> None:
    svc, prefix = s3_service
    job = svc.run_job(make_jpeg(320, 240), "small.jpg")
    env = {**s3.env(prefix), "s3_redirect_ttl_s": 120}
    api = start_service(tmp_path, redis_server, key_prefix=svc.key_prefix, extra_env=env, with_worker=False)
    try:
        thumb = job["thumbnails"][0]
        r = api.client.get(thumb["url"])
        assert r.status_code == 307, r.text
        assert r.headers["cache-control"] == "private, max-age=60"
        direct = httpx.get(r.headers["location"])
        assert direct.status_code == 200 and direct.headers["content-type"] == "image/jpeg"
        assert direct.content == svc.client.get(thumb["url"]).content
        streamed = svc.client.get(thumb["url"])
        assert api.client.get(thumb["url"], headers={"If-None-Match": streamed.headers["etag"]}).status_code == 304
        # Two replicas, one streaming and one redirecting, date the thumbnail alike.
        since = {"If-Modified-Since": streamed.headers["last-modified"]}
        unchanged = api.client.get(thumb["url"], headers=since)
        assert unchanged.status_code == 304 and unchanged.headers["last-modified"] == since["If-Modified-Since"]
        missing = api.client.get(f"/v1/thumbnails/{job['id']}/thumb_nope_1x1.jpg")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    finally:
        stop_service(api)


def test_upload_while_s3_is_down_is_a_clean_503(redis_server: str, tmp_path: Path) -> None:
    server = RcloneS3(tmp_path / "root", tmp_path / "rclone.log").start()
    api = start_service(tmp_path / "svc", redis_server, extra_env=server.env("down/"), with_worker=False)
    try:
        server.stop()
        before = api.job_ids_in_redis()
        r = api.submit(make_jpeg(320, 240), "photo.jpg")
        assert r.status_code == 503, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith("/storage-error") and "Retry-After" in r.headers
        assert api.job_ids_in_redis() == before, "no job may be recorded for an upload that was not stored"
        assert not api.spool_files(), "the spool file must be removed"
        ready = httpx.get(f"{api.base_url}/readyz")
        assert ready.status_code == 503
    finally:
        stop_service(api)
        server.stop()


def test_worker_retries_while_s3_is_down_and_finishes_when_it_returns(redis_server: str, tmp_path: Path) -> None:
    server = RcloneS3(tmp_path / "root", tmp_path / "rclone.log").start()
    env = {**server.env("outage/"), "retry_base_s": 0.05, "retry_max_s": 0.3, "max_attempts": 50}
    svc = start_service(tmp_path / "svc", redis_server, extra_env=env, with_worker=False)
    try:
        ids = [svc.submit_ok(make_jpeg(320, 240), f"o{i}.jpg", sizes="128")["id"] for i in range(3)]
        server.stop()
        start_worker(svc, "worker")
        wait_retrying(svc, ids, 2, "storage-error", "two tries of every job while S3 is down")
        server.start()  # the same port and folder: the originals are still there
        for job_id in ids:
            job = svc.wait(job_id, timeout=30)
            assert job["status"] == "done" and job["attempts"] > 1 and job["error"] is None, job
            assert svc.client.get(job["thumbnails"][0]["url"]).status_code == 200
        assert not [p for p in svc.spool_files() if p.startswith(".s3-")], "no download left behind"
    finally:
        stop_service(svc)
        server.stop()
