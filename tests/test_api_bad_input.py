"""Bad input: every rejection is a clear problem+json, and nothing is left behind (spool, originals, job records);
images that pass the header check but cannot be decoded end `failed` with a readable error, never stuck."""

from __future__ import annotations

import os
import random
import re
import struct
import time
import zlib

import pytest
from support import images
from support.images import make_jpeg
from support.problems import assert_problem, is_failed_corrupt
from support.service import MAX_PIXELS, MAX_UPLOAD_BYTES, Service
from support.uploads import multipart


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return make_jpeg(320, 240)


def assert_nothing_left(service: Service, before: dict) -> None:
    after = service.snapshot()
    assert after["spool"] == before["spool"], f"left in the spool: {after['spool'] - before['spool']}"
    assert after["originals"] == before["originals"], (
        f"originals left behind: {after['originals'] - before['originals']}"
    )
    assert after["jobs"] == before["jobs"], f"job records left behind: {after['jobs'] - before['jobs']}"


# -- not an image --------------------------------------------------------------------------------------------------

NOT_IMAGES = {
    "text": b"Dear team,\nthis is a plain text file and not a photo at all.\n" * 20,
    "short-text": b"hello",
    "pdf": b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
    "svg": b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="4000" '
    b'height="4000"><rect width="4000" height="4000" fill="red"/></svg>\n',
    "html": b"<!DOCTYPE html>\n<html><head><title>x</title></head><body><img src=x onerror=alert(1)></body></html>\n",
}


@pytest.mark.parametrize("kind", list(NOT_IMAGES))
def test_not_an_image_is_415(service: Service, kind: str):
    before = service.snapshot()
    r = service.submit(NOT_IMAGES[kind], "photo.jpg", content_type="image/jpeg")
    body = assert_problem(r, 415, "unsupported-media", "not an image")
    assert "JPEG" in body["detail"]  # says what is accepted
    assert_nothing_left(service, before)


def test_hevc_heic_is_415_naming_the_missing_decoder(service: Service):
    """A phone's HEIC (HEVC): this libvips reads its header but has no HEVC decoder, so the upload is refused, not
    turned into a job that fails. The file itself is sound: libheif with libde265 (pillow-heif) decodes it."""
    import pillow_heif

    data = images.hevc_heic(96, 64)
    assert data[4:12] == b"ftypheic"
    decoded = pillow_heif.open_heif(data)
    assert decoded.size == (96, 64) and decoded.info.get("bit_depth", 8) == 8
    before = service.snapshot()
    r = service.submit(data, "IMG_0001.HEIC", content_type="image/heic")
    body = assert_problem(r, 415, "unsupported-media", "HEVC", "libde265")
    assert (body["compression"], body["missing_decoder"]) == ("hevc", "libde265"), body
    assert_nothing_left(service, before)
    # HEIF with AV1 (AVIF), which this libvips decodes, is still taken.
    avif = images.photo_like_image(96, 64, seed=3).heifsave_buffer(compression="av1")
    assert service.submit(avif, "photo.avif").status_code == 202


def test_a_large_first_heif_of_a_codec_is_not_decoded_to_learn_it(monkeypatch: pytest.MonkeyPatch):
    """The API learns whether it decodes a HEIF codec from one pixel of the codec's first image, never of a large one
    (an image without a grid, most AVIFs, decodes whole): that one decides nothing, the next smaller one does."""
    import pyvips

    from thumbify import probe
    from thumbify.errors import UnsupportedMedia

    heic = pyvips.Image.new_from_buffer(images.hevc_heic(96, 64), "")
    monkeypatch.setattr(probe, "_HEIF_DECODES", {})
    monkeypatch.setattr(probe, "CODEC_PROBE_MAX_PIXELS", 96 * 64 - 1)
    probe.check_heif_codec(heic)
    assert probe._HEIF_DECODES == {}
    monkeypatch.setattr(probe, "CODEC_PROBE_MAX_PIXELS", 96 * 64)
    with pytest.raises(UnsupportedMedia):
        probe.check_heif_codec(heic)
    assert probe._HEIF_DECODES == {"hevc": False}


# -- images that cannot be decoded -----------------------------------------------------------------------------------


def test_truncated_jpeg_fails_and_the_worker_goes_on(service: Service, jpeg: bytes):
    before = service.snapshot()
    r = service.submit(jpeg[: len(jpeg) // 2], "half.jpg")
    if r.status_code == 422:  # refused at upload: fine, if said clearly and cleanly
        assert_problem(r, 422, "corrupt-image", r"corrupt|truncated")
        assert_nothing_left(service, before)
    else:
        assert r.status_code == 202, r.text
        job = service.wait(r.json()["id"])
        is_failed_corrupt(job)
        assert not service.thumbnails_dir(job["id"]).exists(), "a failed job left thumbnails"
        assert service.spool_files() == before["spool"]
    assert service.procs["worker"].poll() is None, "the worker died on a truncated image"
    good = service.run_job(jpeg, "good.jpg")
    assert good["status"] == "done", good


def corrupt_entropy_data(data: bytes, seed: int = 7) -> bytes:
    """Keep every header up to and including the start-of-scan; replace the entropy-coded data with noise."""
    sos = data.index(b"\xff\xda")
    start = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    rng = random.Random(seed)
    noise = bytes(rng.randrange(256) for _ in range(len(data) - 2 - start))
    return data[:start] + noise + b"\xff\xd9"


def test_jpeg_with_garbage_scan_data_fails_readably(service: Service, jpeg: bytes):
    before = service.snapshot()
    r = service.submit(corrupt_entropy_data(jpeg), "garbage.jpg")
    assert r.status_code == 202, f"the header is fine, so the upload is accepted: {r.status_code} {r.text}"
    assert (r.json()["source"]["width"], r.json()["source"]["height"]) == (320, 240)
    job = service.wait(r.json()["id"])
    is_failed_corrupt(job)
    assert "jpeg" in job["error"]["detail"].lower()
    assert not service.thumbnails_dir(job["id"]).exists()
    assert service.spool_files() == before["spool"]
    assert service.run_job(jpeg, "after.jpg")["status"] == "done"


# -- too many bytes --------------------------------------------------------------------------------------------------


def oversized_payload(total: int) -> bytes:
    """JPEG magic, then incompressible bytes: passes the sniff, so only the byte cap can stop it."""
    return make_jpeg(16, 16)[:64] + os.urandom(total - 64)


def test_over_the_byte_cap_with_content_length_is_413(service: Service):
    before = service.snapshot()
    r = service.submit(oversized_payload(MAX_UPLOAD_BYTES + 1024 * 1024), "big.jpg")
    assert "content-length" in r.request.headers
    assert_problem(r, 413, "too-large", "limit", f"{MAX_UPLOAD_BYTES:,}")
    assert_nothing_left(service, before)


def test_over_the_byte_cap_streamed_is_413_and_the_partial_file_is_deleted(service: Service):
    """No Content-Length (chunked): the cap is enforced while streaming; the spool file seen mid-upload is gone."""
    before = service.snapshot()
    body, content_type = multipart([("file", "stream.jpg", oversized_payload(MAX_UPLOAD_BYTES + 2 * 1024 * 1024))])
    seen_partial: set[str] = set()

    def chunks():
        step = 256 * 1024
        for offset in range(0, len(body), step):
            yield body[offset : offset + step]
            if offset >= 2 * 1024 * 1024 and not seen_partial:
                # The server is writing the upload to the spool as it arrives: wait until the file shows.
                deadline = time.monotonic() + 30
                while not seen_partial and time.monotonic() < deadline:
                    seen_partial.update(service.spool_files() - before["spool"])
                    time.sleep(0.02)

    r = service.client.post("/v1/jobs", content=chunks(), headers={"Content-Type": content_type})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert_problem(r, 413, "too-large", "limit")
    assert seen_partial, "no spool file appeared while the upload streamed"
    assert not (seen_partial & service.spool_files()), f"partial spool file left behind: {seen_partial}"
    assert_nothing_left(service, before)
    # The connection and the service are fine afterwards.
    assert service.client.get("/healthz").status_code == 200


# -- too many pixels (judged from the header, never decoded) --------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" * 64)  # far too little data for the declared size
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bomb(width: int = 65500, height: int = 65500) -> bytes:
    data = bytearray(make_jpeg(16, 16))
    sof = data.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "data", "size"),
    [("bomb.png", png_bomb(), (100_000, 100_000)), ("bomb.jpg", jpeg_bomb(), (65500, 65500))],
)
def test_pixel_bomb_is_422_at_upload(service: Service, name: str, data: bytes, size: tuple[int, int]):
    assert len(data) < 4096
    before = service.snapshot()
    r = service.submit(data, name)
    body = assert_problem(r, 422, "too-many-pixels", "pixels", f"{MAX_PIXELS:,}", f"{size[0]}x{size[1]}")
    assert (body.get("width"), body.get("height")) == size
    assert_nothing_left(service, before)
    assert service.procs["api"].poll() is None


# -- bad options ----------------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ({"sizes": "0"}, "sizes"),
    ({"sizes": "5000"}, "sizes"),
    ({"sizes": ",".join(str(16 * i) for i in range(1, 10))}, "sizes"),
    ({"sizes": "big"}, "sizes"),
    ({"quality": "500"}, "quality"),
    ({"quality": "high"}, "quality"),
    ({"format": "bmp"}, "format"),
    ({"fit": "stretch"}, "fit"),
    ({"crop": "middle"}, "crop"),
    ({"background": "red"}, "background"),
    ({"size": "256"}, "size"),  # a typo of `sizes`: reported, not ignored
]


@pytest.mark.parametrize("where", ["form", "query"])
@pytest.mark.parametrize(("options", "field"), BAD_OPTIONS, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_options_are_422(service: Service, jpeg: bytes, options: dict, field: str, where: str):
    before = service.snapshot()
    if where == "form":
        r = service.submit(jpeg, "opt.jpg", **options)
    else:
        r = service.submit(jpeg, "opt.jpg", params=options)
    body = assert_problem(r, 422, "invalid-options", re.escape(field))
    fields = [e["field"] for e in body.get("errors", [])]
    assert field in fields, f"`errors` does not name {field!r}: {body}"
    assert all(e.get("message") for e in body["errors"]), body
    assert_nothing_left(service, before)


def test_an_unknown_option_lists_the_known_ones(service: Service, jpeg: bytes):
    body = assert_problem(service.submit(jpeg, "opt.jpg", qualty="80"), 422, "invalid-options", "qualty")
    assert "quality" in body["detail"]


# -- malformed requests ---------------------------------------------------------------------------------------------


def test_empty_upload_is_422(service: Service):
    before = service.snapshot()
    assert_problem(service.submit(b"", "empty.jpg"), 422, "invalid-upload", "empty")
    assert_nothing_left(service, before)


def test_missing_file_part_is_422(service: Service):
    before = service.snapshot()
    body, content_type = multipart([("sizes", None, b"256")])
    r = service.client.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    assert_problem(r, 422, "invalid-upload", "`file`", "missing")
    assert_nothing_left(service, before)


def test_file_in_a_misnamed_part_is_422_naming_the_file_part(service: Service, jpeg: bytes):
    before = service.snapshot()
    body, content_type = multipart([("image", "photo.jpg", jpeg)])
    r = service.client.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    assert_problem(r, 422, "invalid-upload", "`file`")
    assert_nothing_left(service, before)


def test_two_file_parts_are_422(service: Service, jpeg: bytes):
    before = service.snapshot()
    body, content_type = multipart([("file", "a.jpg", jpeg), ("file", "b.jpg", jpeg)])
    r = service.client.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    assert_problem(r, 422, "invalid-upload", "one `file`")
    assert_nothing_left(service, before)


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("image/jpeg", "jpeg"),
        ("application/json", b'{"file": "photo.jpg"}'),
        ("application/x-www-form-urlencoded", b"file=photo.jpg&sizes=256"),
        ("multipart/form-data", b"--x\r\n\r\n--x--\r\n"),  # no boundary parameter
        (None, b"raw bytes"),
    ],
)
def test_non_multipart_body_is_422(service: Service, jpeg: bytes, content_type: str | None, payload):
    before = service.snapshot()
    headers = {"Content-Type": content_type} if content_type else {}
    r = service.client.post("/v1/jobs", content=jpeg if payload == "jpeg" else payload, headers=headers)
    assert_problem(r, 422, "invalid-upload", "multipart/form-data", "`file`")
    assert_nothing_left(service, before)


def test_unknown_job_is_404(service: Service):
    assert_problem(service.get_job("0123456789abcdef0123456789abcdef"), 404, "not-found", "no job")
    assert_problem(service.get_job("0123456789abcdef0123456789abcdef", wait=1), 404, "not-found")
    assert_problem(service.get_job("not-a-job"), 404, "not-found")
