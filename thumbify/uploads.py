"""Direct uploads (POST /v1/uploads): their Redis records, and the sweep of the abandoned ones.

An upload's id is the id its job will have, and its object is that job's original (`original_key(id)`): completing
it checks the object in place and creates the job, nothing is copied. While open, the upload is in a sorted set
scored by when its URLs expire; the retention sweep deletes the object of one still open a minute after that (and
aborts its multipart upload), then its record. A completed upload's record stays until its URLs expire, so that a
repeated `complete` answers the same job.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

from redis.asyncio import Redis

from thumbify.keyspace import Keys
from thumbify.storage import Storage, original_key

# The bucket may still be finishing a request signed just before the URLs expired.
SWEEP_GRACE_S = 60.0
# A completion takes seconds (a HEAD, a few ranged GETs); one claimed longer ago than this was cut short.
CLAIM_S = 120.0

# Fields hold JSON (`add`): the status is '"pending"', a time a JSON number.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
local since = tonumber(redis.call('HGET', KEYS[1], 'claimed_at') or '0')
if status == '"pending"' or (status == '"completing"' and since < tonumber(ARGV[2])) then
  redis.call('HSET', KEYS[1], 'status', '"completing"', 'claimed_at', ARGV[1])
  return 1
end
return 0
"""
_UNCLAIM = """
if redis.call('HGET', KEYS[1], 'status') == '"completing"' then
  redis.call('HSET', KEYS[1], 'status', '"pending"')
end
return 0
"""


@dataclass
class DirectUpload:
    id: str
    owner: str
    filename: str
    size: int
    method: str  # POST (a form) or PUT
    parts: int
    expires_at: float  # epoch seconds
    options: dict[str, list[str]] = field(default_factory=dict)
    multipart_id: str = ""  # the bucket's UploadId, for parts > 1
    status: str = "pending"  # pending, completing, completed

    @property
    def key(self) -> str:
        return original_key(self.id)

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at


class UploadStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._claim = redis.register_script(_CLAIM)
        self._unclaim = redis.register_script(_UNCLAIM)

    async def add(self, upload: DirectUpload) -> None:
        record = {k: json.dumps(v) for k, v in asdict(upload).items()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.direct_upload(upload.id), mapping=record)
            pipe.zadd(self.keys.open_uploads, {upload.id: upload.expires_at})
            await pipe.execute()

    async def get(self, upload_id: str) -> DirectUpload | None:
        row = await self.redis.hgetall(self.keys.direct_upload(upload_id))
        row.pop("claimed_at", None)
        return DirectUpload(**{k: json.loads(v) for k, v in row.items()}) if row else None

    async def claim(self, upload_id: str, now: float | None = None) -> bool:
        """Mark it being completed; False if another request is completing it (or did). A claim older than
        `CLAIM_S` is taken over: the API that held it died."""
        now = time.time() if now is None else now
        name = self.keys.direct_upload(upload_id)
        return bool(await self._claim(keys=[name], args=[json.dumps(now), json.dumps(now - CLAIM_S)]))

    async def unclaim(self, upload_id: str) -> None:
        """Open again (its completion failed in a way a retry may mend)."""
        await self._unclaim(keys=[self.keys.direct_upload(upload_id)])

    def completed_in(self, pipe, upload: DirectUpload) -> None:
        """Queue, in the transaction that creates its job: completed, off the sweep's list, kept until it expires."""
        name = self.keys.direct_upload(upload.id)
        pipe.hset(name, "status", json.dumps("completed"))
        pipe.zrem(self.keys.open_uploads, upload.id)
        pipe.expireat(name, int(upload.expires_at + SWEEP_GRACE_S) + 1)

    async def forget(self, upload_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.direct_upload(upload_id))
            pipe.zrem(self.keys.open_uploads, upload_id)
            await pipe.execute()

    async def drop(self, storage: Storage, upload_id: str) -> None:
        """Close it for good: its object deleted (an open multipart upload aborted), then its record."""
        await storage.discard(original_key(upload_id))
        await self.forget(upload_id)

    async def sweep(self, storage: Storage, now: float | None = None, budget: int = 1000) -> int:
        """Delete the objects (and records) of uploads still open a grace period after their URLs expired."""
        now = time.time() if now is None else now
        due = await self.redis.zrangebyscore(self.keys.open_uploads, "-inf", now - SWEEP_GRACE_S, start=0, num=budget)
        for upload_id in due:
            upload = await self.get(upload_id)
            if upload is not None and upload.status == "completed":
                await self.redis.zrem(self.keys.open_uploads, upload_id)
                continue
            await self.drop(storage, upload_id)
        return len(due)
