"""`Idempotency-Key` on `POST /v1/jobs`: a retried request (same key, same client) gets the job it first created.

Redis holds `Keys.idempotency(client, key)`. A request claims the key with a short-lived placeholder (SET NX)
before it reads the body, so two concurrent requests with one key cannot both create a job: the second is told
409 while the first is in flight. The job id and the request's fingerprint (its options and the file's SHA-256)
replace the placeholder inside the transaction that creates the job, so the key never points at a job that was not
created; a request that fails gives its claim back. A retry is compared with the fingerprint once its body has been
read: another request under the same key is 422 `idempotency-key-reused`, as the IETF draft recommends.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from thumbify.errors import Conflict, InvalidOptions
from thumbify.keyspace import Keys

HEADER = "Idempotency-Key"
_VALID = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, as the IETF draft's sf-string allows
_PENDING = "pending"
# A claim outlives a slow upload, but not a crashed API by long: the client's retry may proceed after it.
_CLAIM_TTL_S = 600


def header_key(request: Request) -> str | None:
    """The request's key, or None; 422 naming the header when it is malformed."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _VALID.match(key):
        message = "must be 1 to 255 visible ASCII characters"
        raise InvalidOptions(f"{HEADER}: {message}", errors=[{"field": HEADER, "message": message}])
    return key


def fingerprint(options: dict[str, list[str]], sha256: str) -> str:
    """What makes two requests the same one: their options and the bytes of their file."""
    return hashlib.sha256(json.dumps([options, sha256], sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Held:
    """What a key is bound to: the job it created, and the fingerprint of the request that created it ("" for a
    binding stored before fingerprints were)."""

    job_id: str
    fingerprint: str

    def matches(self, fingerprint: str) -> bool:
        return not self.fingerprint or self.fingerprint == fingerprint


def client_of(request: Request) -> str:
    """Who the key belongs to: one client's key never replays another's job."""
    return request.client.host if request.client else "unknown"


class IdempotencyKeys:
    def __init__(self, redis: Redis, keys: Keys, window_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.window_s = window_s

    async def claim(self, client: str, key: str) -> Held | None:
        """None if this request now owns the key; else what the key is bound to.
        Raises 409 while another request with the key is in flight."""
        name = self.keys.idempotency(client, key)
        while True:
            if await self.redis.set(name, _PENDING, nx=True, ex=_CLAIM_TTL_S):
                return None
            held = await self.redis.get(name)
            if held == _PENDING:
                raise Conflict(f"a request with this {HEADER} is still in progress; retry when it has finished")
            if held is not None:
                job_id, _, digest = held.partition(" ")
                return Held(job_id, digest)
            # Expired between SET and GET: try to claim it again.

    async def forget(self, client: str, key: str, job_id: str | None = None) -> None:
        """Give back our claim (the request failed), or drop a key whose job no longer exists."""
        name = self.keys.idempotency(client, key)
        expected = job_id or _PENDING
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(name)
            if ((await pipe.get(name)) or "").partition(" ")[0] == expected:
                pipe.multi()
                pipe.delete(name)
                await pipe.execute()

    def bind_to(self, pipe, client: str, key: str, job_id: str, fingerprint: str) -> None:
        """Queue the key → job binding inside the caller's transaction that creates the job."""
        pipe.set(self.keys.idempotency(client, key), f"{job_id} {fingerprint}", ex=self.window_s)
