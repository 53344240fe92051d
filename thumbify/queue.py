"""The job queue: one Redis Stream read by a consumer group, so each job goes to one worker.

Beside the stream (`<p>:jobs`) live a sorted set of jobs waiting to be retried (`<p>:delayed`, scored by when, in
ms) and the dead-letter stream (`<p>:dead`). A message stays in the group's pending list until its worker records
the outcome; every outcome is one Lua script that changes the job and acknowledges (and deletes) the message
together, so no crash between the two can leave them disagreeing:

- `complete`: job `done` with its thumbnails, message acked;
- `fail`: job `failed` (a permanent error), message acked;
- `retry_later`: job back to `queued` with its last error, message acked, job id into `delayed`; `promote_due`
  (run by every worker) moves due ids back onto the stream;
- `bury`: job `failed`, message moved to the dead-letter stream; `requeue_dead` brings it back;
- `release`: a worker shutting down hands an unfinished message back (a fresh entry, job `queued`, the attempt
  not counted).

A worker that dies leaves its messages pending; another takes them over with `claim_stale` once they have been
idle for the visibility timeout. A live worker keeps its own messages from being taken with `extend`. Workers that
publish a heartbeat (`beat`: a key `<p>:worker:<name>` with a short TTL, and their name in the set `<p>:workers`)
are not waited for that long: once the key has expired, `claim_orphaned` takes their messages at once, and removes
them from the group when they hold none.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from thumbify.jobs import STATUS_LUA, now_iso


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


_NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Every outcome script: KEYS[1] stream, KEYS[2] job hash, KEYS[3] index prefix; ARGV[1] group, ARGV[2] message id,
# ARGV[3] job id, ARGV[4] updated_at, ARGV[5] events channel, then its own. Returns 1, -1 (job gone) or -2 (the job
# was already done: a duplicate delivery; nothing changed). The message is acked and deleted in every case.
_ACK = """
local function ack()
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
"""

# ARGV[6] thumbnails (JSON). A failed job (a duplicate's timeout) still becomes done: the work succeeded.
_COMPLETE = (
    STATUS_LUA
    + _ACK
    + """
ack()
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('HGET', KEYS[2], 'status') == 'done' then return -2 end
set_status(KEYS[2], KEYS[3], ARGV[5], ARGV[3], 'done', ARGV[4], {'thumbnails', ARGV[6], 'error', 'null'})
return 1
"""
)

# ARGV[6] error (JSON).
_FAIL = (
    STATUS_LUA
    + _ACK
    + """
ack()
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('HGET', KEYS[2], 'status') == 'done' then return -2 end
set_status(KEYS[2], KEYS[3], ARGV[5], ARGV[3], 'failed', ARGV[4], {'error', ARGV[6]})
return 1
"""
)

# KEYS[4] delayed set; ARGV[6] error (JSON), ARGV[7] delay in ms (measured on the Redis clock, as promotion is).
_RETRY_LATER = (
    STATUS_LUA
    + _ACK
    + _NOW_MS
    + """
ack()
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'done' or status == 'failed' then return -2 end
set_status(KEYS[2], KEYS[3], ARGV[5], ARGV[3], 'queued', ARGV[4], {'error', ARGV[6]})
redis.call('ZADD', KEYS[4], now_ms + tonumber(ARGV[7]), ARGV[3])
return 1
"""
)

# KEYS[4] dead-letter stream; ARGV[6] error (JSON), ARGV[7] reason, ARGV[8] error type, ARGV[9] attempts.
_BURY = (
    STATUS_LUA
    + _ACK
    + """
ack()
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if redis.call('HGET', KEYS[2], 'status') == 'done' then return -2 end
redis.call('XADD', KEYS[4], '*', 'job', ARGV[3], 'reason', ARGV[7], 'type', ARGV[8], 'attempts', ARGV[9])
set_status(KEYS[2], KEYS[3], ARGV[5], ARGV[3], 'failed', ARGV[4], {'error', ARGV[6]})
return 1
"""
)

# KEYS[1] stream, KEYS[2] index prefix; ARGV[1] group, ARGV[2] consumer, ARGV[3] job key prefix, ARGV[4] updated_at,
# ARGV[5] events channel, ARGV[6..] message ids. Each message still pending for this consumer is replaced by a fresh
# entry for the same job and acked; a job left `processing` goes back to `queued` and its attempt is not counted.
_RELEASE = (
    STATUS_LUA
    + """
local released = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
    if #entry == 1 then
      local fields, job_id = entry[1][2], nil
      for j = 1, #fields, 2 do if fields[j] == 'job' then job_id = fields[j + 1] end end
      if job_id then
        redis.call('XADD', KEYS[1], '*', 'job', job_id)
        local job_key = ARGV[3] .. job_id
        if redis.call('HGET', job_key, 'status') == 'processing' then
          if tonumber(redis.call('HGET', job_key, 'attempts') or '0') > 0 then
            redis.call('HINCRBY', job_key, 'attempts', -1)
          end
          set_status(job_key, KEYS[2], ARGV[5], job_id, 'queued', ARGV[4], {})
        end
        released = released + 1
      end
    end
  end
end
return released
"""
)

# KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] ids. Resets the idle time of each message still
# pending for this consumer (XCLAIM to itself, JUSTID: the delivery count is untouched); returns the ids that are
# no longer its own (another worker took them over, or they were acked).
_EXTEND = """
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  else
    lost[#lost + 1] = id
  end
end
return lost
"""

# KEYS[1] stream, KEYS[2] set of heartbeating workers; ARGV[1] group, ARGV[2] the caller, ARGV[3] heartbeat key
# prefix, ARGV[4] how many messages at most. Each worker of the set whose heartbeat key is gone (it died) has its
# pending messages claimed for the caller (XCLAIM with min-idle 0: the delivery count grows as for any claim); one
# that holds nothing is removed from the group and the set. One script, so a worker is never removed while it
# still holds a message.
_CLAIM_ORPHANED = """
local claimed, room = {}, tonumber(ARGV[4])
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if name ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. name) == 0 then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', math.max(room, 1), name)
    if #pending == 0 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
      redis.call('SREM', KEYS[2], name)
    elseif room > 0 then
      local ids = {}
      for i, row in ipairs(pending) do ids[i] = row[1] end
      room = room - #ids
      for _, entry in ipairs(redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids))) do
        claimed[#claimed + 1] = entry
      end
    end
  end
end
return claimed
"""

# KEYS[1] delayed set, KEYS[2] stream; ARGV[1] how many at most. One script, so two workers never promote one id
# twice: the first removes what it moved before the second can read it.
_PROMOTE = (
    _NOW_MS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('XADD', KEYS[2], '*', 'job', id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"""
)

# KEYS[1] dead-letter stream, KEYS[2] stream, KEYS[3] index prefix; ARGV[1] entry id, ARGV[2] job key prefix,
# ARGV[3] updated_at, ARGV[4] events channel. Returns {code, job id}: 1 requeued (queued, attempts 0, no error, a
# fresh stream entry), 0 nothing to do (the job is queued, processing or done already), -1 no such entry, -2 the job
# is gone. The dead entry is deleted in every case but -1.
_REQUEUE_DEAD = (
    STATUS_LUA
    + """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return {-1, ''} end
local fields, job_id = entry[1][2], ''
for j = 1, #fields, 2 do if fields[j] == 'job' then job_id = fields[j + 1] end end
redis.call('XDEL', KEYS[1], ARGV[1])
local job_key = ARGV[2] .. job_id
if job_id == '' or redis.call('EXISTS', job_key) == 0 then return {-2, job_id} end
if redis.call('HGET', job_key, 'status') ~= 'failed' then return {0, job_id} end
set_status(job_key, KEYS[3], ARGV[4], job_id, 'queued', ARGV[3], {'attempts', '0', 'error', 'null'})
redis.call('XADD', KEYS[2], '*', 'job', job_id)
return {1, job_id}
"""
)


class JobQueue:
    GROUP = "workers"

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.stream = f"{prefix}:jobs"
        self.dead = f"{prefix}:dead"
        self.delayed = f"{prefix}:delayed"
        self.index = f"{prefix}:index"
        self.events = f"{prefix}:events"
        self.job_prefix = f"{prefix}:job:"
        self.workers = f"{prefix}:workers"
        self.heartbeat_prefix = f"{prefix}:worker:"
        self._complete = redis.register_script(_COMPLETE)
        self._fail = redis.register_script(_FAIL)
        self._retry_later = redis.register_script(_RETRY_LATER)
        self._bury = redis.register_script(_BURY)
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)
        self._promote = redis.register_script(_PROMOTE)
        self._requeue_dead = redis.register_script(_REQUEUE_DEAD)
        self._claim_orphaned = redis.register_script(_CLAIM_ORPHANED)

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

    async def counts(self) -> dict[str, int]:
        """Jobs by state (the `thumbify_queue_jobs` gauge). Finished messages are deleted from the stream, so what
        it holds is either waiting or pending in the group (delivered, not finished)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xlen(self.stream)
            pipe.zcard(self.delayed)
            pipe.xlen(self.dead)
            length, delayed, dead = await pipe.execute()
        try:
            in_flight = int((await self.redis.xpending(self.stream, self.GROUP))["pending"])
        except ResponseError:  # no consumer group yet: no worker has started
            in_flight = 0
        return {"waiting": max(0, length - in_flight), "in_flight": in_flight, "delayed": delayed, "dead": dead}

    # -- reading -----------------------------------------------------------------------------------------------

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Message]:
        """New messages for `consumer`; `block_ms=None` answers at once (no BLOCK), even when there are none."""
        reply = await self.redis.xreadgroup(self.GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms)
        return _messages(reply)

    async def read_own_pending(self, consumer: str, count: int) -> list[Message]:
        """The messages delivered to `consumer` and not yet acked (its pending list), oldest first. Entries deleted
        from the stream meanwhile are acked here and left out."""
        reply = await self.redis.xreadgroup(self.GROUP, consumer, {self.stream: "0"}, count=count)
        gone = [entry_id for _, entries in reply or [] for entry_id, fields in entries if not fields]
        if gone:
            await self.redis.xack(self.stream, self.GROUP, *gone)
        return _messages(reply)

    async def claim_stale(self, consumer: str, idle_ms: int, count: int) -> list[Message]:
        """Take over messages another consumer has held longer than `idle_ms` (it died or hung)."""
        reply = await self.redis.xautoclaim(self.stream, self.GROUP, consumer, idle_ms, "0-0", count=count)
        return [Message(entry_id, fields["job"]) for entry_id, fields in reply[1] if fields]

    async def beat(self, consumer: str, ttl_s: float) -> None:
        """`consumer` is alive for the next `ttl_s` seconds (and publishes heartbeats from now on)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.heartbeat_prefix + consumer, "1", px=max(1, round(ttl_s * 1000)))
            pipe.sadd(self.workers, consumer)
            await pipe.execute()

    async def retire(self, consumer: str) -> None:
        """`consumer` stops: its heartbeat ends now (the next `claim_orphaned` of another worker removes it)."""
        await self.redis.delete(self.heartbeat_prefix + consumer)

    async def claim_orphaned(self, consumer: str, count: int) -> list[Message]:
        """Take over the messages of workers whose heartbeat has stopped (they died), at most `count`."""
        reply = await self._claim_orphaned(
            keys=[self.stream, self.workers], args=[self.GROUP, consumer, self.heartbeat_prefix, count]
        )
        return [Message(entry_id, job_id) for entry_id, fields in reply if (job_id := _field(fields, "job"))]

    async def own_pending_ids(self, consumer: str, count: int = 1000) -> list[str]:
        rows = await self.redis.xpending_range(self.stream, self.GROUP, "-", "+", count, consumername=consumer)
        return [row["message_id"] for row in rows]

    async def extend(self, consumer: str, ids: list[str]) -> list[str]:
        """Renew `consumer`'s claim on the messages `ids`; returns those it no longer holds."""
        if not ids:
            return []
        return list(await self._extend(keys=[self.stream], args=[self.GROUP, consumer, *ids]))

    # -- outcomes ----------------------------------------------------------------------------------------------

    def _outcome_keys(self, message: Message) -> list[str]:
        return [self.stream, self.job_prefix + message.job_id, self.index]

    def _outcome_args(self, message: Message) -> list[str]:
        return [self.GROUP, message.id, message.job_id, now_iso(), self.events]

    async def ack(self, message: Message) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.GROUP, message.id)
            pipe.xdel(self.stream, message.id)
            await pipe.execute()

    async def complete(self, message: Message, thumbnails: list[dict]) -> int:
        """Job done with `thumbnails`, message acked: OK, GONE (deleted meanwhile) or BLOCKED (already done)."""
        args = [*self._outcome_args(message), json.dumps(thumbnails)]
        return int(await self._complete(keys=self._outcome_keys(message), args=args))

    async def fail(self, message: Message, error: dict[str, str]) -> int:
        """Job failed with `error` (permanent), message acked; a job already done stays done."""
        args = [*self._outcome_args(message), json.dumps(error)]
        return int(await self._fail(keys=self._outcome_keys(message), args=args))

    async def retry_later(self, message: Message, delay_s: float, error: dict[str, str]) -> int:
        """Message acked; job back to `queued` with `error`, due on the stream again in `delay_s`."""
        keys = [*self._outcome_keys(message), self.delayed]
        args = [*self._outcome_args(message), json.dumps(error), str(max(0, round(delay_s * 1000)))]
        return int(await self._retry_later(keys=keys, args=args))

    async def bury(self, message: Message, error: dict[str, str], attempts: int = 0) -> int:
        """Job failed with `error`; the message moves to the dead-letter stream."""
        keys = [*self._outcome_keys(message), self.dead]
        slug = error.get("type", "").rsplit("/", 1)[-1]
        args = [*self._outcome_args(message), json.dumps(error), error.get("detail", "")[:500], slug, str(attempts)]
        return int(await self._bury(keys=keys, args=args))

    async def release(self, consumer: str, ids: list[str]) -> int:
        """Hand `consumer`'s unfinished messages back to the queue; returns how many."""
        if not ids:
            return 0
        args = [self.GROUP, consumer, self.job_prefix, now_iso(), self.events, *ids]
        return int(await self._release(keys=[self.stream, self.index], args=args))

    # -- retries -----------------------------------------------------------------------------------------------

    async def promote_due(self, limit: int = 100) -> int:
        """Move jobs whose retry is due from the delayed set back onto the stream; returns how many."""
        return int(await self._promote(keys=[self.delayed, self.stream], args=[limit]))

    async def delayed_count(self) -> int:
        return int(await self.redis.zcard(self.delayed))

    # -- dead letters ------------------------------------------------------------------------------------------

    async def dead_entries(self, count: int = 1000) -> list[DeadEntry]:
        rows = await self.redis.xrange(self.dead, "-", "+", count=count)
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
            keys=[self.dead, self.stream, self.index], args=[entry_id, self.job_prefix, now_iso(), self.events]
        )
        return int(code), job_id


_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")


def is_stream_id(text: str) -> bool:
    """Whether Redis takes `text` as a stream entry id: `<ms>-<seq>` or `<ms>`, each below 2**64."""
    match = _STREAM_ID.fullmatch(text)
    return match is not None and all(int(part) < 2**64 for part in match.groups() if part)


def _messages(reply) -> list[Message]:
    return [Message(entry_id, fields["job"]) for _, entries in reply or [] for entry_id, fields in entries if fields]


def _field(fields: list[str], name: str) -> str | None:
    """A field of a stream entry as a script returns it (a flat list of names and values)."""
    pairs = dict(zip(fields[::2], fields[1::2], strict=True)) if fields else {}
    return pairs.get(name)
