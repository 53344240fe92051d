"""The job queue: one Redis Stream read by a consumer group, so each job goes to one worker.

Beside the stream (`Keys.stream`) live a sorted set of jobs waiting to be retried (`Keys.delayed`, scored by when,
in ms) and the dead-letter stream (`Keys.dead`). A message stays in the group's pending list until its worker
records the outcome; every outcome is one Lua script (thumbify.state) that changes the job and acknowledges (and
deletes) the message together, so no crash between the two can leave them disagreeing:

- `complete`: job `done` with its thumbnails, message acked (and, for a job with a callback, its webhook added to
  the outbox, `thumbify.outbox`: so do `fail` and `bury`);
- `fail`: job `failed` (a permanent error), message acked;
- `retry_later`: job back to `queued` with its last error, message acked, job id into `delayed`; `promote_due`
  (run by every worker) moves due ids back onto the stream;
- `bury`: job `failed`, message moved to the dead-letter stream; `requeue_dead` brings it back;
- `release`: a worker shutting down hands an unfinished message back (a fresh entry, job `queued`, the attempt
  not counted).

A worker that dies leaves its messages pending; another takes them over with `claim_stale` once they have been
idle for the visibility timeout. A live worker keeps its own messages from being taken with `extend`. Workers that
publish a heartbeat (`beat`: a key `Keys.worker(name)` with a short TTL, and their name in the set `Keys.workers`)
are not waited for that long: once the key has expired, `claim_orphaned` takes their messages at once, and removes
them from the group when they hold none.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from thumbify import state
from thumbify.jobs import now_iso
from thumbify.keyspace import Keys


@dataclass(frozen=True)
class Message:
    id: str  # the stream entry id
    job_id: str


@dataclass(frozen=True)
class DeadEntry:
    id: str  # the dead-letter stream entry id
    job_id: str
    reason: str
    error_type: str
    attempts: int

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(int(self.id.split("-", 1)[0]) / 1000, UTC)


def backoff_ceiling(attempt: int, base_s: float, max_s: float) -> float:
    """The longest wait before retry number `attempt` (1 = after the first failure): doubling, capped."""
    return min(max_s, base_s * 2.0 ** min(max(attempt - 1, 0), 60))


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, ceiling], so retries of many jobs that failed together
    spread out instead of arriving together again."""
    return (rng or random).uniform(0.0, backoff_ceiling(attempt, base_s, max_s))


# How long a depth read by `JobQueue.full` is trusted.
DEPTH_TTL_S = 1.0


class JobQueue:
    GROUP = "workers"

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._depth, self._added, self._depth_read_at = 0, 0, -DEPTH_TTL_S  # what `full` last read
        self._complete = redis.register_script(state.COMPLETE)
        self._fail = redis.register_script(state.FAIL)
        self._retry_later = redis.register_script(state.RETRY_LATER)
        self._bury = redis.register_script(state.BURY)
        self._release = redis.register_script(state.RELEASE)
        self._extend = redis.register_script(state.EXTEND)
        self._promote = redis.register_script(state.PROMOTE)
        self._requeue_dead = redis.register_script(state.REQUEUE_DEAD)
        self._claim_orphaned = redis.register_script(state.CLAIM_ORPHANED)

    def add_to(self, pipe, job_id: str) -> None:
        """Queue the XADD inside the caller's transaction, beside the job record it announces."""
        pipe.xadd(self.keys.stream, {"job": job_id})
        self._added += 1

    async def full(self, cap: int) -> bool:
        """Whether the queue holds `cap` or more jobs. A depth read less than DEPTH_TTL_S ago, plus the jobs this
        process added since, that is under the cap answers without a round trip (every upload asked before); other
        API processes may then admit up to that long's worth of uploads past the cap, which is a soft bound."""
        now = time.monotonic()
        if now - self._depth_read_at >= DEPTH_TTL_S or self._depth + self._added >= cap:
            self._depth, self._added, self._depth_read_at = await self.depth(), 0, now
        return self._depth + self._added >= cap

    async def ensure_group(self) -> None:
        await ensure_group(self.redis, self.keys.stream, self.GROUP)

    async def depth(self) -> int:
        return int(await self.redis.xlen(self.keys.stream))

    async def counts(self) -> dict[str, int]:
        """Jobs by state (the `thumbify_queue_jobs` gauge). Finished messages are deleted from the stream, so what
        it holds is either waiting or pending in the group (delivered, not finished)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.keys.stream)
            pipe.zcard(self.keys.delayed)
            pipe.xlen(self.keys.dead)
            length, delayed, dead = await pipe.execute()
        try:
            in_flight = int((await self.redis.xpending(self.keys.stream, self.GROUP))["pending"])
        except ResponseError:  # no consumer group yet: no worker has started
            in_flight = 0
        return {"waiting": max(0, length - in_flight), "in_flight": in_flight, "delayed": delayed, "dead": dead}

    async def oldest_age_s(self) -> float:
        """Seconds since the oldest entry of the stream was added, by Redis's clock (0 for none). Finished messages
        are deleted, so that is the oldest job still waiting or in flight; a retried job counts from its re-queueing."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(self.keys.stream, count=1)
            pipe.time()
            first, (seconds, micros) = await pipe.execute()
        if not first:
            return 0.0
        added_ms = int(first[0][0].split("-", 1)[0])
        return max(0.0, (seconds * 1000 + micros / 1000 - added_ms) / 1000)

    # -- reading -----------------------------------------------------------------------------------------------

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Message]:
        """New messages for `consumer`; `block_ms=None` answers at once (no BLOCK), even when there are none."""
        reply = await self.redis.xreadgroup(self.GROUP, consumer, {self.keys.stream: ">"}, count=count, block=block_ms)
        return messages_of(reply)

    async def read_own_pending(self, consumer: str, count: int) -> list[Message]:
        """The messages delivered to `consumer` and not yet acked (its pending list), oldest first. Entries deleted
        from the stream meanwhile are acked here and left out."""
        reply = await self.redis.xreadgroup(self.GROUP, consumer, {self.keys.stream: "0"}, count=count)
        gone = [entry_id for _, entries in reply or [] for entry_id, fields in entries if not fields]
        if gone:
            await self.redis.xack(self.keys.stream, self.GROUP, *gone)
        return messages_of(reply)

    async def claim_stale(self, consumer: str, idle_ms: int, count: int) -> list[Message]:
        """Take over messages another consumer has held longer than `idle_ms` (it died or hung)."""
        reply = await self.redis.xautoclaim(self.keys.stream, self.GROUP, consumer, idle_ms, "0-0", count=count)
        return [Message(entry_id, fields["job"]) for entry_id, fields in reply[1] if fields]

    async def beat(self, consumer: str, ttl_s: float) -> None:
        """`consumer` is alive for the next `ttl_s` seconds (and publishes heartbeats from now on)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.keys.worker(consumer), "1", px=max(1, round(ttl_s * 1000)))
            pipe.sadd(self.keys.workers, consumer)
            await pipe.execute()

    async def retire(self, consumer: str) -> None:
        """`consumer` stops: its heartbeat ends now (the next `claim_orphaned` of another worker removes it)."""
        await self.redis.delete(self.keys.worker(consumer))

    async def claim_orphaned(self, consumer: str, count: int) -> list[Message]:
        """Take over the messages of workers whose heartbeat has stopped (they died), at most `count`."""
        reply = await self._claim_orphaned(
            keys=[self.keys.stream, self.keys.workers], args=[self.GROUP, consumer, self.keys.worker_prefix, count]
        )
        return [Message(entry_id, job_id) for entry_id, fields in reply if (job_id := _field(fields, "job"))]

    async def own_pending_ids(self, consumer: str, count: int = 1000) -> list[str]:
        rows = await self.redis.xpending_range(self.keys.stream, self.GROUP, "-", "+", count, consumername=consumer)
        return [row["message_id"] for row in rows]

    async def extend(self, consumer: str, ids: list[str]) -> list[str]:
        """Renew `consumer`'s claim on the messages `ids`; returns those it no longer holds."""
        if not ids:
            return []
        return list(await self._extend(keys=[self.keys.stream], args=[self.GROUP, consumer, *ids]))

    # -- outcomes ----------------------------------------------------------------------------------------------

    def _outcome_keys(self, message: Message) -> list[str]:
        return [self.keys.stream, self.keys.job(message.job_id), self.keys.index]

    def _outcome_args(self, message: Message) -> list[str]:
        return [self.GROUP, message.id, message.job_id, now_iso(), self.keys.events]

    async def ack(self, message: Message) -> None:
        await ack_and_delete(self.redis, self.keys.stream, self.GROUP, message.id)

    async def complete(self, message: Message, thumbnails: list[dict], source: dict | None = None) -> int:
        """Job done with `thumbnails` (and `source`, when the render added to it), message acked: OK, GONE (deleted
        meanwhile) or BLOCKED (already done)."""
        args = [*self._outcome_args(message), json.dumps(thumbnails), json.dumps(source) if source else ""]
        return int(await self._complete(keys=[*self._outcome_keys(message), self.keys.outbox], args=args))

    async def fail(self, message: Message, error: dict[str, str]) -> int:
        """Job failed with `error` (permanent), message acked; a job already done stays done."""
        args = [*self._outcome_args(message), json.dumps(error)]
        return int(await self._fail(keys=[*self._outcome_keys(message), self.keys.outbox], args=args))

    async def retry_later(self, message: Message, delay_s: float, error: dict[str, str]) -> int:
        """Message acked; job back to `queued` with `error`, due on the stream again in `delay_s`."""
        keys = [*self._outcome_keys(message), self.keys.delayed]
        args = [*self._outcome_args(message), json.dumps(error), str(max(0, round(delay_s * 1000)))]
        return int(await self._retry_later(keys=keys, args=args))

    async def bury(self, message: Message, error: dict[str, str], attempts: int = 0) -> int:
        """Job failed with `error`; the message moves to the dead-letter stream."""
        keys = [*self._outcome_keys(message), self.keys.dead, self.keys.outbox]
        slug = error.get("type", "").rsplit("/", 1)[-1]
        args = [*self._outcome_args(message), json.dumps(error), error.get("detail", "")[:500], slug, str(attempts)]
        return int(await self._bury(keys=keys, args=args))

    async def release(self, consumer: str, ids: list[str]) -> int:
        """Hand `consumer`'s unfinished messages back to the queue; returns how many."""
        if not ids:
            return 0
        args = [self.GROUP, consumer, self.keys.job_prefix, now_iso(), self.keys.events, *ids]
        return int(await self._release(keys=[self.keys.stream, self.keys.index], args=args))

    # -- retries -----------------------------------------------------------------------------------------------

    async def promote_due(self, limit: int = 100) -> int:
        """Move jobs whose retry is due from the delayed set back onto the stream; returns how many."""
        return int(await self._promote(keys=[self.keys.delayed, self.keys.stream], args=[limit]))

    async def delayed_count(self) -> int:
        return int(await self.redis.zcard(self.keys.delayed))

    # -- dead letters ------------------------------------------------------------------------------------------

    async def dead_entries(self, count: int = 1000) -> list[DeadEntry]:
        rows = await self.redis.xrange(self.keys.dead, "-", "+", count=count)
        return [
            DeadEntry(
                entry_id,
                fields.get("job", ""),
                fields.get("reason", ""),
                fields.get("type", ""),
                int(fields.get("attempts") or 0),
            )
            for entry_id, fields in rows
        ]

    async def requeue_dead(self, entry_id: str) -> tuple[int, str]:
        """Bring one dead-letter entry's job back (atomically): (1 requeued | 0 nothing to do | -1 no such entry |
        -2 job gone, job id). Text that is no stream id (Redis would refuse the command) is no such entry."""
        if not is_stream_id(entry_id):
            return -1, ""
        code, job_id = await self._requeue_dead(
            keys=[self.keys.dead, self.keys.stream, self.keys.index],
            args=[entry_id, self.keys.job_prefix, now_iso(), self.keys.events],
        )
        return int(code), job_id


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """The consumer group on `stream` (and the stream), made unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def ack_and_delete(redis: Redis, stream: str, group: str, entry_id: str) -> None:
    """An entry acked and deleted in one transaction: finished entries leave the stream (its length is the backlog)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xack(stream, group, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()


_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")


def is_stream_id(text: str) -> bool:
    """Whether Redis takes `text` as a stream entry id: `<ms>-<seq>` or `<ms>`, each below 2**64."""
    match = _STREAM_ID.fullmatch(text)
    return match is not None and all(int(part) < 2**64 for part in match.groups() if part)


def messages_of(reply) -> list[Message]:
    """The entries of an XREADGROUP reply (`{job}` each), leaving out those deleted from the stream meanwhile."""
    return [Message(entry_id, fields["job"]) for _, entries in reply or [] for entry_id, fields in entries if fields]


def _field(fields: list[str], name: str) -> str | None:
    """A field of a stream entry as a script returns it (a flat list of names and values)."""
    pairs = dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}
    return pairs.get(name)
