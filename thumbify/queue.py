"""The job queue: one Redis Stream read by a consumer group, so each job goes to one worker and a worker that
dies leaves its messages pending for another to claim after the visibility timeout."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError


@dataclass(frozen=True)
class Message:
    id: str  # the stream entry id
    job_id: str


class JobQueue:
    GROUP = "workers"

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.stream = f"{prefix}:jobs"
        self.dead = f"{prefix}:dead"

    def add_to(self, pipe, job_id: str) -> None:
        """Queue the XADD inside the caller's transaction, beside the job record it announces."""
        pipe.xadd(self.stream, {"job": job_id})

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def depth(self) -> int:
        return int(await self.redis.xlen(self.stream))

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Message]:
        reply = await self.redis.xreadgroup(self.GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms)
        return [_message(entry_id, fields) for _, entries in reply or [] for entry_id, fields in entries]

    async def claim_stale(self, consumer: str, idle_ms: int, count: int) -> list[Message]:
        """Take over messages another consumer has held longer than `idle_ms` (it died or hung)."""
        reply = await self.redis.xautoclaim(self.stream, self.GROUP, consumer, idle_ms, "0-0", count=count)
        return [_message(entry_id, fields) for entry_id, fields in reply[1] if fields]

    async def ack(self, message: Message) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.GROUP, message.id)
            pipe.xdel(self.stream, message.id)
            await pipe.execute()

    async def bury(self, message: Message, reason: str) -> None:
        """Move a message to the dead-letter stream and ack it."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead, {"job": message.job_id, "reason": reason[:500]})
            pipe.xack(self.stream, self.GROUP, message.id)
            pipe.xdel(self.stream, message.id)
            await pipe.execute()


def _message(entry_id: str, fields: dict[str, str]) -> Message:
    return Message(entry_id, fields["job"])
