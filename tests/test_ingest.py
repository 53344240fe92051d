"""Jobs from objects already in the bucket (issue 15): POST /v1/jobs with a `source_key` instead of a file.

The objects are put with boto3 into LocalStack's S3 (support/localstack.py); the service is real (uvicorn, a worker,
redis-server) with API keys: admin may ingest any key, `photos` only keys under photos/ (`--source-prefix`). The
API never reads the object's bytes but its first 64 KiB, and never copies, moves or deletes it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import pyvips
from support.direct import MAX_UPLOAD_BYTES, Direct, assert_colour, direct_service, fetch_thumbnail
from support.images import png_declaring, solid_image
from support.localstack import BUCKET, LocalStackS3
from support.problems import assert_names_field, assert_problem
from support.processes import reset_peak_rss, rss_bytes

COLOUR = (200, 90, 30)
MB = 1_000_000


def put(d: Direct, source_key: str, data: bytes) -> None:
    """An object in the bucket, put there with the bucket's own keys (as another system would)."""
    d.s3.client().put_object(Bucket=BUCKET, Key=d.prefix + source_key, Body=data)


def ingest(d: Direct, source_key: str, who: str = "admin", **options: object) -> httpx.Response:
    return d.svc.client.post("/v1/jobs", json={"source_key": source_key, "options": options}, headers=d.headers(who))


def photo(colour: tuple[int, int, int] = COLOUR) -> bytes:
    return solid_image(640, 480, colour).jpegsave_buffer(Q=95)


def unique(name: str) -> str:
    return f"photos/{uuid.uuid4().hex[:8]}/{name}"


def test_an_object_in_the_bucket_becomes_thumbnails(direct: Direct) -> None:
    key = unique("a.jpg")
    put(direct, key, photo())
    r = ingest(direct, key, sizes="160")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["source"]["origin"] == "ingest" and job["source"]["key"] == key, job
    job = direct.wait(job["id"], who="admin")
    assert job["status"] == "done", job
    [thumb] = job["thumbnails"]
    image = fetch_thumbnail(direct.svc, thumb, direct.headers("admin"))
    assert (image.width, image.height) == (160, 120)
    assert_colour(image, COLOUR)
    assert direct.prefix + key in direct.stored(), "the source object is never moved or deleted"
    assert not direct.stored() & {f"{direct.prefix}originals/{job['id']}"}, "nor copied to Thumbify's originals"


def test_ingest_by_query_parameters(direct: Direct) -> None:
    key = unique("q.jpg")
    put(direct, key, photo())
    r = direct.svc.client.post(
        "/v1/jobs", params={"source_key": key, "sizes": "64", "format": "webp"}, headers=direct.headers("admin")
    )
    assert r.status_code == 202, r.text
    job = direct.wait(r.json()["id"], who="admin")
    assert job["status"] == "done" and job["thumbnails"][0]["format"] == "webp", job
    image = fetch_thumbnail(direct.svc, job["thumbnails"][0], direct.headers("admin"))
    assert (image.width, image.height) == (64, 48)


def test_the_same_object_again_is_the_same_job(direct: Direct) -> None:
    key = unique("same.jpg")
    put(direct, key, photo())
    first = ingest(direct, key, sizes="96")
    assert first.status_code == 202, first.text
    again = ingest(direct, key, sizes="96")
    assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true", again.text
    assert again.json()["id"] == first.json()["id"]
    # Other options, another API key, or other bytes under the same key: a new job each.
    other_options = ingest(direct, key, sizes="97")
    assert other_options.status_code == 202 and other_options.json()["id"] != first.json()["id"], other_options.text
    other_key = ingest(direct, key, who="photos", sizes="96")
    assert other_key.status_code == 202 and other_key.json()["id"] != first.json()["id"], other_key.text
    put(direct, key, photo((10, 200, 10)))
    changed = ingest(direct, key, sizes="96")
    assert changed.status_code == 202 and changed.json()["id"] != first.json()["id"], changed.text
    # ...and once the job is deleted, the same request makes a new one.
    assert (
        direct.svc.client.delete(f"/v1/jobs/{changed.json()['id']}", headers=direct.headers("admin")).status_code == 204
    )
    renewed = ingest(direct, key, sizes="96")
    assert renewed.status_code == 202 and renewed.json()["id"] != changed.json()["id"], renewed.text


def test_deleting_an_ingested_job_keeps_its_source(direct: Direct) -> None:
    key = unique("keep.jpg")
    put(direct, key, photo())
    job = direct.wait(ingest(direct, key).json()["id"], who="admin")
    assert job["status"] == "done", job
    thumbnails = f"{direct.prefix}thumbnails/{job['id']}/"
    assert direct.s3.objects(thumbnails), "the thumbnails should be in the bucket"
    assert direct.svc.client.delete(f"/v1/jobs/{job['id']}", headers=direct.headers("admin")).status_code == 204
    assert not direct.s3.objects(thumbnails), "the job's thumbnails are deleted with it"
    assert direct.prefix + key in direct.stored(), "the source object is not Thumbify's to delete"


def test_source_prefixes_decide_who_may_ingest(direct: Direct) -> None:
    inside, outside = unique("mine.jpg"), f"other/{uuid.uuid4().hex[:8]}/theirs.jpg"
    for key in (inside, outside):
        put(direct, key, photo())
    r = ingest(direct, inside, who="photos")
    assert r.status_code == 202, r.text
    assert_problem(ingest(direct, outside, who="photos"), 403, "forbidden")
    assert_problem(ingest(direct, inside, who="alice"), 403, "forbidden")  # submit scope alone: no ingest
    assert ingest(direct, outside).status_code == 202  # admin: any key


@pytest.mark.parametrize(
    "source_key", ["originals/0123456789abcdef", "thumbnails/x/thumb.jpg", "photos/../originals/x", "../escape.jpg"]
)
def test_thumbifys_own_areas_and_dot_dot_are_refused(direct: Direct, source_key: str) -> None:
    assert_names_field(ingest(direct, source_key), 422, "source_key")


def test_a_missing_object_is_source_missing(direct: Direct) -> None:
    assert_names_field(ingest(direct, unique("nowhere.jpg")), 422, "source_key", "source-missing")


REFUSED_SOURCES = {
    "pdf": (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n%%EOF\n", 415, "unsupported-media"),
    "empty": (b"", 422, "invalid-upload"),
    "too-large": (b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "too-large"),
    "too-many-pixels": (png_declaring(4000, 2000), 422, "too-many-pixels"),  # 8 MP, over the service's 6 MP
}


@pytest.mark.parametrize("kind", list(REFUSED_SOURCES))
def test_a_refused_source_is_kept(direct: Direct, kind: str) -> None:
    """The checks of a completed upload, but the object is not Thumbify's to delete."""
    data, status, slug = REFUSED_SOURCES[kind]
    key = unique("refused.jpg")
    put(direct, key, data)
    before = direct.svc.job_ids_in_redis()
    assert_problem(ingest(direct, key), status, slug)
    assert direct.prefix + key in direct.stored(), "a refused source is still not Thumbify's to delete"
    assert direct.svc.job_ids_in_redis() == before


@pytest.fixture
def gigabyte_tiff(tmp_path: Path) -> Iterator[Path]:
    """An uncompressed 18000x18000 RGB TIFF (972 MB), written by libvips streaming (a few MB of memory)."""
    path = tmp_path / "huge.tif"
    pyvips.Image.black(18000, 18000, bands=3).copy(interpretation="srgb").tiffsave(str(path), compression="none")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_ingesting_a_gigabyte_object_does_not_grow_the_api(
    localstack: LocalStackS3, redis_server: str, tmp_path: Path, gigabyte_tiff: Path
) -> None:
    assert gigabyte_tiff.stat().st_size > 950 * MB
    # The API alone (no worker renders it): limits raised so that the object is accepted, not refused.
    settings = {"max_upload_bytes": 2 * 1024**3, "max_pixels": 400_000_000, "with_worker": False}
    key = unique("huge.tif")
    with direct_service(tmp_path / "svc", redis_server, localstack, **settings) as d:
        d.s3.client().upload_file(str(gigabyte_tiff), BUCKET, d.prefix + key)  # multipart, streamed from the file
        try:
            put(d, "photos/warm.jpg", photo())
            assert ingest(d, "photos/warm.jpg").status_code == 202  # the code paths warm before measuring
            api = d.svc.procs["api"].pid
            reset_peak_rss(api)
            before = rss_bytes(api)
            r = ingest(d, key, sizes="256")
            assert r.status_code == 202, r.text
            # The peak too: bytes read and freed again would leave the resident size where it was.
            for field in ("VmRSS", "VmHWM"):
                growth = rss_bytes(api, field) - before
                assert growth < 20 * MB, f"the API's {field} grew by {growth / MB:.1f} MB ingesting a 972 MB object"
        finally:
            d.s3.client().delete_object(Bucket=BUCKET, Key=d.prefix + key)
