"""Typed errors (as weserv's): each maps one-to-one to a problem+json `type` and an HTTP status."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://thumbify.dev/problems/"


class ThumbifyError(Exception):
    """Base: `slug` is the stable problem type, `status` the HTTP status, `permanent` whether a retry can help."""

    slug = "internal"
    title = "Internal error"
    status = 500
    permanent = False

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.slug

    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries: when to retry a 503 or 429, how to authenticate after a 401."""
        return {"Retry-After": "5"} if self.status == 503 else {}

    def as_error(self) -> dict[str, str]:
        """The form stored in a failed job's `error` field."""
        return {"type": self.type_uri, "detail": self.detail}


class UnsupportedMedia(ThumbifyError):
    slug, title, status, permanent = "unsupported-media", "Not an image we accept", 415, True


class TooLarge(ThumbifyError):
    slug, title, status, permanent = "too-large", "Upload too large", 413, True


class TooManyFiles(ThumbifyError):
    """A batch of more `file` parts than `max_batch_files`: the request is refused whole (413, as too many bytes)."""

    slug, title, status, permanent = "too-many-files", "Too many files", 413, True


class TooManyPixels(ThumbifyError):
    slug, title, status, permanent = "too-many-pixels", "Image has too many pixels", 422, True


class CorruptImage(ThumbifyError):
    slug, title, status, permanent = "corrupt-image", "Image is corrupt or truncated", 422, True


class InvalidOptions(ThumbifyError):
    slug, title, status, permanent = "invalid-options", "Invalid options", 422, True


class InvalidCallbackUrl(ThumbifyError):
    """A callback URL we will not POST to: not https (unless allowed), or it resolves to an internal address (SSRF)."""

    slug, title, status, permanent = "invalid-callback-url", "Invalid callback URL", 422, True


class NotFound(ThumbifyError):
    slug, title, status, permanent = "not-found", "Not found", 404, True


class NotAcceptable(ThumbifyError):
    """`format=auto` and the Accept header takes none of the output formats."""

    slug, title, status, permanent = "not-acceptable", "Not acceptable", 406, True


class Unavailable(ThumbifyError):
    slug, title, status = "unavailable", "Service unavailable", 503


class InvalidUpload(ThumbifyError):
    slug, title, status, permanent = "invalid-upload", "Invalid upload", 422, True


class UploadTimeout(ThumbifyError):
    """The client stopped sending its upload: dropped, and the connection closed (the rest will never come)."""

    slug, title, status = "upload-timeout", "Upload timed out", 408

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class IdempotencyKeyReused(ThumbifyError):
    """An Idempotency-Key sent again with another request (other options or another file)."""

    slug, title, status, permanent = "idempotency-key-reused", "Idempotency-Key reused", 422, True


class MalformedRange(ThumbifyError):
    slug, title, status, permanent = "malformed-range", "Malformed Range header", 400, True


class RangeNotSatisfiable(ThumbifyError):
    """Raised with `size=` (the thumbnail's bytes), which the problem and its `Content-Range` carry."""

    slug, title, status, permanent = "range-not-satisfiable", "Range not satisfiable", 416, True

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.extra['size']}"}


class QueueFull(ThumbifyError):
    slug, title, status = "queue-full", "Queue full", 503


class Conflict(ThumbifyError):
    slug, title, status = "conflict", "Conflict", 409


class NotReady(ThumbifyError):
    """A dependency (Redis, storage) does not answer: `/readyz`, with `checks` saying which and why."""

    slug, title, status = "not-ready", "Not ready", 503


# -- direct uploads and jobs from stored objects (api/routes/uploads.py) ---------------------------------------


class DirectUploadsUnavailable(ThumbifyError):
    """Direct uploads and jobs from stored objects need S3 storage (a local folder has no presigned URLs)."""

    slug, title, status, permanent = "direct-uploads-unavailable", "Direct uploads unavailable", 501, True


class UploadNotReceived(ThumbifyError):
    """`complete` before the object reached the bucket: the upload stays open."""

    slug, title, status = "upload-not-received", "Upload not received", 409


class UploadExpired(ThumbifyError):
    slug, title, status, permanent = "upload-expired", "Upload expired", 410, True


class SourceMissing(ThumbifyError):
    slug, title, status, permanent = "source-missing", "Source object missing", 422, True


# -- the worker's errors: stored in a failed job's `error`, never an HTTP answer of their own -------------------------


class OriginalMissing(ThumbifyError):
    slug, title, status, permanent = "original-missing", "Original missing", 410, True


class OriginalChanged(ThumbifyError):
    """The object in the bucket is not the one the API checked (re-uploaded to a still-valid presigned URL)."""

    slug, title, status, permanent = "original-changed", "Original changed after it was checked", 409, True


class ImageTimeout(ThumbifyError):
    """The image took longer than `image_timeout_s`: its render process was stopped and replaced."""

    slug, title, status, permanent = "image-timeout", "Image took too long to process", 422, True


class WorkerCrashed(ThumbifyError):
    """The render process died under the image (a crash or the OOM killer). Transient, so it is retried, but each
    try counts: a poison image ends in the dead-letter stream after `max_attempts`."""

    slug, title, status = "worker-crashed", "Render process crashed", 500


class RenderFailed(ThumbifyError):
    """The renderer raised something unexpected (not a decode error): retried, counted."""

    slug, title, status = "render-error", "Rendering failed", 500


class StorageFailed(ThumbifyError):
    """Storage refused a read or write of a job's files: retried with backoff."""

    slug, title, status = "storage-error", "Storage unavailable", 503


class GaveUp(ThumbifyError):
    """Attempts used up without a recorded error (the worker processing it kept dying)."""

    slug, title, status, permanent = "gave-up", "Gave up", 500, True


# -- authentication and per-key limits ----------------------------------------------------------------------------


class Unauthorized(ThumbifyError):
    slug, title, status, permanent = "unauthorized", "Unauthorized", 401, True

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="thumbify"'}


class Forbidden(ThumbifyError):
    slug, title, status, permanent = "forbidden", "Forbidden", 403, True


class RateLimited(ThumbifyError):
    slug, title, status = "rate-limited", "Too many requests", 429

    def __init__(self, detail: str, retry_after: int, **extra: object) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# -- input limits judged from the header (thumbify/probe.py) -----------------------------------------------------


class SideTooLong(ThumbifyError):
    slug, title, status, permanent = "side-too-long", "Image side too long", 422, True


class TooManyFrames(ThumbifyError):
    slug, title, status, permanent = "too-many-frames", "Image has too many frames or pages", 422, True


class AnimationTooLarge(ThumbifyError):
    """`animated=true` over the output pixel cap, all frames and sizes counted (thumbify/animation.py)."""

    slug, title, status, permanent = "animation-too-large", "Animated thumbnails too large", 422, True


def message_of(error: dict[str, Any]) -> str:
    """One pydantic error's message as a person reads it: a validator's own words, without pydantic's `Value error, `
    prefix."""
    raised = error.get("ctx", {}).get("error")
    if error.get("type") == "value_error" and raised is not None:
        return str(raised)
    return error["msg"]


def invalid_options(errors: list[dict[str, str]]) -> InvalidOptions:
    """InvalidOptions naming each bad field (`{"field", "message"}`), its detail listing them all."""
    return InvalidOptions("; ".join(f"{e['field']}: {e['message']}" for e in errors), errors=errors)
