"""The REST API's happy paths, against the real stack (`service`: uvicorn + a worker + redis-server)."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
import uuid
from datetime import datetime
from urllib.parse import urlsplit

import pytest
import pyvips
import redis
from support.images import make_jpeg, make_png
from support.problems import assert_problem
from support.service import Service

JOB_FIELDS = {"id", "status", "attempts", "created_at", "updated_at", "source", "spec", "thumbnails", "error"}
JOB_FIELDS |= {"callback"}  # the completion webhook (null without one)
JOB_FIELDS |= {"batch_id"}  # the batch it was submitted in (null for a job of its own)
THUMB_FIELDS = {"name", "width", "height", "format", "bytes", "url"}
MEDIA = {"jpeg": "image/jpeg", "webp": "image/webp", "png": "image/png", "avif": "image/avif"}
EXT = {"jpeg": "jpg", "webp": "webp", "png": "png", "avif": "avif"}
NAME_RE = re.compile(r"^thumb_(?P<stem>[A-Za-z0-9._-]+)_(?P<w>\d+)x(?P<h>\d+)\.(?P<ext>jpg|webp|png|avif)$")


@pytest.fixture(scope="module")
def jpeg_640() -> bytes:
    return make_jpeg(640, 480)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class RedisMonitor:
    """Records every command the Redis server executes (its MONITOR feed, Lua script commands included), so a
    job's status changes can be read in order without depending on when anyone polls."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.address = (parts.hostname, parts.port)
        self.buffer = bytearray()
        self._stop = threading.Event()

    def __enter__(self) -> RedisMonitor:
        self.sock = socket.create_connection(self.address, timeout=10)
        self.sock.sendall(b"MONITOR\r\n")
        reply = self.sock.recv(5)
        assert reply == b"+OK\r\n", reply
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.buffer += chunk

    def __exit__(self, *exc: object) -> None:
        # Sync with the feed: a marker sent now arrives after everything executed before it.
        marker = f"monitor-end-{uuid.uuid4().hex}"
        with redis.Redis(*self.address) as r:
            r.echo(marker)
        deadline = time.monotonic() + 10
        while marker.encode() not in self.buffer and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self.thread.join(5)
        self.sock.close()

    def statuses(self, key: str) -> list[str]:
        """The `status` values written to hash `key`, in the order the server applied them."""
        out = []
        for line in self.buffer.decode("utf-8", "replace").splitlines():
            m = re.search(r'\] "hset" "' + re.escape(key) + r'"(.*)$', line, re.IGNORECASE)
            if m:
                status = re.search(r'"status" "(\w+)"', m.group(1))
                if status:
                    out.append(status.group(1))
        return out


# -- submit and read -------------------------------------------------------------------------------------------------


def test_submit_answers_202_with_location_and_the_job(service: Service, jpeg_640: bytes):
    r = service.submit(jpeg_640, "photo.jpg")
    assert r.status_code == 202, r.text
    job = r.json()
    assert set(job) == JOB_FIELDS
    assert re.fullmatch(r"[0-9a-f]{32}", job["id"]), job["id"]
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "processing")
    assert job["attempts"] in (0, 1)
    assert job["thumbnails"] == []
    assert job["error"] is None
    created, updated = parse_time(job["created_at"]), parse_time(job["updated_at"])
    assert created.tzinfo is not None and updated >= created
    source = job["source"]
    assert source["filename"] == "photo.jpg"
    assert source["bytes"] == len(jpeg_640)
    assert (source["width"], source["height"], source["format"]) == (640, 480, "jpeg")
    assert job["spec"]["sizes"] == ["256x256"]
    assert job["spec"]["format"] == "jpeg" and job["spec"]["fit"] == "inside"

    # The Location answers with the same job.
    again = service.client.get(r.headers["location"])
    assert again.status_code == 200
    assert again.json()["id"] == job["id"]
    service.wait(job["id"])


def test_job_goes_queued_processing_done(service: Service, jpeg_640: bytes):
    with RedisMonitor(service.redis_url) as monitor:
        job = service.submit_ok(jpeg_640, "photo.jpg")
        done = service.wait(job["id"])
    assert done["status"] == "done", done
    assert done["attempts"] == 1
    assert monitor.statuses(service.keys.job(job["id"])) == ["queued", "processing", "done"]
    assert parse_time(done["updated_at"]) >= parse_time(done["created_at"])


def test_wait_returns_the_finished_job(service: Service, jpeg_640: bytes):
    job = service.submit_ok(jpeg_640, "photo.jpg")
    r = service.get_job(job["id"], wait=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "done", body
    assert body["error"] is None
    assert len(body["thumbnails"]) == 1


def test_prefer_wait_answers_the_upload_with_the_finished_job(service: Service, jpeg_640: bytes):
    """One request instead of two: `Prefer: wait=S` (RFC 7240) holds the upload's answer until the job ends."""
    r = service.submit(jpeg_640, "photo.jpg", headers={"Prefer": "respond-async, wait=30"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "done" and body["error"] is None, body
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    [thumb] = body["thumbnails"]
    assert service.client.get(thumb["url"]).content[:3] == b"\xff\xd8\xff"
    assert service.get_job(body["id"]).json() == body


def test_prefer_wait_past_its_time_answers_202_with_the_job_as_it_is(service: Service, jpeg_640: bytes):
    """A job that cannot end in time (the worker is paused, so it stays queued) gets the usual 202 after the wait;
    a failed job ends the wait as done does."""
    service.procs["worker"].send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = service.submit(jpeg_640, headers={"Prefer": "wait=1"})
        assert r.status_code == 202 and r.json()["status"] == "queued", r.text
        assert 1.0 <= time.monotonic() - started < 10
    finally:
        service.procs["worker"].send_signal(signal.SIGCONT)
    assert service.wait(r.json()["id"])["status"] == "done"
    corrupt = jpeg_640[: len(jpeg_640) // 2]
    r = service.submit(corrupt, headers={"Prefer": "wait=30"})
    assert r.status_code == 201 and r.json()["status"] == "failed", r.text


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-1", "return=minimal", "wait"])
def test_a_prefer_header_without_a_usable_wait_changes_nothing(service: Service, jpeg_640: bytes, prefer: str):
    r = service.submit(jpeg_640, headers={"Prefer": prefer})
    assert r.status_code == 202, r.text
    service.wait(r.json()["id"])


@pytest.mark.parametrize("wait", ["31", "-1", "soon"])
def test_wait_out_of_range_is_422(service: Service, jpeg_640: bytes, wait: str):
    job = service.submit_ok(jpeg_640)
    body = assert_problem(service.get_job(job["id"], wait=wait), 422, "invalid-options")
    assert "wait" in body["detail"]
    service.wait(job["id"])


def test_default_options_give_one_256px_jpeg(service: Service, jpeg_640: bytes):
    job = service.run_job(jpeg_640, "photo.jpg")
    assert job["status"] == "done", job
    assert job["error"] is None
    [thumb] = job["thumbnails"]
    assert set(thumb) == THUMB_FIELDS
    assert (thumb["width"], thumb["height"], thumb["format"]) == (256, 192, "jpeg")
    assert thumb["name"] == "thumb_photo_256x192.jpg"
    assert thumb["url"] == f"/v1/thumbnails/{job['id']}/{thumb['name']}"
    assert (service.thumbnails_dir(job["id"]) / thumb["name"]).stat().st_size == thumb["bytes"]
    assert job["id"] in service.originals()


def test_options_as_query_parameters(service: Service, jpeg_640: bytes):
    job = service.run_job(jpeg_640, "q.jpg", params={"sizes": "100", "fit": "cover", "format": "webp", "quality": "60"})
    assert job["status"] == "done", job
    assert job["spec"]["sizes"] == ["100x100"]
    assert (job["spec"]["fit"], job["spec"]["format"], job["spec"]["quality"]) == ("cover", "webp", 60)
    [thumb] = job["thumbnails"]
    assert thumb["name"] == "thumb_q_100x100.webp"
    assert (thumb["width"], thumb["height"], thumb["format"]) == (100, 100, "webp")


def test_options_as_form_fields(service: Service, jpeg_640: bytes):
    job = service.run_job(jpeg_640, "f.jpg", sizes="120x90", fit="contain", format="png", background="#ff000080")
    assert job["status"] == "done", job
    assert job["spec"]["sizes"] == ["120x90"]
    assert (job["spec"]["fit"], job["spec"]["format"]) == ("contain", "png")
    assert job["spec"]["background"] == "#ff000080"
    [thumb] = job["thumbnails"]
    assert (thumb["name"], thumb["width"], thumb["height"], thumb["format"]) == ("thumb_f_120x90.png", 120, 90, "png")


def test_form_fields_win_over_query_parameters(service: Service, jpeg_640: bytes):
    job = service.run_job(jpeg_640, "w.jpg", params={"format": "png", "sizes": "64"}, format="webp")
    assert job["spec"]["format"] == "webp", job["spec"]
    assert job["spec"]["sizes"] == ["64x64"]  # a query option the form does not repeat still applies
    assert [t["name"] for t in job["thumbnails"]] == ["thumb_w_64x48.webp"]


def test_several_sizes_and_a_sanitised_stem(service: Service, jpeg_640: bytes):
    job = service.run_job(jpeg_640, "../../My Photo (1).JPG", sizes=["64", "128x96,200"])
    assert job["status"] == "done", job
    assert job["source"]["filename"].endswith("My Photo (1).JPG")
    got = sorted((t["width"], t["height"]) for t in job["thumbnails"])
    assert got == [(64, 48), (128, 96), (200, 150)]
    thumbs_dir = service.thumbnails_dir(job["id"])
    for thumb in job["thumbnails"]:
        m = NAME_RE.match(thumb["name"])
        assert m, f"{thumb['name']!r} does not follow thumb_<stem>_<w>x<h>.<ext>"
        assert "/" not in thumb["name"] and " " not in thumb["name"] and ".." not in m["stem"]
        assert "My" in m["stem"] and "Photo" in m["stem"], m["stem"]
        assert (int(m["w"]), int(m["h"]), m["ext"]) == (thumb["width"], thumb["height"], "jpg")
        assert (thumbs_dir / thumb["name"]).is_file()  # inside the job's folder, nowhere else
    assert sorted(p.name for p in thumbs_dir.iterdir()) == sorted(t["name"] for t in job["thumbnails"])


@pytest.mark.parametrize(
    ("accept", "alpha", "expected"),
    [
        ("image/avif,image/webp,*/*;q=0.8", False, "avif"),
        ("image/webp,image/*;q=0.8", False, "webp"),
        ("image/avif;q=0,image/webp", False, "webp"),
        ("image/png,image/jpeg", False, "jpeg"),
        ("image/png", True, "png"),
    ],
)
def test_format_auto_follows_accept(service: Service, accept: str, alpha: bool, expected: str):
    data = make_png(80, 60, alpha=True) if alpha else make_jpeg(80, 60)
    r = service.submit(data, "auto", headers={"Accept": accept}, format="auto", sizes="32")
    assert r.status_code == 202, r.text
    assert "accept" in r.headers.get("vary", "").lower(), r.headers
    assert r.json()["spec"]["format"] == expected
    job = service.wait(r.json()["id"])
    assert job["status"] == "done", job
    [thumb] = job["thumbnails"]
    assert thumb["format"] == expected and thumb["name"].endswith("." + EXT[expected])


def test_explicit_format_does_not_vary(service: Service, jpeg_640: bytes):
    r = service.submit(jpeg_640, headers={"Accept": "image/avif"}, format="jpeg")
    assert r.status_code == 202
    assert "accept" not in r.headers.get("vary", "").lower()
    service.wait(r.json()["id"])


# -- thumbnails -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png", "avif"])
def test_download_thumbnails(service: Service, jpeg_640: bytes, fmt: str):
    job = service.run_job(jpeg_640, "dl.jpg", sizes="96,48x48", fit="inside", format=fmt)
    assert job["status"] == "done", job
    assert len(job["thumbnails"]) == 2
    for thumb in job["thumbnails"]:
        r = service.client.get(thumb["url"])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == MEDIA[fmt]
        assert "immutable" in r.headers["cache-control"]
        etag = r.headers["etag"]
        assert re.fullmatch(r'"[^"]+"', etag), f"not a strong ETag: {etag!r}"
        assert len(r.content) == thumb["bytes"] == int(r.headers["content-length"])
        image = pyvips.Image.new_from_buffer(r.content, "")
        assert (image.width, image.height) == (thumb["width"], thumb["height"])

        cached = service.client.get(thumb["url"], headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        assert service.client.get(thumb["url"], headers={"If-None-Match": f'"other", {etag}'}).status_code == 304
        assert service.client.get(thumb["url"], headers={"If-None-Match": '"other"'}).status_code == 200

        head = service.client.head(thumb["url"])
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["etag"] == etag
        assert head.headers["content-type"] == MEDIA[fmt]
        assert int(head.headers["content-length"]) == thumb["bytes"]


def test_unknown_thumbnail_is_404(service: Service, jpeg_640: bytes):
    job = service.run_job(jpeg_640, "nf.jpg")
    assert_problem(service.client.get(f"/v1/thumbnails/{job['id']}/thumb_nf_999x999.jpg"), 404, "not-found")
    assert_problem(service.client.get(f"/v1/thumbnails/{'0' * 32}/x.jpg"), 404, "not-found")
    assert_problem(service.client.get(f"/v1/thumbnails/{job['id']}/..%2F..%2Fspool"), 404, "not-found")


# -- listing --------------------------------------------------------------------------------------------------------


def list_all(service: Service, limit: int = 200, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        r = service.client.get("/v1/jobs", params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def test_listing_is_newest_first(service: Service):
    mine = [service.submit_ok(make_png(16, 16), f"n{i}.png")["id"] for i in range(3)]
    r = service.client.get("/v1/jobs", params={"limit": 200})
    assert r.status_code == 200
    page = r.json()
    assert set(page) == {"items", "next_cursor"}
    ids = [j["id"] for j in page["items"]]
    assert ids == sorted(ids, reverse=True)
    stamps = [parse_time(j["created_at"]) for j in page["items"]]
    assert stamps == sorted(stamps, reverse=True)
    # Ids begin with the creation time in ms: of two jobs made in different milliseconds the later comes first
    # (two in the same millisecond are equally new, in either order).
    listed_mine = [i for i in ids if i in mine]
    assert sorted(listed_mine) == sorted(mine)
    for earlier, later in zip(mine, mine[1:], strict=False):
        if earlier[:12] != later[:12]:
            assert listed_mine.index(later) < listed_mine.index(earlier), (mine, listed_mine)
    assert ids[0][:12] == mine[-1][:12]
    for item in page["items"]:
        assert set(item) == JOB_FIELDS
    for job_id in mine:
        service.wait(job_id)


@pytest.mark.parametrize("limit", ["0", "201", "-5", "ten"])
def test_listing_limit_bounds(service: Service, limit: str):
    body = assert_problem(service.client.get("/v1/jobs", params={"limit": limit}), 422, "invalid-options")
    assert "limit" in body["detail"]


def test_listing_limit_is_obeyed(service: Service):
    for i in range(3):
        service.submit_ok(make_png(16, 16), f"l{i}.png")
    r = service.client.get("/v1/jobs", params={"limit": 2})
    assert len(r.json()["items"]) == 2
    assert r.json()["next_cursor"]
    assert len(service.client.get("/v1/jobs", params={"limit": 1}).json()["items"]) == 1


def test_cursor_pagination_visits_every_job_once(service: Service):
    for i in range(5):
        service.submit_ok(make_png(16, 16), f"p{i}.png")
    before = [j["id"] for j in list_all(service)]
    assert len(before) == len(set(before)) >= 5

    visited, added, cursor = [], [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = service.client.get("/v1/jobs", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 3
        visited += [j["id"] for j in page["items"]]
        if len(added) < 4:  # new jobs arrive while the client pages
            added.append(service.submit_ok(make_png(16, 16), "between.png")["id"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    duplicates = {i for i in visited if visited.count(i) > 1}
    assert not duplicates, f"jobs listed twice: {duplicates}"
    assert set(visited) == set(before), (
        f"missed: {set(before) - set(visited)}; unexpected: {set(visited) - set(before)}"
    )
    assert visited == before  # same order as one sweep
    for job_id in added:
        service.wait(job_id)


def test_listing_status_filter(service: Service, jpeg_640: bytes):
    done = service.run_job(jpeg_640, "s.jpg")
    assert done["status"] == "done"
    done_items = list_all(service, status="done")
    assert done["id"] in {j["id"] for j in done_items}
    assert done_items and all(j["status"] == "done" for j in done_items)
    for other in ("queued", "processing", "failed"):
        items = list_all(service, status=other)
        assert done["id"] not in {j["id"] for j in items}
    assert all(j["status"] == "failed" for j in list_all(service, status="failed"))
    body = assert_problem(service.client.get("/v1/jobs", params={"status": "finished"}), 422, "invalid-options")
    assert "status" in body["detail"]


@pytest.mark.parametrize("cursor", ["not-a-cursor!!", "AAAA", "////", "x" * 200])
def test_listing_bad_cursor_is_422(service: Service, cursor: str):
    body = assert_problem(service.client.get("/v1/jobs", params={"cursor": cursor}), 422, "invalid-options")
    assert "cursor" in body["detail"]
    assert any(e["field"] == "cursor" for e in body["errors"]), body


# -- delete ---------------------------------------------------------------------------------------------------------


def test_delete_removes_record_original_and_thumbnails(service: Service, jpeg_640: bytes):
    job = service.run_job(jpeg_640, "del.jpg", sizes="64,128")
    assert job["status"] == "done"
    job_id = job["id"]
    original = service.originals_dir / job_id
    thumbs = service.thumbnails_dir(job_id)
    assert original.is_file() and len(list(thumbs.iterdir())) == 2

    r = service.client.delete(f"/v1/jobs/{job_id}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_problem(service.get_job(job_id), 404, "not-found")
    assert not original.exists()
    assert not thumbs.exists()
    assert job_id not in service.job_ids_in_redis()
    assert job_id not in {j["id"] for j in list_all(service)}
    assert_problem(service.client.get(job["thumbnails"][0]["url"]), 404, "not-found")
    assert_problem(service.client.delete(f"/v1/jobs/{job_id}"), 404, "not-found")


@pytest.mark.parametrize("job_id", ["0" * 32, "f" * 32, "..%2Fx", "%2E%2E", "..%2F..%2Fobjects", "nope"])
def test_delete_unknown_is_404(service: Service, jpeg_640: bytes, job_id: str):
    keep = service.run_job(jpeg_640, "keep.jpg")
    before = service.snapshot()
    body = assert_problem(service.client.delete(f"/v1/jobs/{job_id}"), 404, "not-found")
    assert body["detail"]
    assert service.snapshot() == before
    assert service.get_job(keep["id"]).status_code == 200
    assert (service.originals_dir / keep["id"]).is_file()


@pytest.mark.parametrize("job_id", ["0" * 32, "..%2Fx", "%2E%2E", "nope"])
def test_get_unknown_is_404(service: Service, job_id: str):
    assert_problem(service.client.get(f"/v1/jobs/{job_id}"), 404, "not-found")


# -- health, docs, metrics ------------------------------------------------------------------------------------------


def test_healthz(service: Service):
    r = service.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz(service: Service):
    r = service.client.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["redis"] == "ok" and body["storage"] == "ok", body


def test_docs(service: Service):
    r = service.client.get("/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "openapi.json" in r.text


def test_openapi_documents_the_upload(service: Service):
    r = service.client.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    post = spec["paths"]["/v1/jobs"]["post"]
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "file" in body["required"]
    props = body["properties"]
    assert props["file"]["format"] == "binary"
    for option in ("sizes", "fit", "crop", "format", "quality", "background"):
        assert option in props, f"form field {option} is not documented"
        assert len(props[option].get("description", "")) > 10, f"form field {option} has no description"
    assert set(props["format"]["enum"]) >= {"jpeg", "webp", "png", "avif", "auto"}
    # Each option once: the query string takes them too, but only the form fields document them.
    assert [p["name"] for p in post.get("parameters", []) if p["in"] == "query"] == []
    for status in ("202", "413", "415", "422"):
        assert status in post["responses"], f"POST /v1/jobs does not document {status}"
    for path in ("/v1/jobs/{job_id}", "/v1/thumbnails/{job_id}/{name}", "/healthz", "/readyz"):
        assert path in spec["paths"], path


def test_metrics(service: Service, jpeg_640: bytes):
    service.submit_ok(jpeg_640)
    r = service.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert re.search(r'^thumbify_uploads_total\{outcome="accepted"\} [1-9]', r.text, re.MULTILINE), r.text[:2000]
    assert "thumbify_upload_bytes_total" in r.text
