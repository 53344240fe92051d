"""Batches: many uploads with one set of options, each an ordinary job that knows its batch (`batch_id`).

A batch is a Redis hash (`Keys.batch`) and the sorted set of its job ids (`Keys.batch_jobs`, read by lexicographic
range as the job index is). The hash holds its counts by status, `queued`, `processing`, `done` and `failed`: they
are written whole when the batch is created (a file refused at upload counts as `failed` from the start, with its
problem in `rejected`) and from then on kept by the scripts that move its jobs (`thumbify.state.batch_moved`), in
the same atomic step as each job's change. That makes reading a batch one HGETALL whatever its size, and lets the
script that ends the batch's last job mark it completed and put its `batch.completed` webhook on the outbox at once,
exactly once, as a job's own webhook is. A batch whose jobs are all deleted (by DELETE or retention) goes with them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel
from redis.asyncio import Redis

from thumbify.jobs import JOB_ID_RE, callback_of
from thumbify.keyspace import Keys
from thumbify.state import BATCH_SUBJECT, DELETED, Status

# Which webhooks a batch with a callback sends: one `batch.completed`, each job's own, or both.
BatchEvents = Literal["batch", "jobs", "both"]
BATCH_EVENTS: tuple[str, ...] = ("batch", "jobs", "both")


class Batch(BaseModel):
    id: str
    owner: str
    created_at: str
    counts: dict[str, int]  # by job status; a refused file counts as failed
    completed_ms: int | None  # when its last job ended (the Redis clock), None before
    rejected: list[dict[str, Any]]  # {index, filename, problem} for each file refused at upload
    events: BatchEvents
    callback: dict[str, Any] | None  # {url, state, attempts}, as a job's

    @property
    def completed(self) -> bool:
        return self.counts[Status.queued] + self.counts[Status.processing] == 0


def subject(batch_id: str) -> str:
    """How the outbox and the events channel name a batch (job ids name jobs there)."""
    return BATCH_SUBJECT + batch_id


def batch_of(subject_: str) -> str | None:
    """The batch id an outbox or events subject names; None when it names a job."""
    return subject_.removeprefix(BATCH_SUBJECT) if subject_.startswith(BATCH_SUBJECT) else None


def record(
    owner: str, created_at: str, jobs: int, rejected: list[dict[str, Any]], events: str, callback: dict[str, str]
) -> dict[str, str]:
    """A new batch's hash: `jobs` accepted (all queued), the `rejected` files counted failed."""
    counts = {Status.queued.value: jobs, Status.processing.value: 0, Status.done.value: 0}
    counts[Status.failed.value] = len(rejected)
    fields = {"owner": owner, "created_at": created_at, "rejected": json.dumps(rejected), "events": events}
    return fields | {name: str(n) for name, n in counts.items()} | callback


class BatchStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def add_to(self, pipe, batch_id: str, fields: dict[str, str], job_ids: list[str]) -> None:
        """Queue the commands that create the batch inside the caller's transaction (the one that creates its
        jobs, so no job can end before the batch counts it)."""
        pipe.hset(self.keys.batch(batch_id), mapping=fields)
        pipe.zadd(self.keys.batch_jobs(batch_id), dict.fromkeys(job_ids, 0))

    async def get(self, batch_id: str) -> Batch | None:
        if not JOB_ID_RE.fullmatch(batch_id):
            return None
        row = await self.redis.hgetall(self.keys.batch(batch_id))
        return as_batch(batch_id, row) if row else None

    async def job_ids(self, batch_id: str) -> list[str]:
        return list(await self.redis.zrange(self.keys.batch_jobs(batch_id), 0, -1))

    async def remove(self, batch_id: str) -> None:
        """The batch's record and its set of jobs gone (its jobs are deleted next, and tell no batch of it), its
        waiters told."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.batch(batch_id), self.keys.batch_jobs(batch_id))
            pipe.publish(self.keys.events, f"{subject(batch_id)} {DELETED}")
            await pipe.execute()


def as_batch(batch_id: str, row: dict[str, str]) -> Batch:
    return Batch(
        id=batch_id,
        owner=row.get("owner", ""),
        created_at=row["created_at"],
        counts={s.value: max(0, int(row.get(s.value, 0))) for s in Status},
        completed_ms=int(row["completed_ms"]) if row.get("completed_ms") else None,
        rejected=json.loads(row.get("rejected", "[]")),
        events=row.get("events", "batch"),
        callback=callback_of(row),
    )
