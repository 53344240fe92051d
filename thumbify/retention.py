"""Retention: finished jobs (`done` or `failed`) and their files are deleted `retention_s` after they finished.

Every worker calls `Retention.maybe_sweep` from its housekeeping loop; a Redis lock (`SET NX PX`, never released,
so it also spaces sweeps `cleanup_interval_s` apart across all workers) lets one of them sweep at a time.
Candidates come from the per-status indexes read by lexicographic range: ids begin with their creation time in ms
(12 hex digits), so every job created before the cut-off sorts before `(<cut-off hex>`. A job created before the
cut-off but finished after it (a late retry, a requeue) is kept until a later sweep: the record's `updated_at`
decides, re-checked inside the deleting script so a job requeued meanwhile is never deleted. The record and its
index entries go first, then the original and the thumbnails (as `DELETE /v1/jobs/{id}` does). Dead-letter
entries older than the period are trimmed too, and direct uploads abandoned before completion are deleted
(`UploadStore.sweep`; whatever the retention, as they never became jobs).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from redis.asyncio import Redis

from thumbify import state
from thumbify.keyspace import Keys
from thumbify.state import Status
from thumbify.storage import Storage, job_prefixes
from thumbify.uploads import UploadStore

log = logging.getLogger("thumbify.retention")

PAGE = 200


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Retention:
    def __init__(
        self, redis: Redis, storage: Storage, keys: Keys, retention_s: float, interval_s: float, owner: str
    ) -> None:
        self.redis = redis
        self.storage = storage
        self.keys = keys
        self.retention_s = retention_s
        self.interval_s = interval_s
        self.owner = owner
        self._expire = redis.register_script(state.EXPIRE)
        self.uploads = UploadStore(redis, keys)

    async def maybe_sweep(self, now: float | None = None) -> int | None:
        """Sweep if no other worker has within `interval_s`; returns how many jobs expired (None: not our turn)."""
        ttl_ms = max(1, int(self.interval_s * 1000))
        if not await self.redis.set(self.keys.cleanup_lock, self.owner, nx=True, px=ttl_ms):
            return None
        return await self.sweep(now)

    async def sweep(self, now: float | None = None, budget: int = 10_000) -> int:
        """Delete every finished job last changed more than `retention_s` ago (at most `budget` per sweep), and
        the abandoned direct uploads."""
        now = time.time() if now is None else now
        abandoned = await self.uploads.sweep(self.storage, now)
        if abandoned:
            log.info("retention: deleted %d direct upload(s) never completed", abandoned)
        if not self.retention_s:
            return 0
        cutoff = now - self.retention_s
        cutoff_iso = iso(cutoff)
        upper = f"({int(cutoff * 1000):012x}"
        expired = 0
        for status in (Status.done, Status.failed):
            index = self.keys.index_of(status)
            lower = "-"
            while expired < budget:
                ids = await self.redis.zrange(index, lower, upper, bylex=True, offset=0, num=PAGE)
                if not ids:
                    break
                for job_id in ids:
                    if await self.expire(job_id, cutoff_iso):
                        expired += 1
                lower = f"({ids[-1]}"
        # Dead-letter entries older than the period point at jobs deleted above (their ids are times too).
        await self.redis.xtrim(self.keys.dead, minid=f"{int(cutoff * 1000)}-0", approximate=False)
        if expired:
            log.info("retention: deleted %d job(s) finished before %s", expired, cutoff_iso)
        return expired

    async def expire(self, job_id: str, cutoff_iso: str) -> bool:
        if not await self._expire(keys=[self.keys.job(job_id), self.keys.index], args=[job_id, cutoff_iso]):
            return False
        for prefix in job_prefixes(job_id):
            await self.storage.delete_prefix(prefix)
        return True
