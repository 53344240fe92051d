"""The job record and its Redis store.

A job is a Redis hash `<p>:job:<id>`. Ids start with the creation time in milliseconds (hex, fixed width) and end
with 80 random bits, so they are unguessable and sort by age: the listing index is a sorted set read by
lexicographic range, newest first, and a cursor is simply the last id seen: jobs that arrive while a client
pages sort before the cursor and can never shift the pages after it, so nothing is skipped or repeated.
Status changes run as Lua scripts so the record, the per-status indexes and the event stay in step, and a job
deleted meanwhile is never brought back by a late worker.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from thumbify.spec import ThumbnailSpec

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


class Status(StrEnum):
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"


TERMINAL = {Status.done, Status.failed}
# What the events channel says besides a new status: the job was deleted (its waiters answer 404 at once).
DELETED = "deleted"


class Thumbnail(BaseModel):
    name: str
    width: int
    height: int
    format: str
    bytes: int
    etag: str


class Job(BaseModel):
    id: str
    status: Status
    attempts: int
    created_at: str
    updated_at: str
    source: dict[str, Any]
    spec: ThumbnailSpec
    thumbnails: list[Thumbnail]
    error: dict[str, str] | None
    stem: str
    owner: str = ""  # the name of the API key that created it; "" when authentication is off


def new_job_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(job_id)).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("cursor is not one this API gave out") from exc
    job_id = raw.hex()
    if not JOB_ID_RE.fullmatch(job_id):
        raise ValueError("cursor is not one this API gave out")
    return job_id


# Outcomes of the guarded status changes (here and in `thumbify.queue`).
OK, GONE, BLOCKED = 1, -1, -2

# A Lua prelude the status-changing scripts share: one HSET (status, updated_at and any extra field/value pairs),
# the per-status index moved, the change announced on the events channel.
STATUS_LUA = """
local function set_status(job_key, index, events, job_id, new, stamp, extra)
  local old = redis.call('HGET', job_key, 'status')
  local args = {'HSET', job_key, 'status', new, 'updated_at', stamp}
  for _, v in ipairs(extra or {}) do args[#args + 1] = v end
  redis.call(unpack(args))
  if old ~= new then
    if old then redis.call('ZREM', index .. ':' .. old, job_id) end
    redis.call('ZADD', index .. ':' .. new, 0, job_id)
  end
  redis.call('PUBLISH', events, job_id .. ' ' .. new)
end
"""

# KEYS: job hash, index prefix; ARGV: new status, updated_at, events channel, job id, then field/value pairs.
_SET_STATUS = (
    STATUS_LUA
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local extra = {}
for i = 5, #ARGV do extra[#extra + 1] = ARGV[i] end
set_status(KEYS[1], KEYS[2], ARGV[3], ARGV[4], ARGV[1], ARGV[2], extra)
return 1
"""
)

# KEYS: job hash, index prefix; ARGV: updated_at, job id. Counts an attempt and marks the job processing.
_START = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local old = redis.call('HGET', KEYS[1], 'status')
if old == 'done' or old == 'failed' then return -2 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'updated_at', ARGV[1])
redis.call('ZREM', KEYS[2] .. ':' .. old, ARGV[2])
redis.call('ZADD', KEYS[2] .. ':processing', 0, ARGV[2])
return attempts
"""


class JobStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.index = f"{prefix}:index"
        self.events = f"{prefix}:events"
        self._set_status = redis.register_script(_SET_STATUS)
        self._start = redis.register_script(_START)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def record(self, job_id: str, source: dict, spec: ThumbnailSpec, stem: str, owner: str = "") -> dict[str, str]:
        stamp = now_iso()
        return {
            "status": Status.queued.value,
            "attempts": "0",
            "created_at": stamp,
            "updated_at": stamp,
            "source": json.dumps(source),
            "spec": spec.model_dump_json(),
            "thumbnails": "[]",
            "error": "null",
            "stem": stem,
            "owner": owner,
        }

    def add_to(self, pipe, job_id: str, record: dict[str, str]) -> None:
        """Queue the commands that create the job inside the caller's transaction (which also enqueues it)."""
        pipe.hset(self.key(job_id), mapping=record)
        pipe.zadd(self.index, {job_id: 0})
        pipe.zadd(f"{self.index}:{Status.queued.value}", {job_id: 0})
        pipe.zadd(self.owner_index(record.get("owner", "")), {job_id: 0})

    def owner_index(self, owner: str) -> str:
        return f"{self.index}:owner:{owner}"

    async def get(self, job_id: str) -> Job | None:
        if not JOB_ID_RE.fullmatch(job_id):
            return None
        raw = await self.redis.hgetall(self.key(job_id))
        return _job_from(job_id, raw) if raw else None

    async def get_many(self, job_ids: list[str]) -> list[Job]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.key(job_id))
            rows = await pipe.execute()
        return [_job_from(job_id, raw) for job_id, raw in zip(job_ids, rows, strict=True) if raw]

    async def page(
        self, limit: int, cursor: str | None, status: Status | None, owner: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Newest first after `cursor`; only `owner`'s jobs unless None. One owner's jobs of one status are found by
        reading that owner's index and filtering, batch by batch, until the page is full."""
        if owner is not None:
            index = self.owner_index(owner)
        else:
            index = f"{self.index}:{status.value}" if status else self.index
        jobs: list[Job] = []
        after = cursor
        while len(jobs) <= limit:
            start = f"({after}" if after else "+"
            ids = await self.redis.zrange(index, start, "-", desc=True, bylex=True, offset=0, num=limit + 1)
            jobs += [j for j in await self.get_many(ids) if status is None or j.status == status]
            if len(ids) <= limit:
                break
            after = ids[-1]
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return jobs, encode_cursor(jobs[-1].id) if more else None

    async def start(self, job_id: str) -> int:
        """Mark processing and count the attempt: the new count, -1 if the job is gone, -2 if already finished."""
        return int(await self._start(keys=[self.key(job_id), self.index], args=[now_iso(), job_id]))

    async def set_status(self, job_id: str, status: Status, **fields: Any) -> bool:
        args: list[str] = [status.value, now_iso(), self.events, job_id]
        for name, value in fields.items():
            args += [name, json.dumps(value)]
        return int(await self._set_status(keys=[self.key(job_id), self.index], args=args)) == 1

    async def finish(self, job_id: str, thumbnails: list[Thumbnail]) -> bool:
        return await self.set_status(job_id, Status.done, thumbnails=[t.model_dump() for t in thumbnails], error=None)

    async def fail(self, job_id: str, error: dict[str, str]) -> bool:
        return await self.set_status(job_id, Status.failed, error=error)

    async def delete(self, job_id: str) -> bool:
        owner = await self.redis.hget(self.key(job_id), "owner") or ""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key(job_id))
            pipe.zrem(self.index, job_id)
            pipe.zrem(self.owner_index(owner), job_id)
            for status in Status:
                pipe.zrem(f"{self.index}:{status.value}", job_id)
            pipe.publish(self.events, f"{job_id} {DELETED}")
            results = await pipe.execute()
        return bool(results[0])


def _job_from(job_id: str, row: dict[str, str]) -> Job:
    return Job(
        id=job_id,
        status=Status(row["status"]),
        attempts=int(row.get("attempts", 0)),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        source=json.loads(row["source"]),
        spec=ThumbnailSpec.model_validate_json(row["spec"]),
        thumbnails=[Thumbnail(**t) for t in json.loads(row.get("thumbnails", "[]"))],
        error=json.loads(row.get("error", "null")),
        stem=row.get("stem", "image"),
        owner=row.get("owner", ""),
    )
