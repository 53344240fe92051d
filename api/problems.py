"""RFC 9457 problem+json for every error the API returns, each with a stable `type`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from thumbify import errors as e
from thumbify.errors import PROBLEM_BASE, ThumbifyError, invalid_options, message_of

log = logging.getLogger("thumbify.api")
MEDIA_TYPE = "application/problem+json"


# -- the documented shape (OpenAPI) ---------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(description="The option, parameter or header at fault (dotted for nested ones)")
    message: str


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: `type` is stable per kind of error; some kinds add members (`errors`, `checks`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A stable URI naming the kind of error")
    title: str = Field(description="A short summary of the kind of error")
    status: int = Field(description="The HTTP status code", ge=100, le=599)
    detail: str = Field(description="What went wrong with this request, for a person to read")
    instance: str | None = Field(None, description="The path of the request")
    errors: list[FieldError] | None = Field(None, description="Each invalid field (invalid-options, 422)")
    checks: dict[str, str] | None = Field(None, description="Each dependency's state (not-ready, 503)")


PROBLEM_REF = "#/components/schemas/ProblemDetails"
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "How to authenticate (`Bearer`)",
        "required": True,
        "schema": {"type": "string"},
    }
}
_CONTENT_RANGE = {
    "Content-Range": {
        "description": "The size of the thumbnail: `bytes */<size>`",
        "required": True,
        "schema": {"type": "string"},
    }
}
PROBLEM_DESCRIPTIONS = {
    400: "Malformed request",
    401: "No API key, or not a valid one",
    403: "The key lacks the scope this operation needs",
    404: "No such resource for this key",
    406: "`format=auto`, and the `Accept` header takes none of the output formats",
    408: "The upload stalled",
    409: "Conflict",
    413: "Too many bytes",
    415: "Not a media type we accept",
    410: "Gone",
    416: "Range not satisfiable",
    422: "Invalid request: bad options or parameters",
    429: "Over the key's request rate; see Retry-After",
    501: "Needs S3 storage: this server keeps its files in a local folder",
    503: "The job store is unavailable; see Retry-After",
}
AUTH_PROBLEMS = (401, 403, 429)
# The kinds of error each status stands for, unless an operation says otherwise.
PROBLEM_KINDS: dict[int, tuple[type[ThumbifyError], ...]] = {
    400: (e.MalformedRange,),
    401: (e.Unauthorized,),
    403: (e.Forbidden,),
    404: (e.NotFound,),
    406: (e.NotAcceptable,),
    408: (e.UploadTimeout,),
    409: (e.Conflict,),
    410: (e.UploadExpired,),
    413: (e.TooLarge,),
    415: (e.UnsupportedMedia,),
    416: (e.RangeNotSatisfiable,),
    422: (e.InvalidOptions,),
    429: (e.RateLimited,),
    501: (e.DirectUploadsUnavailable,),
    503: (e.Unavailable,),
}
# What refuses an upload, beyond those.
UPLOAD_PROBLEM_KINDS: dict[int, tuple[type[ThumbifyError], ...]] = {
    422: (
        e.InvalidOptions,
        e.InvalidUpload,
        e.TooManyPixels,
        e.SideTooLong,
        e.TooManyFrames,
        e.AnimationTooLarge,
        e.CorruptImage,
        e.IdempotencyKeyReused,
        e.InvalidCallbackUrl,
        e.SourceMissing,
    ),
    503: (e.QueueFull, e.StorageFailed, e.Unavailable),
}
# What refuses a batch as a whole; a file refused alone is one of its `rejected` entries instead.
BATCH_PROBLEM_KINDS: dict[int, tuple[type[ThumbifyError], ...]] = {
    413: (e.TooManyFiles, e.TooLarge),
    422: (e.InvalidOptions, e.InvalidUpload, e.InvalidCallbackUrl),
    503: (e.QueueFull, e.StorageFailed, e.Unavailable),
}
# Operations that touch the stored files can also find the storage failing.
STORAGE_PROBLEM_KINDS: dict[int, tuple[type[ThumbifyError], ...]] = {503: (e.StorageFailed, e.Unavailable)}
_SIZES_ERROR = "'0' is not a size: use a longest side like 256 or a box like 320x200"
# A sample answer of each kind: its detail, and the members that kind adds.
EXAMPLES: dict[type[ThumbifyError], dict[str, Any]] = {
    e.Unauthorized: {"detail": "send an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`"},
    e.Forbidden: {"detail": "the key 'viewer' lacks the 'submit' scope"},
    e.NotFound: {"detail": "no job 019b3a5c9d2e4f60718293a4b5c6d7e8"},
    e.NotAcceptable: {
        "detail": "format=auto: the Accept header (image/gif) takes none of image/jpeg, image/webp, image/png, "
        "image/avif"
    },
    e.Conflict: {"detail": "a request with this Idempotency-Key is still in progress; retry when it has finished"},
    e.UploadTimeout: {"detail": "the upload stalled: nothing arrived for 60 s"},
    e.IdempotencyKeyReused: {
        "detail": "this Idempotency-Key was first sent with another request (other options or another file); use a "
        "new key for a new request"
    },
    e.InvalidCallbackUrl: {
        "detail": "callback_url host '10.0.0.7' resolves to 10.0.0.7, an internal address; name it in "
        "THUMBIFY_CALLBACK_ALLOW_HOSTS to allow it"
    },
    e.MalformedRange: {
        "detail": "the Range header 'bytes=9-2' is malformed: Range header: start must be less than end"
    },
    e.RangeNotSatisfiable: {"detail": "the Range 'bytes=5000-' is outside the 2,034 bytes", "size": 2034},
    e.TooLarge: {"detail": "the upload is larger than the limit of 209,715,200 bytes"},
    e.TooManyFiles: {"detail": "a batch takes at most 100 files", "limit": 100},
    e.UnsupportedMedia: {
        "detail": "not an image we accept: JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF (judged by content)"
    },
    e.InvalidOptions: {"detail": f"sizes: {_SIZES_ERROR}", "errors": [{"field": "sizes", "message": _SIZES_ERROR}]},
    e.TooManyPixels: {
        "detail": "40000x30000 is 1,200,000,000 pixels; the limit is 1,000,000,000",
        "width": 40000,
        "height": 30000,
    },
    e.SideTooLong: {
        "detail": "100000x8 has a side of 100,000 pixels; the limit is 65,500",
        "width": 100000,
        "height": 8,
    },
    e.TooManyFrames: {"detail": "the GIF has 2,000 frames; the limit is 1,000", "frames": 2000, "limit": 1000},
    e.AnimationTooLarge: {
        "detail": "animated=true: 200 frames at 640x640 make 81,920,000 output pixels; the limit is 40,000,000 "
        "(fewer or smaller sizes, or animated=false for the first frame)",
        "pixels": 81920000,
        "limit": 40000000,
    },
    e.CorruptImage: {"detail": "cannot read the jpeg header: VipsJpeg: Premature end of input file"},
    e.InvalidUpload: {"detail": "send the image as multipart/form-data with a `file` part"},
    e.RateLimited: {"detail": "the key 'ci' is over its request rate; retry in 1s"},
    e.QueueFull: {"detail": "the queue holds 10,000 or more jobs; retry later"},
    e.Unavailable: {"detail": "the job store is unavailable; retry shortly"},
    e.StorageFailed: {"detail": "S3 write of 'originals/019b3a5c9d2e4f60718293a4b5c6d7e8' failed: SlowDown: slow down"},
    e.DirectUploadsUnavailable: {
        "detail": "direct uploads and jobs from stored objects need S3 storage (THUMBIFY_STORAGE=s3); POST the file "
        "to /v1/jobs instead"
    },
    e.UploadNotReceived: {
        "detail": "the file is not in the bucket yet: send it as POST /v1/uploads said, then complete"
    },
    e.UploadExpired: {"detail": "the upload's URLs expired at 2026-12-05T12:15:00.000Z; start a new upload"},
    e.SourceMissing: {
        "detail": "no object 'photos/2024/a.jpg' in the bucket",
        "errors": [{"field": "source_key", "message": "no object 'photos/2024/a.jpg' in the bucket"}],
    },
    e.NotReady: {
        "detail": "redis: ok; storage: error: PermissionError: [Errno 13] Permission denied",
        "checks": {"redis": "ok", "storage": "error: PermissionError: [Errno 13] Permission denied"},
    },
}


def example(kind: type[ThumbifyError]) -> dict[str, Any]:
    """A sample problem of `kind`, as the API would answer it."""
    return {"type": PROBLEM_BASE + kind.slug, "title": kind.title, "status": kind.status} | EXAMPLES[kind]


def problem_responses(
    *statuses: int,
    descriptions: dict[int, str] | None = None,
    kinds: dict[int, tuple[type[ThumbifyError], ...]] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the given error statuses: each an `application/problem+json` ProblemDetails with an
    example of each kind of error it stands for, and the headers that status always carries (`WWW-Authenticate` on
    401, `Content-Range` on 416, `Retry-After` on 429 and 503)."""
    descriptions = {**PROBLEM_DESCRIPTIONS, **(descriptions or {})}
    kinds = {**PROBLEM_KINDS, **(kinds or {})}
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        samples = {kind.slug: {"summary": kind.title, "value": example(kind)} for kind in kinds[status]}
        response: dict[str, Any] = {
            "description": descriptions.get(status, "Error"),
            "content": {MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}, "examples": samples}},
        }
        headers = {401: _WWW_AUTHENTICATE, 416: _CONTENT_RANGE, 429: _RETRY_AFTER, 503: _RETRY_AFTER}.get(status)
        if headers:
            response["headers"] = headers
        responses[status] = response
    return responses


def _document(app: FastAPI) -> None:
    """Put ProblemDetails (which the routes reference from their `responses`) into the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        definition = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(definition.pop("$defs", {}))
        components["ProblemDetails"] = definition
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def problem(status: int, slug: str, title: str, detail: str, instance: str | None = None, headers=None, **extra):
    body = problem_body(status, slug, title, detail, instance, **extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def problem_body(status: int, slug: str, title: str, detail: str, instance: str | None = None, **extra) -> dict:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body


def problem_of(exc: ThumbifyError, instance: str | None = None) -> dict[str, Any]:
    """The problem+json body that answers `exc`."""
    return problem_body(exc.status, exc.slug, exc.title, exc.detail, instance, **exc.extra)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "request"


def install(app: FastAPI) -> None:
    _document(app)

    @app.exception_handler(ThumbifyError)
    async def _thumbify(request: Request, exc: ThumbifyError):
        body = problem_of(exc, request.url.path)
        return JSONResponse(body, status_code=exc.status, media_type=MEDIA_TYPE, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(tuple(err["loc"])), "message": message_of(err)} for err in exc.errors()]
        invalid = invalid_options(errors)
        return problem(invalid.status, invalid.slug, invalid.title, invalid.detail, request.url.path, errors=errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a JSON body that is not UTF-8: a bad body, as any other (422 naming it).
            errors = [{"field": "body", "message": "not a JSON document (or not UTF-8)"}]
            invalid = invalid_options(errors)
            return problem(invalid.status, invalid.slug, invalid.title, invalid.detail, request.url.path, errors=errors)
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(exc.status_code, slug, str(exc.detail), str(exc.detail), request.url.path, exc.headers)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception):
        log.warning("redis unavailable: %s", exc)
        return problem(
            503,
            "unavailable",
            "Service unavailable",
            "the job store is unavailable; retry shortly",
            request.url.path,
            {"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "Internal error", "an unexpected error occurred", request.url.path)
