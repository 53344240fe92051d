"""Nothing a client sends becomes a filesystem path.

Upload filenames are data: the stored names are built from the server's job id and a sanitised stem, whatever the
name holds (traversal, NUL, absolute paths, backslashes, 10,000 characters, non-ASCII). Job ids and thumbnail names
in URLs, raw or percent-encoded, are looked up, never joined to a path: each such request is a 404 (or 422/400)
problem, never a 500, and never answers with bytes from outside the job's thumbnails. Canary files planted next to
and inside the data folder prove it: their bytes appear in no answer.
"""

from __future__ import annotations

import http.client
import re
import secrets
import socket
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from support import images
from support.problems import PROBLEM_BASE
from support.service import Service

from thumbify.spec import EXTENSIONS

EXTENSION = "|".join(EXTENSIONS.values())
THUMB_NAME = re.compile(rf"^thumb_[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}_\d{{1,4}}x\d{{1,4}}\.({EXTENSION})$")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
BOUNDARY = "thumbify-paths-boundary-51c3"


# -- helpers ---------------------------------------------------------------------------------------------------------


def raw_request(service: Service, target: bytes, method: bytes = b"GET") -> tuple[int, dict[str, str], bytes]:
    """Send the request line exactly as given (no client normalises `..` or re-encodes anything)."""
    parts = urlsplit(service.base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: thumbify\r\nConnection: close\r\n\r\n")
        response = http.client.HTTPResponse(sock, method=method.decode())
        response.begin()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def multipart_upload(service: Service, filename: bytes, data: bytes):
    """POST /v1/jobs with the filename's bytes put into the part header as they are (NUL, quotes and all)."""
    body = (
        f"--{BOUNDARY}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return service.client.post(
        "/v1/jobs", content=body, headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    )


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return images.photo_like(160, 120, seed=7)


@pytest.fixture(scope="module")
def canaries(service: Service) -> list[bytes]:
    """Secret files next to the data folder and inside it (outside `objects/`, and loose in `objects/` and
    `objects/thumbnails/`): none of their bytes may ever appear in an answer."""
    places = [
        service.data_dir.parent / "canary.txt",
        service.data_dir / "canary.txt",
        service.data_dir / "objects" / "canary.txt",
        service.data_dir / "objects" / "thumbnails" / "canary.txt",
    ]
    tokens = []
    for place in places:
        token = f"CANARY-{secrets.token_hex(16)}".encode()
        place.parent.mkdir(parents=True, exist_ok=True)
        place.write_bytes(token + b"\n")
        tokens.append(token)
    yield tokens
    for place in places:
        place.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def done_job(service: Service, jpeg: bytes) -> dict:
    job = service.run_job(jpeg, "victim.jpg", sizes="64,96")
    assert job["status"] == "done", job
    return job


def assert_refused(
    status: int, headers: dict, body: bytes, canaries: list[bytes], secret: bytes = b"", method: bytes = b"GET"
) -> None:
    assert status < 500, f"server error {status}: {body[:300]!r}"
    assert status in (400, 404, 405, 422), f"expected a refusal, got {status}: {body[:300]!r}"
    if status in (404, 405, 422):  # answered by the app: a problem (a HEAD answer has its headers, no body)
        assert headers["content-type"].startswith("application/problem+json"), headers
        if method != b"HEAD":
            assert b'"type":"' + PROBLEM_BASE.encode() in body, body
    for token in canaries:
        assert token not in body, "a canary file's bytes were served"
    if secret:
        assert secret not in body, "the original's bytes were served"


# -- upload filenames -------------------------------------------------------------------------------------------------

NASTY_NAMES = {
    "dotdot": b"../../etc/passwd.jpg",
    "dotdot-deep": b"../" * 40 + b"tmp/pwned.jpg",
    "encoded-dotdot": b"..%2F..%2Fx.jpg",
    "double-encoded": b"%252e%252e%252fx.jpg",
    "nul": b"evil\x00.jpg",
    "nul-then-path": b"photo.jpg\x00/../../etc/passwd",
    "absolute": b"/etc/passwd",
    "absolute-jpg": b"/tmp/thumbify-pwned.jpg",
    "windows": b"C:\\Windows\\System32\\evil.jpg",
    "backslash-dotdot": b"..\\..\\evil.jpg",
    "unc": b"\\\\server\\share\\evil.jpg",
    "dots-only": b"..",
    "dot": b".",
    "empty": b"",
    "hidden": b".bashrc",
    "long": b"a" * 3000 + b".jpg",
    "very-long": b"a" * 10_000 + b".jpg",  # over python-multipart's header size: 422 invalid-upload
    "unicode": "фото 📷 ü.jpg".encode(),
    "rtl-override": "gpj.\u202eexe.jpg".encode(),
    "quotes-and-semicolons": b'a\\"; filename=evil.sh; x=\\".jpg',
    "header-ish": b"x%0d%0aSet-Cookie: a=b.jpg",
    "shell": b"$(reboot);`id`|x&.jpg",
}


@pytest.mark.parametrize("kind", list(NASTY_NAMES))
def test_upload_filenames_never_become_paths(service: Service, jpeg: bytes, canaries: list[bytes], kind: str) -> None:
    base = service.data_dir.parent
    outside_before = {p.name for p in base.iterdir()}
    stored_before = files_under(service.data_dir / "objects")
    r = multipart_upload(service, NASTY_NAMES[kind], jpeg)
    if kind == "very-long":
        assert r.status_code == 422 and r.json()["type"] == PROBLEM_BASE + "invalid-upload", r.text
        assert files_under(service.data_dir / "objects") == stored_before
        return
    assert r.status_code == 202, f"{kind}: {r.status_code} {r.text[:300]}"
    job = service.wait(r.json()["id"])
    assert job["status"] == "done", job
    job_id = job["id"]
    assert JOB_ID.match(job_id)
    for thumb in job["thumbnails"]:
        assert THUMB_NAME.match(thumb["name"]), f"{kind}: unsafe thumbnail name {thumb['name']!r}"
        assert thumb["url"].startswith(f"/v1/thumbnails/{job_id}/"), thumb["url"]
        got = service.client.get(thumb["url"])
        assert got.status_code == 200
        disposition = got.headers["content-disposition"]
        assert disposition == f'inline; filename="{thumb["name"]}"', disposition
        for token in canaries:
            assert token not in got.content
    # Exactly the job's original and its thumbnails were written, under names built from the id.
    new = files_under(service.data_dir / "objects") - stored_before
    expected = {f"originals/{job_id}"} | {f"thumbnails/{job_id}/{t['name']}" for t in job["thumbnails"]}
    assert new == expected, f"{kind}: unexpected files {new ^ expected}"
    assert {p.name for p in base.iterdir()} == outside_before, "something was written next to the data folder"
    assert not Path("/tmp/thumbify-pwned.jpg").exists() and not Path("/tmp/pwned.jpg").exists()
    # The name the client sent is kept as data only (at most 255 characters), for the client's own records.
    assert len(job["source"]["filename"]) <= 255


# -- job ids in URLs ------------------------------------------------------------------------------------------------


def _job_targets(job_id: str) -> dict[str, bytes]:
    valid = job_id.encode()
    return {
        "dotdot": b"/v1/jobs/../../etc/passwd",
        "dotdot-in-id": b"/v1/jobs/..",
        "encoded-slash": b"/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "encoded-dots": b"/v1/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "encoded-dotdot-only": b"/v1/jobs/%2e%2e",
        "double-encoded": b"/v1/jobs/%252e%252e%252fetc",
        "nul": b"/v1/jobs/%00",
        "id-then-nul": b"/v1/jobs/" + valid + b"%00",
        "id-then-newline": b"/v1/jobs/" + valid + b"%0a",
        "id-then-traversal": b"/v1/jobs/" + valid + b"%2f..%2f..%2fetc%2fpasswd",
        "backslashes": b"/v1/jobs/..%5c..%5cetc%5cpasswd",
        "upper-hex": b"/v1/jobs/" + valid.upper(),
        "overlong": b"/v1/jobs/" + b"f" * 4000,
        "unicode": b"/v1/jobs/" + quote("ｆｆ" * 16).encode(),
        "absolute": b"/v1/jobs/%2fetc%2fpasswd",
    }


@pytest.mark.parametrize("method", [b"GET", b"DELETE"])
def test_job_ids_that_are_paths_are_404(service: Service, done_job: dict, canaries: list[bytes], method: bytes) -> None:
    for kind, target in _job_targets(done_job["id"]).items():
        status, headers, body = raw_request(service, target, method)
        assert status != 500, f"{kind}: {body[:300]!r}"
        assert_refused(status, headers, body, canaries, method=method)
        assert status == 404, f"{kind}: {status} {body[:200]!r}"
    # The job is untouched: nothing above deleted it.
    assert service.get_job(done_job["id"]).json()["status"] == "done"


# -- thumbnail names in URLs ------------------------------------------------------------------------------------------


def _thumbnail_targets(job_id: str, name: str) -> dict[str, bytes]:
    j, n = job_id.encode(), name.encode()
    t = b"/v1/thumbnails/"
    return {
        "raw-dotdot-to-original": t + j + b"/../../originals/" + j,
        "raw-dotdot-after-name": t + j + b"/" + n + b"/../../../originals/" + j,
        "encoded-to-original": t + j + b"/..%2F..%2Foriginals%2F" + j,
        "encoded-dots-to-original": t + j + b"/%2e%2e%2f%2e%2e%2foriginals%2f" + j,
        "encoded-dotdot-name": t + j + b"/%2e%2e",
        "dot-name": t + j + b"/.",
        "backslash-to-original": t + j + b"/..%5C..%5Coriginals%5C" + j,
        "raw-backslash": t + j + b"/..\\..\\originals\\" + j,
        "to-canary": t + j + b"/..%2F..%2Fcanary.txt",
        "to-outer-canary": t + j + b"/..%2F..%2F..%2F..%2Fcanary.txt",
        "to-etc": t + j + b"/" + b"..%2F" * 30 + b"etc%2Fpasswd",
        "dotdot-job": t + b"..%2Foriginals/" + j,
        "dotdot-job-raw": t + b"../originals/" + j,
        "name-then-nul": t + j + b"/" + n + b"%00",
        "name-then-nul-traversal": t + j + b"/" + n + b"%00%2f..%2f..%2foriginals%2f" + j,
        "name-with-newline": t + j + b"/" + n + b"%0a",
        "absolute-name": t + j + b"/%2Fetc%2Fpasswd",
        "overlong-name": t + j + b"/" + b"a" * 4000 + b".jpg",
        "other-job": t + b"0" * 32 + b"/" + n,
        "nul-job": t + b"%00/" + n,
    }


def test_thumbnail_names_that_are_paths_are_404(
    service: Service, done_job: dict, canaries: list[bytes], jpeg: bytes
) -> None:
    name = done_job["thumbnails"][0]["name"]
    original = (service.originals_dir / done_job["id"]).read_bytes()
    secret = original[len(original) // 2 : len(original) // 2 + 64]  # a stretch of scan data, unique to it
    for kind, target in _thumbnail_targets(done_job["id"], name).items():
        for method in (b"GET", b"HEAD"):
            status, headers, body = raw_request(service, target, method)
            assert status != 500, f"{kind}: {body[:300]!r}"
            assert_refused(status, headers, body, canaries, secret, method)
    # The real name still answers, with the thumbnail's bytes (and nothing else).
    status, headers, body = raw_request(service, f"/v1/thumbnails/{done_job['id']}/{name}".encode())
    assert status == 200 and headers["content-type"].startswith("image/"), (status, headers)
    assert secret not in body


def test_stored_names_are_ids_and_sanitised_stems(service: Service, done_job: dict) -> None:
    """Every object the service wrote is named by a job id (and, for thumbnails, a sanitised stem)."""
    objects = service.data_dir / "objects"
    for path in (objects / "originals").iterdir():
        assert JOB_ID.match(path.name), path
    for folder in (objects / "thumbnails").iterdir():
        if folder.is_file():  # the canary planted above
            continue
        assert JOB_ID.match(folder.name), folder
        for path in folder.iterdir():
            assert THUMB_NAME.match(path.name), path
