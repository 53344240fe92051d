"""Per-client limits kept in Redis, so every API replica shares them: a token bucket for the request rate, and
leased slots for uploads in flight."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError

from thumbify.keyspace import Keys
from thumbify.redis_conn import raise_if_cancelled
from thumbify.state import NOW_MS

log = logging.getLogger("thumbify.api")

# KEYS: bucket hash; ARGV: rate (tokens/s), burst. Refills by elapsed time (Redis's clock: one clock for all
# replicas), takes one token if there is one; returns {allowed, milliseconds until a token is there}.
_TAKE = (
    NOW_MS
    + """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now_ms
tokens = math.min(burst, tokens + (now_ms - at) * rate / 1000)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now_ms)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""
)

# Uploads in flight are leases in a sorted set per client (member: the upload's id, score: when its lease ends, in
# ms by Redis's clock). A live upload renews its lease while it streams and removes it when it ends; a process that
# dies stops renewing, so its slots free themselves within one lease time. A refusal changes no lease.
# The set itself expires with its last lease.
_LEASES = (
    NOW_MS
    + """
local function expire_with_last_lease(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, last[2]) end
end
"""
)

# KEYS: lease set; ARGV: cap, lease (ms), upload id. Takes a slot unless the client holds `cap` live leases.
_ENTER = (
    _LEASES
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
expire_with_last_lease(KEYS[1])
return 1
"""
)

# KEYS: lease set; ARGV: lease (ms), upload id. Extends a lease that still exists (one that ran out stays gone).
_RENEW = (
    _LEASES
    + """
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms + tonumber(ARGV[1]), ARGV[2]) == 1 then
  expire_with_last_lease(KEYS[1])
end
return 1
"""
)


class UploadSlot:
    """One upload's lease on a slot: renewed every third of the lease while the upload runs, until `release`."""

    def __init__(self, redis: Redis, renew, key: str, upload_id: str, lease_ms: int) -> None:
        self.redis, self.key, self.upload_id = redis, key, upload_id
        self._renewing = asyncio.create_task(self._renew(renew, lease_ms), name=f"upload-lease-{upload_id}")

    async def _renew(self, renew, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(lease_ms / 3000)
            try:
                await renew(keys=[self.key], args=[lease_ms, self.upload_id])
            except RedisError as exc:  # Redis away for a moment: try again before the lease ends
                log.warning("could not renew an upload lease: %s", exc)
            raise_if_cancelled()  # a cancel redis-py swallowed mid-command must still end the renewals

    async def release(self) -> None:
        self._renewing.cancel()
        await self.redis.zrem(self.key, self.upload_id)


class _Uncounted:
    """The slot when uploads are not capped: nothing to renew or give back."""

    async def release(self) -> None:
        pass


class Limits:
    def __init__(
        self, redis: Redis, keys: Keys, rate: float, burst: int, max_uploads: int, lease_s: float = 30.0
    ) -> None:
        self.redis, self.keys = redis, keys
        self.rate, self.burst, self.max_uploads = rate, burst, max_uploads
        self.lease_ms = max(1, round(lease_s * 1000))
        self._take = redis.register_script(_TAKE)
        self._enter = redis.register_script(_ENTER)
        self._renew = redis.register_script(_RENEW)

    async def take(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it may (`rate` 0 turns the limit off)."""
        if self.rate <= 0:
            return 0.0
        allowed, wait_ms = await self._take(keys=[self.keys.rate(client)], args=[self.rate, self.burst])
        return 0.0 if int(allowed) else max(1, math.ceil(int(wait_ms) / 1000))

    async def enter_upload(self, client: str) -> UploadSlot | _Uncounted | None:
        """A slot for one more upload in flight (release it when the upload ends); None when the client is at its
        cap. With `max_uploads` 0 (no cap) nothing is counted and the slot is a no-op."""
        if self.max_uploads <= 0:
            return _UNCOUNTED
        key, upload_id = self.keys.uploads(client), uuid.uuid4().hex
        if not int(await self._enter(keys=[key], args=[self.max_uploads, self.lease_ms, upload_id])):
            return None
        return UploadSlot(self.redis, self._renew, key, upload_id, self.lease_ms)


_UNCOUNTED = _Uncounted()
