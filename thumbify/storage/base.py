"""What both processes need from storage. Keys are server-made (thumbify.storage.layout)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# A thumbnail never changes under its name (a job's files are written once), so any cache may keep it.
THUMBNAIL_CACHE_CONTROL = "public, max-age=31536000, immutable"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    path: Path | None = None  # set where the bytes are a local file the server may send as is
    etag: str = ""  # S3's ETag: which version of the object this is ("" on local storage)


class Storage(Protocol):
    async def put_file(self, key: str, path: Path) -> None:
        """Move a finished spool file to `key`, atomically: readers see all of it or nothing."""

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` to `key`, atomically."""

    def local_copy(self, key: str, etag: str = "") -> AbstractAsyncContextManager[Path]:
        """A local path holding the object's bytes for the duration of the context; with `etag`, OriginalChanged
        if the object is no longer that version."""

    async def stat(self, key: str) -> StoredObject | None: ...

    async def read(self, key: str) -> bytes: ...

    async def read_range(self, key: str, start: int, length: int, etag: str = "") -> bytes:
        """Up to `length` bytes from `start` (fewer at the end); with `etag`, OriginalChanged if the object is no
        longer that version."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many."""

    async def discard(self, key: str) -> None:
        """The object at `key` deleted, and any unfinished upload to it abandoned."""

    async def ping(self) -> None:
        """Raise if storage cannot be written."""

    async def presigned_get(self, key: str, ttl_s: int) -> str | None:
        """A URL a client may fetch the object from directly for `ttl_s` seconds, or None where there is none."""

    async def aclose(self) -> None:
        """Release connections (the process is stopping)."""
