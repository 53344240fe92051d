"""Long-poll support: one Redis pub/sub subscription per API process wakes every request waiting on a job.

A waiting request holds no Redis connection: it sleeps on its event until the job ends or its deadline passes, and
reads the job once more then (`read_until`). Only the end of a job (done, failed, or deleted) wakes its waiters, or
a batch's (`batch:<id> completed` or deleted); a lost subscription wakes every waiter once it is back, as anything
may have ended meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from thumbify.redis_conn import cancel_and_wait, raise_if_cancelled
from thumbify.state import COMPLETED, DELETED, TERMINAL

# The words after an id on the events channel that wake its waiters: a job ended or deleted, a batch completed.
WAKES = {*TERMINAL, DELETED, COMPLETED}

log = logging.getLogger("thumbify.api")


class JobWaiter:
    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job-waiter")

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait([self._task])

    @contextlib.contextmanager
    def watch(self, job_id: str):
        """Register before reading the job, so an event between the read and the wait is not missed."""
        event = asyncio.Event()
        self._waiting[job_id].add(event)
        try:
            yield event
        finally:
            self._waiting[job_id].discard(event)
            if not self._waiting[job_id]:
                self._waiting.pop(job_id, None)

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    raise_if_cancelled()
                    backoff = 0.2
                    self._wake_all()  # anything that finished while we were not listening
                    async for message in pubsub.listen():
                        job_id, _, status = str(message.get("data", "")).partition(" ")
                        if status in WAKES:
                            for event in self._waiting.get(job_id, ()):
                                event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis gone: waiters fall back to their timeout; retry with backoff
                raise_if_cancelled()
                log.warning("job event subscription lost (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _wake_all(self) -> None:
        for events in self._waiting.values():
            for event in events:
                event.set()


T = TypeVar("T")


async def read_until(
    value: T | None,
    finished: asyncio.Event,
    deadline: float,
    read: Callable[[], Awaitable[T | None]],
    ended: Callable[[T], bool],
) -> T | None:
    """`value` (as last read, its `finished` event watched from before that read) once `ended` or at the deadline
    (event loop time), read again with `read` at each wake; None once it reads None (deleted). Sleeps on the event,
    holding no Redis connection."""
    loop = asyncio.get_running_loop()
    while value is not None and not ended(value) and (remaining := deadline - loop.time()) > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), remaining)
        # Clear before reading: an event that lands between this read and the next wait then still wakes us.
        finished.clear()
        value = await read()
    return value
