"""Thumbnail downloads: immutable bytes with a strong ETag and a Last-Modified (the job's finish time)."""

from __future__ import annotations

import os
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import MalformedRangeHeader
from starlette.responses import RangeNotSatisfiable as StarletteRangeNotSatisfiable

from api.access_log import bind_job
from api.auth import Caller, authenticate
from api.problems import AUTH_PROBLEMS, STORAGE_PROBLEM_KINDS, problem_responses
from api.security import content_disposition
from api.services import Services, services
from thumbify.errors import Forbidden, MalformedRange, NotFound, RangeNotSatisfiable
from thumbify.signing import valid
from thumbify.spec import MEDIA_TYPES, Format
from thumbify.storage import THUMBNAIL_CACHE_CONTROL, thumbnail_key

router = APIRouter(prefix="/v1/thumbnails", tags=["thumbnails"])
Svc = Annotated[Services, Depends(services)]


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or etag in [part.strip().removeprefix("W/") for part in header.split(",")]


def _unmodified_since(header: str | None, modified: datetime) -> bool:
    """`If-Modified-Since` (an HTTP-date) is no earlier than `modified`, to the second; a date that cannot be read
    is ignored (RFC 9110 §13.1.3)."""
    try:
        since = parsedate_to_datetime(header) if header else None
    except (TypeError, ValueError):
        return False
    return since is not None and since.tzinfo is not None and modified.replace(microsecond=0) <= since


def _not_modified(request: Request, etag: str, modified: datetime) -> bool:
    """RFC 9110 §13.2.2: If-None-Match when sent, else If-Modified-Since."""
    if "if-none-match" in request.headers:
        return _etag_matches(request.headers["if-none-match"], etag)
    return _unmodified_since(request.headers.get("if-modified-since"), modified)


async def _caller(request: Request, svc: Services, expires: str | None, sig: str | None) -> Caller | None:
    """The key's caller; or None when a valid signed URL stands in for the key (403 if it is not valid)."""
    secret = svc.settings.url_signing_secret.get_secret_value()
    if svc.keys and (expires is not None or sig is not None):
        if secret and expires and sig and valid(secret, request.url.path, expires, sig):
            return None
        raise Forbidden("the signed URL is not valid or has expired")
    return await authenticate(request, svc, "read")


_ETAG = {"ETag": {"description": "Strong validator of the bytes", "required": True, "schema": {"type": "string"}}}
_LAST_MODIFIED = {
    "Last-Modified": {
        "description": "When the job finished (the same from every API replica)",
        "required": True,
        "schema": {"type": "string"},
    }
}
_DOCS = {
    "summary": "A thumbnail's bytes",
    "description": "Needs a key with the `read` scope that owns the job, or a signed URL (the `url` a job gives when "
    "the server has a signing secret).",
    # The endpoint builds its own responses: no JSON body is ever documented for a 200.
    "response_class": Response,
    # A key (either header), or none when the query carries a valid signed URL.
    "openapi_extra": {"security": [{"HTTPBearer": []}, {"APIKeyHeader": []}, {}]},
    "responses": {
        200: {
            "description": "The thumbnail",
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in MEDIA_TYPES.values()},
            "headers": {
                **_ETAG,
                **_LAST_MODIFIED,
                "Cache-Control": {"description": "Immutable", "required": True, "schema": {"type": "string"}},
                "Content-Disposition": {"description": "Inline, with a safe file name", "schema": {"type": "string"}},
            },
        },
        304: {
            "description": "Not modified: `If-None-Match` matched, or (without it) nothing changed since "
            "`If-Modified-Since`",
            "headers": {**_ETAG, **_LAST_MODIFIED},
        },
        **problem_responses(
            *AUTH_PROBLEMS,
            400,
            404,
            416,
            422,
            503,
            descriptions={
                400: "A malformed `Range` header",
                403: "The key lacks the `read` scope, or the signed URL is not valid or has expired",
                404: "No such thumbnail for a job of this key",
                416: "The `Range` is outside the thumbnail (`Content-Range` gives its size)",
                503: "The job store or the storage is unavailable; see Retry-After",
            },
            kinds=STORAGE_PROBLEM_KINDS,
        ),
    },
}


@router.head("/{job_id}/{name}", **_DOCS)
@router.get("/{job_id}/{name}", **_DOCS)
async def get_thumbnail(
    job_id: str,
    name: str,
    request: Request,
    svc: Svc,
    expires: Annotated[str | None, Query(description="Expiry (unix seconds) of a signed URL")] = None,
    sig: Annotated[str | None, Query(description="Signature of a signed URL")] = None,
) -> Response:
    bind_job(job_id)
    caller = await _caller(request, svc, expires, sig)
    job = await svc.store.get(job_id)
    if job is not None and caller is not None and not caller.sees(job.owner):
        job = None  # another key's job: the same answer as no job at all
    # The name is looked up in the job's own list: nothing the client sends ever becomes a path.
    thumb = next((t for t in job.thumbnails if t.name == name), None) if job else None
    if thumb is None:
        raise NotFound(f"no thumbnail {name!r} for job {job_id}")
    etag = f'"{thumb.etag}"'
    # A done job's thumbnails never change: its finish time (in Redis, so the same on every replica, whatever the
    # storage) dates them.
    modified = datetime.fromisoformat(job.updated_at)
    headers = {
        "ETag": etag,
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Cache-Control": THUMBNAIL_CACHE_CONTROL,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": content_disposition(thumb.name),
    }
    if _not_modified(request, etag, modified):
        return Response(status_code=304, headers=headers)
    stored = await svc.storage.stat(thumbnail_key(job_id, name))
    if stored is None:
        raise NotFound(f"thumbnail {name!r} of job {job_id} is gone")
    ttl = svc.settings.s3_redirect_ttl_s
    if ttl and (url := await svc.storage.presigned_get(stored.key, ttl)):
        # The bytes come from the bucket; the redirect itself is private and outlives no more than half the URL.
        return RedirectResponse(
            url, 307, {"Cache-Control": f"private, max-age={ttl // 2}", "X-Content-Type-Options": "nosniff"}
        )
    media_type = MEDIA_TYPES[Format(thumb.format)]
    if stored.path is not None:
        stat = await anyio.to_thread.run_sync(os.stat, stored.path)
        response = FileResponse(stored.path, media_type=media_type, headers=headers, stat_result=stat)
        _check_range(request, response, stat.st_size)
        return response
    return Response(await svc.storage.read(stored.key), media_type=media_type, headers=headers)


def _check_range(request: Request, response: FileResponse, size: int) -> None:
    """A Range the file response would refuse, refused here first as problem+json (starlette answers text/plain).
    Judged by starlette's own parser, under the same conditions it applies one (RFC 9110: a Range is ignored when
    If-Range does not match)."""
    http_range, if_range = request.headers.get("range"), request.headers.get("if-range")
    validators = (response.headers["etag"], response.headers["last-modified"])
    if http_range is None or (if_range is not None and if_range not in validators):
        return
    try:
        FileResponse._parse_range_header(http_range, size)
    except MalformedRangeHeader as exc:
        raise MalformedRange(f"the Range header {http_range[:100]!r} is malformed: {exc.content}") from None
    except StarletteRangeNotSatisfiable:
        raise RangeNotSatisfiable(f"the Range {http_range[:100]!r} is outside the {size:,} bytes", size=size) from None
