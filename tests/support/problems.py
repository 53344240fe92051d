"""problem+json (RFC 9457) as the API answers it: the one check every test makes of a refusal, and of a job's
recorded error."""

from __future__ import annotations

import re

import httpx

PROBLEM_BASE = "https://thumbify.dev/problems/"
PROBLEM_TYPE = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, slug: str, *words: str) -> dict:
    """`r` is a problem+json answer of `status` and type `slug`, with a title and a detail for a person to read
    that mentions each of `words` (regular expressions, any case); its body is returned."""
    assert r.status_code == status, f"expected {status} {slug}, got {r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith(PROBLEM_TYPE), r.headers["content-type"]
    body = r.json()
    assert body["type"] == PROBLEM_BASE + slug, body
    assert body["status"] == status, body
    assert body["title"], body
    detail = body["detail"]
    assert isinstance(detail, str) and detail, body
    for word in words:
        assert re.search(word, detail, re.IGNORECASE), f"detail {detail!r} does not mention {word!r}"
    return body


def assert_names_field(r: httpx.Response, status: int, field: str | None, slug: str | None = None) -> dict:
    """A problem+json of `status`, of type `slug` where one is pinned (else any), naming `field` in its `errors`
    (`[{"field", "message"}]`) or in its detail; its body is returned."""
    assert r.status_code == status, f"expected {status} naming {field!r}, got {r.status_code}: {r.text[:500]}"
    body = assert_problem(r, status, slug or r.json()["type"].removeprefix(PROBLEM_BASE))
    if field:
        named = {e.get("field") for e in body.get("errors", [])}
        assert field in named or field in body["detail"], f"the problem does not name {field!r}: {body}"
    return body


def is_failed_corrupt(job: dict) -> None:
    """The job ended `failed` at its first attempt with a short corrupt-image error that says what is wrong."""
    assert job["status"] == "failed", f"a broken image should end failed: {job}"
    assert job["attempts"] == 1, f"a broken image is a permanent failure at once, not retried: {job}"
    assert job["thumbnails"] == []
    error = job["error"]
    assert error and error["type"] == PROBLEM_BASE + "corrupt-image", job
    detail = error["detail"]
    assert re.search(r"corrupt|truncated", detail, re.IGNORECASE), f"detail does not say what is wrong: {detail!r}"
    assert "Traceback" not in detail and "\n" not in detail and len(detail) < 400, detail
