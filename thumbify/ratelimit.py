"""Per-client limits kept in Redis, so every API replica shares them: a token bucket for the request rate, and a
counter of uploads in flight."""

from __future__ import annotations

import math

from redis.asyncio import Redis

# KEYS: bucket hash; ARGV: rate (tokens/s), burst. Refills by elapsed time (Redis's clock: one clock for all
# replicas), takes one token if there is one; returns {allowed, milliseconds until a token is there}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""

# KEYS: counter; ARGV: cap, safety TTL (s). Counts one more upload in flight unless at the cap.
_ENTER = """
local n = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then redis.call('DECR', KEYS[1]) return 0 end
return 1
"""


class Limits:
    def __init__(self, redis: Redis, prefix: str, rate: float, burst: int, max_uploads: int) -> None:
        self.redis, self.prefix = redis, prefix
        self.rate, self.burst, self.max_uploads = rate, burst, max_uploads
        self._take = redis.register_script(_TAKE)
        self._enter = redis.register_script(_ENTER)

    async def take(self, client: str) -> float:
        """0 if the request may go ahead, else the seconds until it may (`rate` 0 turns the limit off)."""
        if self.rate <= 0:
            return 0.0
        allowed, wait_ms = await self._take(keys=[f"{self.prefix}:rate:{client}"], args=[self.rate, self.burst])
        return 0.0 if int(allowed) else max(1, math.ceil(int(wait_ms) / 1000))

    async def enter_upload(self, client: str, ttl_s: int = 3600) -> bool:
        """Count an upload in flight; False when the client is at its cap (`max_uploads` 0 = no cap). The TTL only
        matters if an API process dies between enter and leave."""
        if self.max_uploads <= 0:
            return True
        return bool(await self._enter(keys=[f"{self.prefix}:uploads:{client}"], args=[self.max_uploads, ttl_s]))

    async def leave_upload(self, client: str) -> None:
        if self.max_uploads > 0:
            await self.redis.decr(f"{self.prefix}:uploads:{client}")
