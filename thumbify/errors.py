"""Typed errors (as weserv's): each maps one-to-one to a problem+json `type` and an HTTP status."""

from __future__ import annotations

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

    def as_error(self) -> dict[str, str]:
        """The form stored in a failed job's `error` field."""
        return {"type": self.type_uri, "detail": self.detail}


class UnsupportedMedia(ThumbifyError):
    slug, title, status, permanent = "unsupported-media", "Not an image we accept", 415, True


class TooLarge(ThumbifyError):
    slug, title, status, permanent = "too-large", "Upload too large", 413, True


class TooManyPixels(ThumbifyError):
    slug, title, status, permanent = "too-many-pixels", "Image has too many pixels", 422, True


class CorruptImage(ThumbifyError):
    slug, title, status, permanent = "corrupt-image", "Image is corrupt or truncated", 422, True


class InvalidOptions(ThumbifyError):
    slug, title, status, permanent = "invalid-options", "Invalid options", 422, True


class NotFound(ThumbifyError):
    slug, title, status, permanent = "not-found", "Not found", 404, True


class Unavailable(ThumbifyError):
    slug, title, status = "unavailable", "Service unavailable", 503


class InvalidUpload(ThumbifyError):
    slug, title, status, permanent = "invalid-upload", "Invalid upload", 422, True


class QueueFull(ThumbifyError):
    slug, title, status = "queue-full", "Queue full", 503


class Conflict(ThumbifyError):
    slug, title, status = "conflict", "Conflict", 409
