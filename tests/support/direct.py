"""Direct-to-bucket uploads as a client makes them: ask the API for an upload (POST /v1/uploads), send the bytes to
the bucket itself with only what the API answered (a presigned POST form, a presigned PUT, or one presigned PUT per
part), then complete it. Plus a Thumbify on LocalStack's S3 with API keys, which these tests and the ingest tests
run against, and what they check a thumbnail with."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pyvips

from support.keys import bearer, create_key
from support.localstack import BUCKET, LocalStackS3
from support.service import Service, start_service, stop_service

MIB = 1024 * 1024
# Roomy enough for a multipart upload of a few parts of 5 MiB; the 413 tests ask for more than this.
MAX_UPLOAD_BYTES = 64 * MIB
# Low, so that a small real image is over it (test_direct_uploads); the multipart image stays under it.
MAX_PIXELS = 6_000_000


@dataclass
class Direct:
    """A Thumbify on LocalStack: its service, the bucket, the objects' prefix and the API keys by name."""

    svc: Service
    s3: LocalStackS3
    prefix: str
    keys: dict[str, str]

    def headers(self, who: str = "alice") -> dict[str, str]:
        return bearer(self.keys[who])

    def create(self, who: str = "alice", **body: object) -> httpx.Response:
        """POST /v1/uploads with `body` as JSON (as given: tests send bad bodies too)."""
        return self.svc.client.post("/v1/uploads", json=body, headers=self.headers(who))

    def create_ok(self, data: bytes, filename: str = "photo.jpg", who: str = "alice", **body: object) -> dict:
        r = self.create(who, filename=filename, size=len(data), **body)
        assert r.status_code == 201, f"upload refused: {r.status_code} {r.text}"
        upload = r.json()
        assert r.headers["location"] == f"/v1/uploads/{upload['id']}"
        assert upload["complete_url"] == f"/v1/uploads/{upload['id']}/complete"
        return upload

    def complete(self, upload: dict, who: str = "alice", **kwargs) -> httpx.Response:
        """POST its complete_url (`json=`, `headers=` go along)."""
        headers = {**self.headers(who), **kwargs.pop("headers", {})}
        return self.svc.client.post(upload["complete_url"], headers=headers, **kwargs)

    def complete_ok(self, upload: dict, who: str = "alice", **kwargs) -> dict:
        r = self.complete(upload, who, **kwargs)
        assert r.status_code == 202, f"complete refused: {r.status_code} {r.text}"
        job = r.json()
        assert job["id"] == upload["id"] and r.headers["location"] == f"/v1/jobs/{job['id']}", job
        return job

    def wait(self, job_id: str, who: str = "alice") -> dict:
        """The job once it has ended (Service.wait, read with `who`'s key)."""
        self.svc.client.headers.update(self.headers(who))
        return self.svc.wait(job_id)

    def get_upload(self, upload_id: str, who: str = "alice") -> httpx.Response:
        return self.svc.client.get(f"/v1/uploads/{upload_id}", headers=self.headers(who))

    def stored(self) -> set[str]:
        """Every key in the bucket under this service's prefix."""
        return self.s3.objects(self.prefix)


@contextmanager
def direct_service(base: Path, redis_url: str, s3: LocalStackS3, **settings: object) -> Iterator[Direct]:
    """A Thumbify (API and worker, unless `with_worker=False`) on `s3` under a prefix of its own, with the keys
    alice and bob (submit, read), photos (submit, read, may ingest keys under photos/) and admin; `settings`
    (THUMBIFY_*) on top. Stopped on leaving the block."""
    prefix = f"{uuid.uuid4().hex[:10]}/"
    keys_file = base / "keys.json"
    keys = {name: create_key(keys_file, name) for name in ("alice", "bob")}
    keys["photos"] = create_key(keys_file, "photos", "submit", "read", source_prefixes=("photos/",))
    keys["admin"] = create_key(keys_file, "admin", "admin", "submit", "read")
    with_worker = bool(settings.pop("with_worker", True))
    env = {
        **s3.env(prefix),
        "api_keys_file": keys_file,
        "max_upload_bytes": MAX_UPLOAD_BYTES,
        "max_pixels": MAX_PIXELS,
        **settings,
    }
    svc = start_service(base, redis_url, extra_env=env, with_worker=with_worker)
    try:
        yield Direct(svc, s3, prefix, keys)
    finally:
        stop_service(svc)


# -- the client side: only what the API answered ----------------------------------------------------------------------


def send(upload: dict, data: bytes, filename: str = "photo.jpg") -> list[dict] | None:
    """Send `data` to the bucket as `upload` says (no credentials of ours): a POST form, one PUT, or a PUT per part
    (then the parts to complete with, `[{"number", "etag"}]`, are returned). Asserts the bucket took it."""
    if "parts" in upload:
        return put_parts(upload, data)
    r = post_form(upload, data, filename) if upload["method"] == "POST" else put_single(upload, data)
    assert r.status_code in (200, 204), f"the bucket refused the upload: {r.status_code} {r.text}"
    return None


def post_form(upload: dict, data: bytes, filename: str = "photo.jpg") -> httpx.Response:
    """A browser's form post: every returned field, then the file last, named `file` (httpx puts files after
    fields)."""
    assert upload["method"] == "POST" and isinstance(upload["fields"], dict), upload
    return httpx.post(upload["url"], data=upload["fields"], files={"file": (filename, data)}, timeout=60)


def put_single(upload: dict, data: bytes) -> httpx.Response:
    assert upload["method"] == "PUT" and "parts" not in upload, upload
    return httpx.put(upload["url"], content=data, headers=upload.get("headers") or {}, timeout=60)


def put_parts(upload: dict, data: bytes) -> list[dict]:
    """Each part's bytes PUT to its URL (sizes as the API said: `part_size`, the last one the rest)."""
    part_size = upload["part_size"]
    assert len(upload["parts"]) == math.ceil(len(data) / part_size), upload
    done = []
    for part in upload["parts"]:
        start = (part["number"] - 1) * part_size
        chunk = data[start : start + part_size]
        assert part["size"] == len(chunk), (part, len(chunk))
        r = httpx.put(part["url"], content=chunk, timeout=60)
        assert r.status_code == 200, f"the bucket refused part {part['number']}: {r.status_code} {r.text}"
        done.append({"number": part["number"], "etag": r.headers["etag"]})
    return done


def object_key(upload: dict) -> str:
    """The bucket key the upload's URL (or form) writes to."""
    if upload.get("method") == "POST" and "fields" in upload:
        return upload["fields"]["key"]
    url = upload["parts"][0]["url"] if "parts" in upload else upload["url"]
    path = unquote(urlsplit(url).path)
    bucket_path = f"/{BUCKET}/"
    assert path.startswith(bucket_path), f"not a path-style URL of {BUCKET}: {url}"
    return path[len(bucket_path) :]


# -- what a test checks a finished job with ---------------------------------------------------------------------------


def fetch_thumbnail(svc: Service, thumb: dict, headers: dict[str, str]) -> pyvips.Image:
    """The thumbnail fetched through the API and decoded; its size is the one the job says."""
    r = svc.client.get(thumb["url"], headers=headers, follow_redirects=True)
    assert r.status_code == 200, f"GET {thumb['url']}: {r.status_code} {r.text[:300]}"
    image = pyvips.Image.new_from_buffer(r.content, "")
    assert (image.width, image.height) == (thumb["width"], thumb["height"]), thumb
    return image


def assert_colour(image: pyvips.Image, colour: tuple[int, int, int], tolerance: float = 4) -> None:
    """The image's mean RGB is `colour`, within `tolerance` on each band (a solid source, resized)."""
    stats = image.extract_band(0, n=3).stats()  # rows: all bands, then one per band; column 4 is the mean
    mean = tuple(stats(4, band + 1)[0] for band in range(3))
    assert all(abs(got - want) < tolerance for got, want in zip(mean, colour, strict=True)), (mean, colour)
