"""The webhook outbox: the Redis side of completion webhooks (the HTTP side is gpu_worker/deliverer.py).

A job with a callback carries it in its record: `callback_url`, `callback_state` (pending|delivered|failed) and
`callback_attempts` (a JSON array of `{at, status, error, ms}`). The outcome script that ends the job (done, failed,
dead) also adds `{job}` to the outbox stream (`Keys.outbox`) in the same atomic step (`thumbify.state._notify`), so
a job that ended always has its webhook sent. Deliverers read the stream through one consumer group, so several
workers share the deliveries; each attempt is recorded together with the ack (`record`): a retry waits in a sorted
set of due times (`Keys.webhooks_due`) that `promote_due` moves back onto the stream, as the job queue's delayed
retries are; a delivery that failed for good is listed in `Keys.webhooks_failed`. A batch's `batch.completed` takes
the same path, its entries naming `batch:<id>` where a job's name its id (`thumbify.batches.subject`), its attempts
kept on the batch's record. A deliverer killed between
reading an entry and recording its attempt leaves the entry pending: another (or the restarted one) claims it
with `claim_stale`, and the receiver may get that webhook twice (at least once: it dedupes by `webhook-id`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from thumbify import state
from thumbify.batches import batch_of
from thumbify.keyspace import Keys
from thumbify.queue import Message as Event
from thumbify.queue import ack_and_delete, ensure_group, messages_of


@dataclass(frozen=True)
class Attempt:
    at: str  # ISO 8601, UTC
    status: int | None  # the HTTP status; None when there was none (network error, timeout, refused URL)
    error: str | None
    ms: int  # how long the attempt took

    def as_json(self) -> str:
        return json.dumps({"at": self.at, "status": self.status, "error": self.error, "ms": self.ms})


class Outbox:
    GROUP = "deliverers"

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._record = redis.register_script(state.RECORD_ATTEMPT)
        self._redeliver = redis.register_script(state.REDELIVER)
        self._promote = redis.register_script(state.PROMOTE)

    async def ensure_group(self) -> None:
        await ensure_group(self.redis, self.keys.outbox, self.GROUP)

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Event]:
        reply = await self.redis.xreadgroup(self.GROUP, consumer, {self.keys.outbox: ">"}, count=count, block=block_ms)
        return messages_of(reply)

    async def claim_stale(self, consumer: str, idle_ms: int, count: int) -> list[Event]:
        """Entries another deliverer has held longer than `idle_ms` (it died mid-delivery). Entries deleted from
        the stream meanwhile are acked and left out."""
        reply = await self.redis.xautoclaim(self.keys.outbox, self.GROUP, consumer, idle_ms, "0-0", count=count)
        gone = [entry_id for entry_id, fields in reply[1] if not fields]
        if gone:
            await self.redis.xack(self.keys.outbox, self.GROUP, *gone)
        return [Event(entry_id, fields["job"]) for entry_id, fields in reply[1] if fields]

    def record_key(self, subject: str) -> str:
        """The record an entry's deliveries are kept on: its job's, or its batch's (`batch:<id>`)."""
        batch_id = batch_of(subject)
        return self.keys.batch(batch_id) if batch_id is not None else self.keys.job(subject)

    async def record(self, event: Event, attempt: Attempt, state_: str, retry_in_s: float = 0.0) -> int:
        """One attempt recorded on the job (or batch) and its entry acked, atomically; `state_` is the callback's new
        state (pending: the next attempt is due in `retry_in_s`). Returns the Redis clock in ms, 0 if the record is
        gone."""
        keys = [self.record_key(event.job_id), self.keys.outbox, self.keys.webhooks_due, self.keys.webhooks_failed]
        args = [self.GROUP, event.id, event.job_id, attempt.as_json(), state_, str(max(0, round(retry_in_s * 1000)))]
        return int(await self._record(keys=keys, args=args))

    async def ack(self, event: Event) -> None:
        """Drop an entry that needs no delivery (its job is gone, has no callback, or was delivered already)."""
        await ack_and_delete(self.redis, self.keys.outbox, self.GROUP, event.id)

    async def now_ms(self) -> int:
        """The Redis clock, which the job's end time (`callback_ended_ms`) and the due times are read on."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    async def promote_due(self, limit: int = 100) -> int:
        """Move deliveries whose retry is due back onto the outbox; returns how many."""
        return int(await self._promote(keys=[self.keys.webhooks_due, self.keys.outbox], args=[limit]))

    async def depth(self) -> int:
        """Deliveries not yet made: waiting or in flight on the stream, or waiting for a retry."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.keys.outbox)
            pipe.zcard(self.keys.webhooks_due)
            length, due = await pipe.execute()
        return int(length) + int(due)

    async def redeliver(self, job_id: str) -> int:
        """Send a finished job's webhook again: 1, 0 (not ended yet), -1 (no callback), -2 (no such job)."""
        keys = [self.keys.job(job_id), self.keys.outbox, self.keys.webhooks_due, self.keys.webhooks_failed]
        return int(await self._redeliver(keys=keys, args=[job_id]))

    async def open_job_ids(self, limit: int = 1000) -> list[str]:
        """Jobs whose webhook is not delivered: failed for good, waiting for a retry, or on the outbox (batches'
        `batch.completed` webhooks are left out)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrange(self.keys.webhooks_failed, 0, limit - 1)
            pipe.zrange(self.keys.webhooks_due, 0, limit - 1)
            pipe.xrange(self.keys.outbox, "-", "+", count=limit)
            failed, due, entries = await pipe.execute()
        ids = [*failed, *due, *(fields.get("job", "") for _, fields in entries)]
        return list(dict.fromkeys(i for i in ids if i and batch_of(i) is None))[:limit]

    async def forget(self, job_ids: list[str]) -> None:
        """Take deleted jobs out of the failed and due sets (a job's deletion does not know of them)."""
        if job_ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.webhooks_failed, *job_ids)
                pipe.zrem(self.keys.webhooks_due, *job_ids)
                await pipe.execute()
