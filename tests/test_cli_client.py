"""The client side of direct uploads and ingest (issue 15), against the running service: `ThumbifyClient` and
`thumbify submit` (streamed; direct to the bucket with single and multipart PUTs; back to streamed on a server
without a bucket, 501) and `thumbify ingest s3://...` (queued, then skipped; refusals), on local storage and on two
real S3 servers: `rclone serve s3` (an open API) and LocalStack's S3, which checks the presigned URLs' signatures and
signed lengths (the API with keys, as support/direct.py starts it; skipped where LocalStack is not installed)."""

from __future__ import annotations

import ast
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyvips
from support.cli import cli
from support.images import make_jpeg
from support.keys import bearer
from support.s3server import RcloneS3
from support.service import Service, start_service, stop_service

from thumbify_cli import client as client_module
from thumbify_cli import submit as submit_command
from thumbify_cli.client import PART_BYTES, READ_CHUNK, ThumbifyClient, ThumbifyError, file_slice, part_count

pytestmark = pytest.mark.service  # runs the CLI (a process)

MiB = 1024 * 1024


@dataclass
class S3Service:
    """The service storing in a bucket of a real S3 server, under `prefix`, reached with `key` (None: an open API)."""

    svc: Service
    s3: RcloneS3  # or support.localstack's LocalStackS3
    prefix: str
    key: str | None
    photos_key: str | None = None  # a key that may ingest only keys under photos/ (None: an open API)

    def env(self, key: str | None = None) -> dict:
        """What the CLI needs to reach both: THUMBIFY_URL, THUMBIFY_API_KEY (`key`, else the admin's) and the S3
        settings."""
        key = key or self.key
        return {**self.s3.env(self.prefix), "url": self.svc.base_url} | ({"api_key": key} if key else {})

    def client(self, **kwargs) -> ThumbifyClient:
        return ThumbifyClient(self.svc.base_url, self.key, **kwargs)

    @property
    def bucket_name(self) -> str:
        return self.s3.env()["s3_bucket"]

    def _s3(self):
        """A boto3 client of the S3 server."""
        return self.s3.client()

    def put(self, key: str, data: bytes) -> None:
        """An object at `key` (a bucket key)."""
        self._s3().put_object(Bucket=self.bucket_name, Key=key, Body=data)

    def read(self, key: str) -> bytes:
        return self._s3().get_object(Bucket=self.bucket_name, Key=key)["Body"].read()

    def newest_job(self) -> dict:
        headers = bearer(self.key) if self.key else {}
        return self.svc.client.get("/v1/jobs", params={"limit": 1}, headers=headers).json()["items"][0]


@pytest.fixture(scope="module", params=["rclone", "localstack"])
def on_s3(
    request: pytest.FixtureRequest, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Service]:
    base = tmp_path_factory.mktemp("s3")
    if request.param == "localstack":
        direct = pytest.importorskip("support.direct", reason="tests/support/direct.py (LocalStack) is not here yet")
        server = request.getfixturevalue("localstack")  # skips, saying why, where LocalStack is not installed
        with direct.direct_service(base, redis_server, server) as running:
            yield S3Service(running.svc, server, running.prefix, running.keys["admin"], running.keys["photos"])
        return
    server = RcloneS3(base / "root", base / "rclone.log").start()
    prefix = f"svc{uuid.uuid4().hex[:6]}/"
    try:
        svc = start_service(
            base / "service", redis_server, extra_env={**server.env(prefix), "max_upload_bytes": 32 * MiB}
        )
        try:
            yield S3Service(svc, server, prefix, None)
        finally:
            stop_service(svc)
    finally:
        server.stop()


def jpeg_file(path: Path, width: int = 200, height: int = 150) -> Path:
    path.write_bytes(make_jpeg(width, height))
    assert path.stat().st_size > 1000, "the tests force direct uploads of files over 1000 bytes"
    return path


def tiff_file(path: Path, mib: int) -> Path:
    """An uncompressed RGB TIFF of about `mib` MiB: big enough for several parts, quick to make and to decode."""
    side = int((mib * MiB / 3) ** 0.5)
    pyvips.Image.black(side, side, bands=3).tiffsave(str(path), compression="none")
    return path


def test_the_client_needs_no_server_package() -> None:
    """httpx and the standard library only: cheap to import, and usable without Thumbify's server installed."""
    tree = ast.parse(Path(client_module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    roots = {name.split(".")[0] for name in imported}
    assert roots - sys.stdlib_module_names == {"httpx"}, roots


# -- bounded reads --------------------------------------------------------------------------------------------------


def test_a_part_is_read_a_chunk_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "data"
    path.write_bytes(bytes(range(256)) * (3 * READ_CHUNK // 256 + 7))
    chunks = list(file_slice(path, 100, 2 * READ_CHUNK + 5))
    assert max(map(len, chunks)) <= READ_CHUNK
    assert b"".join(chunks) == path.read_bytes()[100 : 100 + 2 * READ_CHUNK + 5]


def test_parts_are_about_64_mib() -> None:
    assert PART_BYTES == 64 * MiB
    assert submit_command.DIRECT_OVER == client_module.DIRECT_THRESHOLD == 32 * MiB, "submit's default is the client's"
    assert [part_count(n) for n in (1, 64 * MiB, 64 * MiB + 1, 200 * MiB)] == [1, 1, 2, 4]


# -- local storage: streamed, and direct falls back ------------------------------------------------------------------


def test_small_files_are_streamed_as_before(service: Service, tmp_path: Path) -> None:
    with ThumbifyClient(service.base_url) as client:
        job = client.submit(jpeg_file(tmp_path / "small.jpg"), {"sizes": "32"}, wait_s=60)
        assert client.direct_available, "a small file never asks for a direct upload"
    assert job["status"] == "done" and [t["name"] for t in job["thumbnails"]] == ["thumb_small_32x24.jpg"], job
    assert job["source"].get("origin", "upload") == "upload", job


def test_without_a_bucket_direct_falls_back_to_streamed(service: Service, tmp_path: Path) -> None:
    with ThumbifyClient(service.base_url, direct_threshold=1000) as client:
        first = client.submit(jpeg_file(tmp_path / "big.jpg"), {"sizes": "32"}, wait_s=60)
        assert not client.direct_available, "the 501 is remembered for the client's lifetime"
        second = client.submit(jpeg_file(tmp_path / "big2.jpg"), {"sizes": "32"})
    assert first["status"] == "done", first
    assert second["status"] in ("queued", "processing", "done"), second


def test_submit_cli_falls_back_without_a_bucket(service: Service, tmp_path: Path) -> None:
    path = jpeg_file(tmp_path / "large.jpg")
    done = cli("submit", str(path), "--direct-over", "1000", "--wait", "--size", "32", "--url", service.base_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "thumb_large_32x24.jpg" in done.stdout and "1 ok, 0 failed or refused" in done.stderr


def test_refusals_raise_with_the_problem(service: Service, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    with ThumbifyClient(service.base_url) as client, pytest.raises(ThumbifyError) as refused:
        client.submit(notes, {})
    assert refused.value.status == 415 and refused.value.slug == "unsupported-media", refused.value.problem
    assert refused.value.detail


def test_ingest_needs_a_bucket(service: Service) -> None:
    with ThumbifyClient(service.base_url) as client, pytest.raises(ThumbifyError) as refused:
        client.ingest("photos/a.jpg", {})
    assert refused.value.status == 501 and refused.value.slug == "direct-uploads-unavailable", refused.value.problem


# -- S3: direct to the bucket ---------------------------------------------------------------------------------------


def test_direct_single_put(on_s3: S3Service, tmp_path: Path) -> None:
    with on_s3.client(direct_threshold=1000) as client:
        job = client.submit(jpeg_file(tmp_path / "one.jpg"), {"sizes": "32"}, wait_s=60)
    assert job["status"] == "done", job
    assert job["source"]["origin"] == "direct", job
    assert [t["name"] for t in job["thumbnails"]] == ["thumb_one_32x24.jpg"], job
    assert f"{on_s3.prefix}originals/{job['id']}" in on_s3.s3.objects(on_s3.prefix)


def test_direct_multipart(on_s3: S3Service, tmp_path: Path) -> None:
    path = tiff_file(tmp_path / "wide.tif", 16)  # 3 parts of about 5.3 MiB (S3's least is 5 MiB)
    with on_s3.client(direct_threshold=1000, part_bytes=6 * MiB) as client:
        job = client.submit(path, {"sizes": "64", "format": "png"}, wait_s=120)
    assert job["status"] == "done", job
    assert job["source"]["origin"] == "direct" and job["source"]["bytes"] == path.stat().st_size, job
    assert on_s3.read(f"{on_s3.prefix}originals/{job['id']}") == path.read_bytes()


def test_direct_refusal_is_the_streamed_one(on_s3: S3Service, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"not an image " * 200)
    with on_s3.client(direct_threshold=1000) as client, pytest.raises(ThumbifyError) as refused:
        client.submit(notes, {})
    assert refused.value.status == 415 and refused.value.slug == "unsupported-media", refused.value.problem


def test_submit_cli_goes_direct(on_s3: S3Service, tmp_path: Path) -> None:
    path = jpeg_file(tmp_path / "cli.jpg")
    done = cli("submit", str(path), "--direct-over", "1000", "--wait", "--size", "32", **on_s3.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "thumb_cli_32x24.jpg" in done.stdout
    assert on_s3.newest_job()["source"]["origin"] == "direct"


# -- S3: ingest -----------------------------------------------------------------------------------------------------


def test_ingest_queues_each_object_then_skips_them(on_s3: S3Service) -> None:
    for i in range(3):
        on_s3.put(f"{on_s3.prefix}incoming/p{i}.jpg", make_jpeg(48, 40))
    on_s3.put(f"{on_s3.prefix}incoming/sub/", b"")  # a folder marker, not a file
    source = f"s3://{on_s3.bucket_name}/{on_s3.prefix}incoming/"
    first = cli("ingest", source, "--wait", "--size", "32", **on_s3.env())
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 queued, 0 skipped (already ingested), 0 refused; 3 done, 0 failed" in first.stdout, first.stdout
    job = on_s3.newest_job()
    assert job["source"]["origin"] == "ingest" and job["source"]["key"].startswith("incoming/p"), job
    again = cli("ingest", source, "--size", "32", **on_s3.env())
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 queued, 3 skipped (already ingested), 0 refused" in again.stdout, again.stdout


def test_ingest_lists_each_refusal(on_s3: S3Service) -> None:
    on_s3.put(f"{on_s3.prefix}mixed/good.jpg", make_jpeg(48, 40))
    on_s3.put(f"{on_s3.prefix}mixed/notes.jpg", b"not an image")
    done = cli("ingest", f"s3://{on_s3.bucket_name}/{on_s3.prefix}mixed/", **on_s3.env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 queued, 0 skipped (already ingested), 1 refused" in done.stdout, done.stdout
    assert f"refused {on_s3.prefix}mixed/notes.jpg: " in done.stdout, done.stdout


def test_ingest_dry_run_sends_nothing(on_s3: S3Service) -> None:
    on_s3.put(f"{on_s3.prefix}dry/a.jpg", make_jpeg(48, 40))
    on_s3.put(f"{on_s3.prefix}elsewhere.jpg", b"x")  # under the service's prefix, outside the URL's
    before = on_s3.svc.job_ids_in_redis()
    done = cli("ingest", f"s3://{on_s3.bucket_name}/{on_s3.prefix}dry/", "--dry-run", **on_s3.env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "dry/a.jpg", done.stdout
    assert "would send 1 from" in done.stdout and "sent nothing" in done.stdout
    assert on_s3.svc.job_ids_in_redis() == before


def test_ingest_refuses_objects_outside_the_services_prefix(on_s3: S3Service) -> None:
    around = on_s3.prefix.rstrip("/")  # "svc1234" holds "svc1234/..." (the service's) and "svc1234-other/..."
    on_s3.put(f"{around}-other/a.jpg", make_jpeg(48, 40))
    on_s3.put(f"{on_s3.prefix}inside/a.jpg", make_jpeg(48, 40))
    on_s3.put(f"{on_s3.prefix}thumbnails/0123/thumb_a_32x24.jpg", make_jpeg(32, 24))  # as a job's would be
    done = cli("ingest", f"s3://{on_s3.bucket_name}/{around}", "--dry-run", **on_s3.env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"refused {around}-other/a.jpg: outside THUMBIFY_S3_PREFIX" in done.stdout, done.stdout
    assert "inside/a.jpg" in done.stdout.splitlines()
    assert "Thumbify's own objects" in done.stdout, "originals/ and thumbnails/ are left out, not refused"
    disjoint = cli("ingest", f"s3://{on_s3.bucket_name}/{around}-other/", **on_s3.env())
    assert disjoint.returncode == 2 and "outside THUMBIFY_S3_PREFIX" in disjoint.stderr, disjoint.stderr


def test_ingest_names_what_a_key_may_not_read(on_s3: S3Service) -> None:
    if on_s3.photos_key is None:
        pytest.skip("an open API has no keys to refuse")
    on_s3.put(f"{on_s3.prefix}photos/ok.jpg", make_jpeg(48, 40))
    on_s3.put(f"{on_s3.prefix}private/no.jpg", make_jpeg(48, 40))
    source = f"s3://{on_s3.bucket_name}/{on_s3.prefix}p"  # photos/ and private/
    done = cli("ingest", source, "--size", "32", **on_s3.env(on_s3.photos_key))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"refused {on_s3.prefix}private/no.jpg: " in done.stdout, done.stdout
    assert "1 queued" in done.stdout and f"refused {on_s3.prefix}photos/" not in done.stdout, done.stdout


def test_ingest_stops_at_a_server_without_a_bucket(on_s3: S3Service, service: Service) -> None:
    on_s3.put(f"{on_s3.prefix}nowhere/a.jpg", make_jpeg(48, 40))
    source = f"s3://{on_s3.bucket_name}/{on_s3.prefix}nowhere/"
    done = cli("ingest", source, **on_s3.env() | {"url": service.base_url})  # local storage there
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{service.base_url} refused: " in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("source", "says"),
    [("s3://another-bucket/photos/", "not in the service's bucket"), ("/data/photos", "not an s3:// URL")],
    ids=["another-bucket", "not-s3"],
)
def test_ingest_refuses_what_it_cannot_read(on_s3: S3Service, source: str, says: str) -> None:
    done = cli("ingest", source, **on_s3.env())
    assert done.returncode == 2 and says in done.stderr, done.stderr
