"""What the routes share, built once per process from the settings and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from redis.asyncio import Redis

from api.idempotency import IdempotencyKeys
from api.waiter import JobWaiter
from thumbify.batches import BatchStore
from thumbify.errors import DirectUploadsUnavailable
from thumbify.jobs import JobStore
from thumbify.keys import KeyRing
from thumbify.presets import Presets
from thumbify.queue import JobQueue
from thumbify.ratelimit import Limits
from thumbify.settings import Settings
from thumbify.signing import linker
from thumbify.storage import Storage
from thumbify.uploads import UploadStore

if TYPE_CHECKING:
    from thumbify.storage.presign import Presigner

# How long an ingested object's job is remembered (so ingesting it again skips it) where retention keeps jobs forever.
INGEST_MEMORY_S = 365 * 24 * 3600


@dataclass
class Services:
    settings: Settings
    redis: Redis
    store: JobStore
    queue: JobQueue
    storage: Storage
    waiter: JobWaiter
    idempotency: IdempotencyKeys
    keys: KeyRing
    limits: Limits
    batches: BatchStore
    uploads: UploadStore
    presigner: Presigner | None  # None on local storage: no direct uploads
    ingests: IdempotencyKeys  # (owner, object and options) -> the job made of it
    presets: Presets = field(default_factory=Presets)

    def s3(self) -> Presigner:
        """The presigner; 501 on local storage."""
        if self.presigner is None:
            raise DirectUploadsUnavailable(
                "direct uploads and jobs from stored objects need S3 storage (THUMBIFY_STORAGE=s3); POST the file "
                "to /v1/jobs instead"
            )
        return self.presigner

    def link(self, path: str) -> str:
        """A thumbnail's URL: signed for `signed_url_ttl_s` when a signing secret is set, else the bare path."""
        return linker(self.settings)(path)


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    return request.app.state.services


def presigner_for(storage: Storage, settings: Settings) -> Presigner | None:
    if settings.storage != "s3":
        return None
    from thumbify.storage.presign import Presigner

    return Presigner(storage, settings.s3_public_endpoint_url)  # type: ignore[arg-type]
