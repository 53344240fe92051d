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


class Storage(Protocol):
    async def put_file(self, key: str, path: Path) -> None:
        """Move a finished spool file to `key`, atomically: readers see all of it or nothing."""

    async def put_bytes(self, key: str, data: bytes) -> None:
        """Write `data` to `key`, atomically."""

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A local path holding the object's bytes for the duration of the context."""

    async def stat(self, key: str) -> StoredObject | None: ...

    async def read(self, key: str) -> bytes: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many."""

    async def ping(self) -> None:
        """Raise if storage cannot be written."""

    async def presigned_get(self, key: str, ttl_s: int) -> str | None:
        """A URL a client may fetch the object from directly for `ttl_s` seconds, or None where there is none."""

    async def aclose(self) -> None:
        """Release connections (the process is stopping)."""
