"""What the routes share, built once per process from the settings and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from api.idempotency import IdempotencyKeys
from api.waiter import JobWaiter
from thumbify.batches import BatchStore
from thumbify.jobs import JobStore
from thumbify.keys import KeyRing
from thumbify.queue import JobQueue
from thumbify.ratelimit import Limits
from thumbify.settings import Settings
from thumbify.signing import linker
from thumbify.storage import Storage


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

    def link(self, path: str) -> str:
        """A thumbnail's URL: signed for `signed_url_ttl_s` when a signing secret is set, else the bare path."""
        return linker(self.settings)(path)


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop on every request.
    return request.app.state.services
