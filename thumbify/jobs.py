"""The job record and its Redis store.

A job is a Redis hash (`Keys.job`). Ids start with the creation time in milliseconds (hex, fixed width) and end
with 80 random bits, so they are unguessable and sort by age: the listing index is a sorted set read by
lexicographic range, newest first, and a cursor is simply the last id seen: jobs that arrive while a client
pages sort before the cursor and can never shift the pages after it, so nothing is skipped or repeated.
Its status changes are the scripts of `thumbify.state`; its key names come from `thumbify.keyspace`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from thumbify import state
from thumbify.keyspace import Keys
from thumbify.spec import ThumbnailSpec
from thumbify.state import Status

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


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
    # The id of the request that created it (api/access_log.py), so the worker's log lines join the API's; "" for
    # jobs written before it was kept.
    request_id: str = ""
    # The upload span's W3C traceparent when tracing is on (thumbify/tracing.py): the worker's job span is its child.
    traceparent: str = ""
    callback: dict[str, Any] | None = None  # {url, state, attempts} (`callback_of`); None without a callback
    batch_id: str = ""  # the batch it was submitted in (thumbify.batches); "" for a job of its own
    # Where the original lies when it is not `original_key(id)` (an ingested object, never deleted by Thumbify), the
    # version the API checked (the worker refuses another), and whether the API judged only its header (the worker
    # then checks the whole file before decoding it).
    original_key: str = ""
    original_etag: str = ""
    verify: bool = False


def new_job_id() -> str:
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def now_iso() -> str:
    return iso(datetime.now(UTC))


def iso(moment: datetime) -> str:
    """A UTC time as the records write it (ISO 8601, milliseconds, `Z`)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class JobStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._start = redis.register_script(state.START)
        self._delete = redis.register_script(state.DELETE)

    def record(
        self,
        job_id: str,
        source: dict,
        spec: ThumbnailSpec,
        stem: str,
        owner: str = "",
        request_id: str = "",
        traceparent: str = "",
    ) -> dict[str, str]:
        stamp = now_iso()
        trace = {"traceparent": traceparent} if traceparent else {}
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
            "request_id": request_id,
            **trace,
        }

    def add_to(self, pipe, job_id: str, record: dict[str, str]) -> None:
        """Queue the commands that create the job inside the caller's transaction (which also enqueues it)."""
        pipe.hset(self.keys.job(job_id), mapping=record)
        pipe.zadd(self.keys.index, {job_id: 0})
        pipe.zadd(self.keys.index_of(Status.queued), {job_id: 0})
        pipe.zadd(self.keys.owner_index(record.get("owner", "")), {job_id: 0})

    @staticmethod
    def as_job(job_id: str, record: dict[str, str]) -> Job:
        """The job a record (as `record` makes it, or as Redis returns it) describes."""
        return _job_from(job_id, record)

    async def get(self, job_id: str) -> Job | None:
        if not JOB_ID_RE.fullmatch(job_id):
            return None
        raw = await self.redis.hgetall(self.keys.job(job_id))
        return _job_from(job_id, raw) if raw else None

    async def get_many(self, job_ids: list[str]) -> list[Job]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            rows = await pipe.execute()
        return [_job_from(job_id, raw) for job_id, raw in zip(job_ids, rows, strict=True) if raw]

    async def page(
        self, limit: int, cursor: str | None, status: Status | None, owner: str | None = None, index: str = ""
    ) -> tuple[list[Job], str | None]:
        """Newest first after `cursor`; only `owner`'s jobs unless None, only those of `index` (a batch's) if given.
        One owner's (or batch's) jobs of one status are found by reading its index and filtering, batch by batch,
        until the page is full."""
        if not index and owner is not None:
            index = self.keys.owner_index(owner)
        elif not index:
            index = self.keys.index_of(status) if status else self.keys.index
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
        """Mark processing and count the attempt: the new count, GONE, or BLOCKED if already finished."""
        return (await self.take(job_id))[0]

    async def take(self, job_id: str) -> tuple[int, Job | None]:
        """`start`, and the job as it now is (None unless started), in one round trip: what a worker does first."""
        count, flat = await self._start(keys=[self.keys.job(job_id), self.keys.index], args=[now_iso(), job_id])
        row = dict(zip(flat[::2], flat[1::2], strict=True))
        return int(count), _job_from(job_id, row) if row else None

    async def delete(self, job_id: str) -> bool:
        """The record and its index entries gone, its waiters told; False if there was none."""
        keys = [self.keys.job(job_id), self.keys.index]
        return bool(await self._delete(keys=keys, args=[job_id, self.keys.events]))


def callback_fields(url: str) -> dict[str, str]:
    """What a job with a callback adds to its record at submit."""
    return {"callback_url": url, "callback_state": "pending", "callback_attempts": "[]"}


def callback_of(row: dict[str, str]) -> dict | None:
    """A record's callback as the job shows it, None if it has none."""
    if not row.get("callback_url"):
        return None
    return {
        "url": row["callback_url"],
        "state": row.get("callback_state", "pending"),
        "attempts": json.loads(row.get("callback_attempts", "[]")),
    }


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
        request_id=row.get("request_id", ""),
        traceparent=row.get("traceparent", ""),
        callback=callback_of(row),
        batch_id=row.get("batch_id", ""),
        original_key=row.get("original_key", ""),
        original_etag=row.get("original_etag", ""),
        verify=row.get("verify") == "1",
    )
