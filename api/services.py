"""What the routes share, built once per process from the settings and kept on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from api.idempotency import IdempotencyKeys
from api.waiter import JobWaiter
from thumbify.jobs import JobStore
from thumbify.queue import JobQueue
from thumbify.settings import Settings
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


def services(request: Request) -> Services:
    return request.app.state.services
