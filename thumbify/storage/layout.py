"""Where a job's files lie in storage: the one place object keys are made (every storage backend takes them as
they are). Like the Redis key names (thumbify.keyspace), they are the data's format and never change."""

from __future__ import annotations

_ORIGINALS, _THUMBNAILS = "originals/", "thumbnails/"
RESERVED_PREFIXES = (_ORIGINALS, _THUMBNAILS)  # never a job's source object (thumbify.sources)


def original_key(job_id: str) -> str:
    """The uploaded file."""
    return _ORIGINALS + job_id


def thumbnails_prefix(job_id: str) -> str:
    """The folder of a job's thumbnails (`delete_prefix` takes it as a folder: another job's is never touched)."""
    return _THUMBNAILS + job_id


def thumbnail_key(job_id: str, name: str) -> str:
    return f"{thumbnails_prefix(job_id)}/{name}"


def job_prefixes(job_id: str) -> tuple[str, str]:
    """Everything a job has in storage, for `delete_prefix`."""
    return original_key(job_id), thumbnails_prefix(job_id)


def is_thumbnail(key: str) -> bool:
    return key.startswith(_THUMBNAILS)
