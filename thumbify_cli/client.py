"""A small synchronous client for the Thumbify API (httpx), for scripts and the `thumbify submit` / `ingest` commands.

    with ThumbifyClient("http://127.0.0.1:8000", key="...") as thumbify:
        job = thumbify.submit(Path("big.tif"), {"sizes": "256,512", "format": "webp"}, wait_s=30)
        job, replayed = thumbify.ingest("photos/2024/a.jpg", {"sizes": "256"})

A file up to `direct_threshold` bytes is streamed to `POST /v1/jobs`; a larger one goes straight to the bucket
(`POST /v1/uploads`, presigned PUTs, `complete`), so its bytes never pass through the API. A server without S3
storage answers that with 501 (an older server with 404): the client then streams the file instead, and keeps
doing so for its lifetime. Every refusal raises `ThumbifyError` with the server's problem+json. It imports nothing
of the server's packages, so it is cheap to import and can be copied into another project alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

MiB = 1024 * 1024
DIRECT_THRESHOLD = 32 * MiB  # bytes above which a file goes direct to the bucket
PART_BYTES = 64 * MiB  # a direct upload over this goes in parts of about this size
READ_CHUNK = MiB  # what is held in memory of a file at once
MAX_PREFER_WAIT_S = 30  # the most `Prefer: wait` and `?wait=` the API honours
TERMINAL = ("done", "failed")
RETRIES = 5  # tries of a replayable request the API answered 429 or 503 (with Retry-After)


class ThumbifyError(Exception):
    """The API (or the bucket) refused a request: `status` is the HTTP status, `problem` the problem+json body
    (`type`, `title`, `status`, `detail`, and per type more, such as `errors`)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.get('detail') or problem.get('title') or 'refused'}")

    @property
    def slug(self) -> str:
        """The problem type's last segment: `too-large`, `direct-uploads-unavailable`, ..."""
        return str(self.problem.get("type", "")).rsplit("/", 1)[-1]

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or "")


def form_values(options: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """Job options as the API takes them (strings, or lists of strings); None means "the server's default"."""
    return {
        name: [str(v) for v in value] if isinstance(value, list | tuple) else str(value)
        for name, value in options.items()
        if value is not None
    }


def part_count(size: int, part_bytes: int = PART_BYTES) -> int:
    """Parts of a direct upload: one up to `part_bytes`, else about `part_bytes` each."""
    return math.ceil(size / part_bytes) if size > part_bytes else 1


def file_slice(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """`length` bytes of `path` from `offset`, READ_CHUNK at a time (a part is never read whole)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        while length > 0:
            chunk = fh.read(min(READ_CHUNK, length))
            if not chunk:
                raise OSError(f"{path} is shorter than expected: it changed while being uploaded")
            length -= len(chunk)
            yield chunk


def _problem_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    # Not problem+json: the bucket's XML error, or a proxy's page.
    return {"title": response.reason_phrase, "status": response.status_code, "detail": response.text[:500]}


def _unreachable(exc: httpx.TransportError) -> str:
    where = exc.request.url.copy_with(query=None) if exc.request else "the bucket"
    return f"the bucket at {where} did not answer ({exc}): the server's S3_PUBLIC_ENDPOINT_URL must be reachable here"


def _checked(response: httpx.Response, *expected: int) -> httpx.Response:
    if response.status_code not in expected:
        raise ThumbifyError(response.status_code, _problem_of(response))
    return response


def _prefer(wait_s: float | None) -> dict[str, str]:
    return {"Prefer": f"wait={min(MAX_PREFER_WAIT_S, math.ceil(wait_s))}"} if wait_s and wait_s > 0 else {}


class ThumbifyClient:
    """One API server and key. `direct_threshold`: files over this many bytes go direct to the bucket (0: never);
    `part_bytes`: a direct upload over this many bytes goes in parts of about this size (S3's least is 5 MiB)."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        direct_threshold: int = DIRECT_THRESHOLD,
        part_bytes: int = PART_BYTES,
        timeout: float = 120.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._api = httpx.Client(base_url=url, headers=headers, timeout=timeout)
        # Presigned URLs carry their own signature: the API key must not travel to the bucket.
        self._bucket = httpx.Client(timeout=timeout)
        self.direct_threshold = direct_threshold
        self.part_bytes = part_bytes
        self.direct_available = True  # False once the server said 501: it has no bucket to send to

    def __enter__(self) -> ThumbifyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()
        self._bucket.close()

    # -- jobs ------------------------------------------------------------------------------------------------------

    def submit(self, path: Path, options: Mapping[str, Any] | None = None, wait_s: float | None = None) -> dict:
        """Upload one file and return its job; with `wait_s`, the job once it ended (or as it is when that passed)."""
        path = Path(path)
        options = form_values(options or {})
        deadline = time.monotonic() + (wait_s or 0)
        size = path.stat().st_size
        upload = None
        if self.direct_available and 0 < self.direct_threshold < size:
            upload = self._create_upload(path, size, options)
            self.direct_available = upload is not None
        if upload is None:
            job = self._submit_streamed(path, options, wait_s)
        else:
            job = self._send_direct(path, size, upload, wait_s)
        return self._finish(job, deadline) if wait_s else job

    def submit_batch(self, paths: list[Path], options: Mapping[str, Any] | None = None) -> dict:
        """Upload files as one batch (`POST /v1/batches`, always streamed): `{id, status, counts, rejected, jobs}`."""
        handles = [("file", (p.name, p.open("rb"), "application/octet-stream")) for p in map(Path, paths)]
        try:
            response = self._api.post("/v1/batches", files=handles, data=form_values(options or {}))
        finally:
            for _, (_, handle, _) in handles:
                handle.close()
        return _checked(response, 202).json()

    def ingest(self, source_key: str, options: Mapping[str, Any] | None = None) -> tuple[dict, bool]:
        """A job for an object already in the bucket (`source_key`, relative to the server's S3 prefix); `replayed`
        is True when the same object with the same options already has one (nothing new was queued)."""
        body = {"source_key": source_key, "options": form_values(options or {})}
        response = _checked(self._request("POST", "/v1/jobs", json=body), 200, 202)
        return response.json(), response.headers.get("Idempotent-Replayed", "").lower() == "true"

    def presets(self) -> list[dict]:
        """The server's presets: each `{"name", "options"}`."""
        return _checked(self._request("GET", "/v1/presets"), 200).json()["items"]

    def job(self, job_id: str) -> dict:
        return _checked(self._request("GET", f"/v1/jobs/{job_id}"), 200).json()

    def wait(self, job_id: str, deadline: float) -> dict:
        """The job once it is `done` or `failed`, long-polling until `deadline` (a `time.monotonic()` value); as it
        is then if it has not ended."""
        while True:
            remaining = deadline - time.monotonic()
            wait = max(0, min(MAX_PREFER_WAIT_S, math.ceil(remaining)))
            job = _checked(self._request("GET", f"/v1/jobs/{job_id}", params={"wait": wait}), 200).json()
            if job["status"] in TERMINAL or remaining <= 0:
                return job

    def _finish(self, job: dict, deadline: float) -> dict:
        return job if job["status"] in TERMINAL else self.wait(job["id"], deadline)

    def _submit_streamed(self, path: Path, options: dict, wait_s: float | None) -> dict:
        # httpx streams an open file in the multipart body: memory stays bounded whatever its size.
        with path.open("rb") as fh:
            files = {"file": (path.name, fh, "application/octet-stream")}
            response = self._api.post("/v1/jobs", files=files, data=options, headers=_prefer(wait_s))
        return _checked(response, 201, 202).json()

    # -- direct to the bucket --------------------------------------------------------------------------------------

    def _create_upload(self, path: Path, size: int, options: dict) -> dict | None:
        """The presigned upload for `path`; None where the server takes none (501: no bucket, its storage is a
        local folder; 404 or 405: a server older than direct uploads)."""
        request = {
            "filename": path.name,
            "size": size,
            "method": "PUT",
            "parts": part_count(size, self.part_bytes),
            "options": options,
        }
        response = self._request("POST", "/v1/uploads", json=request)
        if response.status_code in (404, 405, 501):
            return None
        return _checked(response, 201).json()

    def _send_direct(self, path: Path, size: int, upload: dict, wait_s: float | None) -> dict:
        """Send the bytes to the bucket, then complete: the job."""
        try:
            parts = self._send_parts(path, upload) if "parts" in upload else self._send_whole(path, size, upload)
        except BaseException as exc:
            self._abandon(upload["id"])  # nothing left in the bucket of an upload that will never be completed
            if isinstance(exc, httpx.TransportError):
                raise ThumbifyError(502, {"title": "The bucket did not answer", "detail": _unreachable(exc)}) from exc
            raise
        body = {"parts": parts} if parts else {}
        complete = upload.get("complete_url") or f"/v1/uploads/{upload['id']}/complete"
        response = self._request("POST", complete, json=body, headers=_prefer(wait_s))
        return _checked(response, 201, 202).json()

    def _send_whole(self, path: Path, size: int, upload: dict) -> None:
        headers = {**upload.get("headers", {}), "Content-Length": str(size)}
        response = self._bucket.put(upload["url"], content=file_slice(path, 0, size), headers=headers)
        _checked(response, 200, 201, 204)

    def _send_parts(self, path: Path, upload: dict) -> list[dict]:
        """PUT each part from its own stretch of the file; the ETags `complete` needs, in part order."""
        sent, offset = [], 0
        for part in sorted(upload["parts"], key=lambda p: p["number"]):
            size = part["size"]
            content = file_slice(path, offset, size)
            response = _checked(
                self._bucket.put(part["url"], content=content, headers={"Content-Length": str(size)}), 200
            )
            sent.append({"number": part["number"], "etag": response.headers["ETag"]})
            offset += size
        return sent

    def _abandon(self, upload_id: str) -> None:
        try:
            self._api.delete(f"/v1/uploads/{upload_id}")
        except httpx.HTTPError:
            pass  # the retention sweep removes it once its URLs have expired

    # -- transport -------------------------------------------------------------------------------------------------

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """A request whose body can be sent again (JSON or none), retried while the API asks to come back later
        (429 or 503 with Retry-After: a full queue, a rate limit)."""
        attempt = 1
        while True:
            response = self._api.request(method, url, **kwargs)
            retry_after = response.headers.get("Retry-After", "")
            if response.status_code not in (429, 503) or not retry_after.isdigit() or attempt == RETRIES:
                return response
            attempt += 1
            time.sleep(min(int(retry_after), MAX_PREFER_WAIT_S))
