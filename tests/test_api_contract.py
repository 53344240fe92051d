"""The API as a client reads it, over HTTP against the real stack: thumbnails in the order asked, option names in
any case, `format=auto` negotiated with q-values (406 when nothing fits), the spec as documented, errors in plain
words, and `If-Modified-Since` answered from a `Last-Modified` every API replica agrees on."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

import httpx
import pytest
import pyvips
from support import images
from support.images import make_jpeg, make_png
from support.problems import PROBLEM_BASE
from support.service import PYTHON, Service, stop_process, wait_ready

from thumbify.redis_conn import free_port


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return make_jpeg(400, 300)


def problem_of(r: httpx.Response, status: int, slug: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body = r.json()
    assert (body["type"], body["status"]) == (PROBLEM_BASE + slug, status), body
    return body


# -- order, case, defaults ----------------------------------------------------------------------------------------


def test_thumbnails_come_in_the_order_the_sizes_were_asked(service: Service, jpeg: bytes) -> None:
    job = service.run_job(jpeg, "order.jpg", sizes="64,200,32x32,128x96,200x150")
    assert job["status"] == "done", job
    assert job["spec"]["sizes"] == ["64x64", "200x200", "32x32", "128x96", "200x150"]
    # 200 and 200x150 land on the same 200x150 pixels of a 4:3 source: listed once, where it was first asked.
    assert [(t["width"], t["height"]) for t in job["thumbnails"]] == [(64, 48), (200, 150), (32, 24), (128, 96)]
    again = service.get_job(job["id"]).json()
    assert again["thumbnails"] == job["thumbnails"]


@pytest.mark.parametrize("where", ["form", "query"])
def test_option_names_match_in_any_case(service: Service, jpeg: bytes, where: str) -> None:
    options = {"format": "WEBP", "fit": "Cover", "crop": "Attention", "sizes": "48X32"}
    kwargs = {"params": options} if where == "query" else options
    job = service.run_job(jpeg, "case.jpg", **kwargs)
    assert job["status"] == "done", job
    spec = job["spec"]
    assert (spec["format"], spec["fit"], spec["crop"], spec["sizes"]) == ("webp", "cover", "attention", ["48x32"])
    assert [(t["format"], t["width"], t["height"]) for t in job["thumbnails"]] == [("webp", 48, 32)]


def test_the_spec_shows_the_defaults_as_documented(service: Service, jpeg: bytes) -> None:
    spec = service.submit_ok(jpeg, "defaults.jpg")["spec"]
    assert spec == {
        "sizes": ["256x256"],
        "fit": "inside",
        "crop": "centre",
        "format": "jpeg",
        "quality": 80,
        "background": "#ffffff",
        "progressive": False,
        "keep": "none",
        "optimize_coding": True,
        "effort": None,
        "preset": None,
        "facts": False,
        "animated": False,
        "fx": None,
        "fy": None,
    }
    assert service.submit_ok(jpeg, "bg.jpg", background="#FF000080")["spec"]["background"] == "#ff000080"
    # WebP and AVIF show the effort they are encoded with.
    assert service.submit_ok(jpeg, "w.jpg", format="webp")["spec"]["effort"] == 4
    assert service.submit_ok(jpeg, "a.jpg", format="avif")["spec"]["effort"] == 2


def test_focal_crop_reaches_the_spec_and_the_pixels(service: Service) -> None:
    source = images.marker_at(400, 200, 0.8, 0.2, 40, (220, 30, 30)).jpegsave_buffer(Q=95)
    options = {"sizes": "100", "fit": "cover", "crop": "focal", "fx": "0.8", "fy": "0.2", "format": "png"}
    job = service.run_job(source, "focal.jpg", **options)
    assert job["status"] == "done", job
    assert (job["spec"]["crop"], job["spec"]["fx"], job["spec"]["fy"]) == ("focal", 0.8, 0.2)
    thumb = pyvips.Image.new_from_buffer(service.client.get(job["thumbnails"][0]["url"]).content, "")
    assert thumb.getpoint(60, 20)[0] > 170 and thumb.getpoint(60, 20)[1] < 90  # the red marker, kept in frame


def test_encoder_options_reach_the_spec_and_the_bytes(service: Service, jpeg: bytes) -> None:
    options = {"sizes": "64", "progressive": "true", "keep": "ICC", "optimize_coding": "false"}
    job = service.run_job(jpeg, "enc.jpg", **options)
    assert job["status"] == "done", job
    spec = job["spec"]
    assert (spec["progressive"], spec["keep"], spec["optimize_coding"]) == (True, "icc", False)
    data = service.client.get(job["thumbnails"][0]["url"]).content
    assert images.jpeg_sof(data) == 0xC2
    assert pyvips.Image.new_from_buffer(data, "").get_typeof("icc-profile-data")
    job = service.run_job(jpeg, "enc.png", params={"sizes": "64", "format": "png", "progressive": "1", "effort": "3"})
    assert job["spec"]["effort"] is None  # PNG has no effort: ignored, as documented
    assert images.png_interlace(service.client.get(job["thumbnails"][0]["url"]).content) == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"format": "webp", "effort": "7"}, "effort"),
        ({"format": "avif", "effort": "10"}, "effort"),
        ({"format": "webp", "effort": "-1"}, "effort"),
        ({"keep": "gps"}, "keep"),
        ({"keep": "all"}, "keep"),
        ({"progressive": "sometimes"}, "progressive"),
        ({"optimize_coding": "2"}, "optimize_coding"),
        ({"facts": "maybe"}, "facts"),
        ({"crop": "focal", "fx": "1.5"}, "fx"),
        ({"crop": "focal", "fy": "x"}, "fy"),
        ({"fx": "0.5"}, "fx"),
        ({"crop": "eyes"}, "crop"),
    ],
)
def test_bad_encoder_options_are_422_naming_the_field(service: Service, jpeg: bytes, options: dict, field: str) -> None:
    body = problem_of(service.submit(jpeg, "bad.jpg", **options), 422, "invalid-options")
    assert [e["field"] for e in body["errors"]] == [field], body


def test_facts_are_in_the_jobs_source_when_asked_and_null_otherwise(service: Service) -> None:
    """A 12-colour photo-like JPEG: the facts as documented (formats, lengths), read off its pixels; a PNG with a clear
    half is `transparent`, with its opaque half's colour; without `facts` the field is null."""
    job = service.run_job(images.photo_like(400, 300, seed=5), "facts.jpg", sizes="256,64", facts="true")
    assert job["status"] == "done", job
    assert job["spec"]["facts"] is True
    facts = job["source"]["facts"]
    assert set(facts) == {"blurhash", "thumbhash", "dominant_color", "average_color", "dhash", "transparent"}
    assert len(facts["blurhash"]) == 28 and re.fullmatch(r"[0-9a-f]{16}", facts["dhash"])
    assert re.fullmatch(r"#[0-9a-f]{6}", facts["dominant_color"]) and facts["transparent"] is False
    assert len(base64.b64decode(facts["thumbhash"])) >= 5
    again = service.client.get(f"/v1/jobs/{job['id']}").json()  # read back from Redis, not the worker's copy
    assert again["source"]["facts"] == facts
    png = images.rgba_png(200, 100, (40, 90, 200))
    clear = service.run_job(png, "clear.png", sizes="64", format="png", facts="1")["source"]["facts"]
    assert clear["transparent"] is True and clear["dominant_color"] == clear["average_color"] == "#285ac8"
    plain = service.run_job(images.photo_like(400, 300, seed=5), "plain.jpg", sizes="64")
    assert plain["status"] == "done" and plain["source"]["facts"] is None and plain["spec"]["facts"] is False


# -- negotiation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "alpha", "expected"),
    [
        ("image/png", False, "png"),  # JPEG before the fix: a format the client said it cannot take
        ("image/png;q=1, image/*;q=0.5", False, "png"),
        ("image/webp;q=0.9, image/avif;q=0.4, */*;q=0.1", False, "webp"),
        ("image/jpeg", True, "jpeg"),
        ("*/*", True, "png"),
        (None, False, "jpeg"),  # no Accept header at all
    ],
)
def test_format_auto_negotiates_with_q_values(service: Service, accept: str | None, alpha: bool, expected: str):
    data = make_png(80, 60, alpha=True) if alpha else make_jpeg(80, 60)
    request = service.client.build_request(
        "POST", "/v1/jobs", files={"file": ("a", data, "image/png")}, data={"format": "auto", "sizes": "32"}
    )
    if accept is None:
        del request.headers["accept"]
    else:
        request.headers["accept"] = accept
    r = service.client.send(request)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["format"] == expected
    job = service.wait(r.json()["id"])
    assert [t["format"] for t in job["thumbnails"]] == [expected], job


@pytest.mark.parametrize("accept", ["image/gif", "image/*;q=0", "image/avif;q=0, image/webp;q=0, text/html"])
def test_format_auto_with_nothing_acceptable_is_406(service: Service, jpeg: bytes, accept: str) -> None:
    before = service.snapshot()
    r = service.submit(jpeg, "gif.jpg", headers={"Accept": accept}, format="auto")
    body = problem_of(r, 406, "not-acceptable")
    assert accept in body["detail"] and "image/jpeg, image/webp, image/png, image/avif" in body["detail"], body
    assert service.snapshot() == before, "a refused upload leaves nothing behind"
    # An explicit format does not depend on Accept.
    assert service.submit(jpeg, "gif.jpg", headers={"Accept": accept}, format="png").status_code == 202


# -- errors in plain words ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["form", "query"])
def test_option_errors_read_naturally(service: Service, jpeg: bytes, where: str) -> None:
    options = {"sizes": "64,big", "background": "red", "quality": "0"}
    kwargs = {"params": options} if where == "query" else options
    body = problem_of(service.submit(jpeg, "e.jpg", **kwargs), 422, "invalid-options")
    messages = {e["field"]: e["message"] for e in body["errors"]}
    assert messages == {
        "sizes": "'big' is not a size: use a longest side like 256 or a box like 320x200",
        "background": "'red' is not a colour: use #rrggbb or #rrggbbaa",
        "quality": "Input should be greater than or equal to 1",
    }
    assert "Value error" not in body["detail"], body["detail"]


# -- If-Modified-Since --------------------------------------------------------------------------------------------


def test_if_modified_since(service: Service, jpeg: bytes) -> None:
    job = service.run_job(jpeg, "ims.jpg", sizes="64")
    url = job["thumbnails"][0]["url"]
    first = service.client.get(url)
    assert first.status_code == 200
    modified = parsedate_to_datetime(first.headers["last-modified"])
    assert modified == parsedate_to_datetime(format_datetime(modified, usegmt=True))  # an HTTP-date, GMT
    assert service.client.get(url).headers["last-modified"] == first.headers["last-modified"]
    assert_conditional_answers(service.client, url, first.headers["last-modified"], first.headers["etag"])


def assert_conditional_answers(client: httpx.Client, url: str, last_modified: str, etag: str) -> None:
    """If-Modified-Since: 304 when not older than Last-Modified, else 200; If-None-Match, when sent, decides alone."""
    earlier = format_datetime(parsedate_to_datetime(last_modified) - timedelta(seconds=1), usegmt=True)
    later = "Fri, 01 Jan 2100 00:00:00 GMT"

    def status(method: str = "GET", **headers: str) -> int:
        return client.request(method, url, headers=headers).status_code

    not_modified = client.get(url, headers={"If-Modified-Since": last_modified})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["last-modified"] == last_modified and not_modified.headers["etag"] == etag
    assert status("HEAD", **{"If-Modified-Since": last_modified}) == 304
    assert status(**{"If-Modified-Since": later}) == 304
    assert status(**{"If-Modified-Since": earlier}) == 200
    assert status(**{"If-Modified-Since": "not a date"}) == 200
    # RFC 9110 §13.2.2: If-None-Match takes precedence; If-Modified-Since is then not looked at.
    assert status(**{"If-None-Match": '"other"', "If-Modified-Since": later}) == 200
    assert status(**{"If-None-Match": etag, "If-Modified-Since": earlier}) == 304


def test_every_api_replica_sends_the_same_last_modified(service: Service, jpeg: bytes) -> None:
    job = service.run_job(jpeg, "replica.jpg", sizes="48")
    url = job["thumbnails"][0]["url"]
    port = free_port()
    replica = service.start(
        f"api-replica-{port}",
        [PYTHON, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)],
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", [replica], service.logs)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as other:
            theirs, ours = other.get(url), service.client.get(url)
            assert theirs.status_code == ours.status_code == 200
            assert theirs.headers["last-modified"] == ours.headers["last-modified"]
            assert other.get(url, headers={"If-Modified-Since": ours.headers["last-modified"]}).status_code == 304
    finally:
        stop_process(replica)
