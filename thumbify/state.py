"""The job state machine: the statuses a job goes through and the Lua scripts that move it between them.

    queued ─ start ─► processing ─ complete ─► done
    processing ─ fail, bury ─► failed         (complete still makes a failed job done: the work succeeded)
    processing ─ retry_later, release ─► queued
    failed ─ requeue_dead ─► queued

Every change is one script, so the record, its per-status index, the queue message and the event (and, for a job
with a callback, its webhook on the outbox: `_notify`; for a job of a batch, the batch's counts: `batch_moved`) stay
in step whatever crashes in between. The scripts are built from shared pieces: `guard` (a job deleted meanwhile is
never brought back by a late worker; a finished one is not changed again), `set_status` (one HSET, the per-status
index moved, the batch told, the change announced), `forget` (a record and its index entries gone, its batch told),
`webhook_due` (a webhook put on the outbox) and `_ACK` (the message acknowledged and deleted); each script takes
only the pieces it calls, as their definitions run at every call. `JobStore` (thumbify.jobs), `JobQueue`
(thumbify.queue), `Outbox` (thumbify.outbox) and `Retention` (thumbify.retention) run them with the names `Keys`
(thumbify.keyspace) gives; the scripts derive `<index>:<status>`, `<index>:owner:<owner>` and `<job prefix><id>`
themselves, as `Keys` does, and `batch_moved` a batch's names (see there).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"


TERMINAL = {Status.done, Status.failed}
# What the events channel says besides a new status: the job was deleted (its waiters answer 404 at once).
DELETED = "deleted"

# What a guarded change returns: done, the job is gone (deleted meanwhile), or its status forbids the change.
OK, GONE, BLOCKED = 1, -1, -2


# Redis's own clock in ms (one clock for every replica); the one copy of it in our Lua.
NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The shared pieces.
_GUARD = f"""
-- The job's status; or nil and why it must not change: GONE, or BLOCKED when it is done (or, with `failed_too`,
-- failed).
local function guard(job_key, failed_too)
  local status = redis.call('HGET', job_key, 'status')
  if not status then return nil, {GONE} end
  if status == 'done' or (failed_too and status == 'failed') then return nil, {BLOCKED} end
  return status
end
"""

# The one name of a batch as an outbox entry and an events channel word see it (`batch:<id>`), beside job ids.
BATCH_SUBJECT = "batch:"
# What the events channel says when a batch's last job has ended (its waiters answer then).
COMPLETED = "completed"

# A record's webhook made due: `pending`, the end time kept on the Redis clock (the delivery window opens then), and
# `subject` (a job id, or `batch:<id>`) put on the outbox stream.
_WEBHOOK = (
    "local function webhook_due(record_key, outbox, subject)"
    + NOW_MS
    + """  redis.call('HSET', record_key, 'callback_state', 'pending', 'callback_ended_ms', now_ms)
  redis.call('XADD', outbox, '*', 'job', subject)
end
"""
)

# A job of a batch (its record's `batch_id`) moved from `old` to `new` (nil: deleted). The batch's counts (its hash,
# `Keys.batch`) follow in the same step; a deleted job leaves its set of jobs, and a batch left without jobs is
# deleted. When nothing of it is queued or processing any more it has completed: marked once (`completed_ms`),
# announced on the events channel, and its webhook (if it has a callback) made due. The names are derived from the
# index (`<prefix>:index`) as `Keys` names them: `<prefix>:batch:<id>`, its `:jobs`, `<prefix>:events`,
# `<prefix>:webhooks`. A batch deleted first (DELETE /v1/batches) is left alone.
_BATCH = (
    _WEBHOOK
    + f"""
local function batch_moved(job_key, index, job_id, old, new)
  local batch_id = redis.call('HGET', job_key, 'batch_id')
  if not batch_id or batch_id == '' then return end
  local base = string.sub(index, 1, -6)
  local batch_key = base .. 'batch:' .. batch_id
  local subject = '{BATCH_SUBJECT}' .. batch_id
  if redis.call('EXISTS', batch_key) == 0 then return end
  if old then redis.call('HINCRBY', batch_key, old, -1) end
  if new then
    redis.call('HINCRBY', batch_key, new, 1)
  else
    redis.call('ZREM', batch_key .. ':jobs', job_id)
    if redis.call('ZCARD', batch_key .. ':jobs') == 0 then
      redis.call('DEL', batch_key)
      redis.call('PUBLISH', base .. 'events', subject .. ' {DELETED}')
      return
    end
  end
  local row = redis.call('HMGET', batch_key, 'queued', 'processing', 'completed_ms', 'callback_url')
  if tonumber(row[1] or '0') + tonumber(row[2] or '0') > 0 or row[3] then return end
{NOW_MS}  redis.call('HSET', batch_key, 'completed_ms', now_ms)
  redis.call('PUBLISH', base .. 'events', subject .. ' {COMPLETED}')
  if row[4] then webhook_due(batch_key, base .. 'webhooks', subject) end
end
"""
)

_SET_STATUS = (
    _BATCH
    + """
-- `old` to `new`: one HSET (status, updated_at and the field/value pairs in `extra`), the per-status index moved
-- (and the job's batch, if any, told), and the change announced on `events` (it wakes the API's waiters) unless that
-- is nil.
local function set_status(job_key, index, events, job_id, old, new, stamp, extra)
  redis.call('HSET', job_key, 'status', new, 'updated_at', stamp, unpack(extra))
  if old ~= new then
    redis.call('ZREM', index .. ':' .. old, job_id)
    redis.call('ZADD', index .. ':' .. new, 0, job_id)
    batch_moved(job_key, index, job_id, old, new)
  end
  if events then redis.call('PUBLISH', events, job_id .. ' ' .. new) end
end
"""
)

_FORGET = _BATCH + (
    f"""
-- The record deleted, and its entries in every index `JobStore` keeps (all jobs, per status, per owner), and in its
-- batch.
local function forget(job_key, index, job_id, owner)
  batch_moved(job_key, index, job_id, redis.call('HGET', job_key, 'status'), nil)
  local deleted = redis.call('DEL', job_key)
  redis.call('ZREM', index, job_id)
  redis.call('ZREM', index .. ':owner:' .. owner, job_id)
  for _, s in ipairs({{{", ".join(f"'{s}'" for s in Status)}}}) do redis.call('ZREM', index .. ':' .. s, job_id) end
  return deleted
end
"""
)

# -- JobStore -------------------------------------------------------------------------------------------------------

# KEYS[1] job hash, KEYS[2] index; ARGV[1] updated_at, ARGV[2] job id. Counts an attempt and marks the job
# processing; returns {the new count, the record as HGETALL gives it}, or {GONE or BLOCKED (finished already), {}}:
# a worker takes a job in one round trip.
START = (
    _GUARD
    + _SET_STATUS
    + """
local old, refused = guard(KEYS[1], true)
if not old then return {refused, {}} end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
set_status(KEYS[1], KEYS[2], nil, ARGV[2], old, 'processing', ARGV[1], {})
return {attempts, redis.call('HGETALL', KEYS[1])}
"""
)

# KEYS[1] job hash, KEYS[2] index; ARGV[1] job id, ARGV[2] events channel. Returns 1 if there was a record.
DELETE = (
    _FORGET
    + f"""
local deleted = forget(KEYS[1], KEYS[2], ARGV[1], redis.call('HGET', KEYS[1], 'owner') or '')
redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' {DELETED}')
return deleted
"""
)

# -- Retention ------------------------------------------------------------------------------------------------------

# KEYS[1] job hash, KEYS[2] index; ARGV[1] job id, ARGV[2] cut-off (an ISO timestamp as `updated_at` is written, so
# they compare as strings). Deletes a finished job last changed before the cut-off; returns 1 if it did.
EXPIRE = (
    _FORGET
    + """
local row = redis.call('HMGET', KEYS[1], 'status', 'updated_at', 'owner')
local status, updated, owner = row[1], row[2], row[3] or ''
if status ~= 'done' and status ~= 'failed' then return 0 end
if not updated or updated >= ARGV[2] then return 0 end
forget(KEYS[1], KEYS[2], ARGV[1], owner)
return 1
"""
)

# -- JobQueue: a worker's outcomes ----------------------------------------------------------------------------------

# Every outcome: KEYS[1] stream, KEYS[2] job hash, KEYS[3] index; ARGV[1] group, ARGV[2] message id, ARGV[3] job id,
# ARGV[4] updated_at, ARGV[5] events channel, then its own. The message is acked and deleted in every case; the job
# changes unless it is gone or done already (a duplicate delivery; `retry_later` also leaves a failed job alone).
# Returns OK, GONE or BLOCKED.
_ACK = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
"""


def _outcome(change: str, failed_too: bool = False) -> str:
    return (
        _GUARD
        + _SET_STATUS
        + _ACK
        + f"""
local old, refused = guard(KEYS[2], {str(failed_too).lower()})
if not old then return refused end
{change}
return {OK}
"""
    )


def _to(status: Status, extra: str) -> str:
    return f"set_status(KEYS[2], KEYS[3], ARGV[5], ARGV[3], old, '{status}', ARGV[4], {extra})"


def _notify(outbox: str) -> str:
    """A job that ends with a callback: its webhook made due (`webhook_due`) on the outbox stream (`outbox`: the KEYS
    entry that names it), in the same script as the status change, so no crash between the two can lose the webhook.
    Jobs without a callback pay one HEXISTS."""
    return f"""
if redis.call('HEXISTS', KEYS[2], 'callback_url') == 1 then webhook_due(KEYS[2], {outbox}, ARGV[3]) end
"""


# KEYS[4] webhook outbox; ARGV[6] thumbnails (JSON), ARGV[7] the source (JSON) with what the render learnt of it (its
# facts), or '' to leave it. A failed job (a duplicate's timeout) still becomes done: the work succeeded.
COMPLETE = _outcome(
    "local done = {'thumbnails', ARGV[6], 'error', 'null'}\n"
    + "if ARGV[7] and ARGV[7] ~= '' then table.insert(done, 'source'); table.insert(done, ARGV[7]) end\n"
    + _to(Status.done, "done")
    + _notify("KEYS[4]")
)

# KEYS[4] webhook outbox; ARGV[6] error (JSON).
FAIL = _outcome(_to(Status.failed, "{'error', ARGV[6]}") + _notify("KEYS[4]"))

# KEYS[4] delayed set; ARGV[6] error (JSON), ARGV[7] delay in ms (measured on the Redis clock, as promotion is).
RETRY_LATER = _outcome(
    _to(Status.queued, "{'error', ARGV[6]}")
    + NOW_MS
    + "redis.call('ZADD', KEYS[4], now_ms + tonumber(ARGV[7]), ARGV[3])",
    failed_too=True,
)

# KEYS[4] dead-letter stream, KEYS[5] webhook outbox; ARGV[6] error (JSON), ARGV[7] reason, ARGV[8] error type,
# ARGV[9] attempts.
BURY = _outcome(
    "redis.call('XADD', KEYS[4], '*', 'job', ARGV[3], 'reason', ARGV[7], 'type', ARGV[8], 'attempts', ARGV[9])\n"
    + _to(Status.failed, "{'error', ARGV[6]}")
    + _notify("KEYS[5]"),
)

# -- JobQueue: messages handed back ---------------------------------------------------------------------------------

# KEYS[1] stream, KEYS[2] index; ARGV[1] group, ARGV[2] consumer, ARGV[3] job key prefix, ARGV[4] updated_at,
# ARGV[5] events channel, ARGV[6..] message ids. Each message still pending for this consumer is replaced by a fresh
# entry for the same job and acked; a job left `processing` goes back to `queued` and its attempt is not counted.
RELEASE = (
    _SET_STATUS
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
          set_status(job_key, KEYS[2], ARGV[5], job_id, 'processing', 'queued', ARGV[4], {})
        end
        released = released + 1
      end
    end
  end
end
return released
"""
)

# KEYS[1] dead-letter stream, KEYS[2] stream, KEYS[3] index; ARGV[1] entry id, ARGV[2] job key prefix,
# ARGV[3] updated_at, ARGV[4] events channel. Returns {code, job id}: 1 requeued (queued, attempts 0, no error, a
# fresh stream entry), 0 nothing to do (the job is queued, processing or done already), -1 no such entry, -2 the job
# is gone. The dead entry is deleted in every case but -1.
REQUEUE_DEAD = (
    _SET_STATUS
    + """
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #entry == 0 then return {-1, ''} end
local fields, job_id = entry[1][2], ''
for j = 1, #fields, 2 do if fields[j] == 'job' then job_id = fields[j + 1] end end
redis.call('XDEL', KEYS[1], ARGV[1])
local job_key = ARGV[2] .. job_id
local old = job_id ~= '' and redis.call('HGET', job_key, 'status')
if not old then return {-2, job_id} end
if old ~= 'failed' then return {0, job_id} end
set_status(job_key, KEYS[3], ARGV[4], job_id, old, 'queued', ARGV[3], {'attempts', '0', 'error', 'null'})
redis.call('XADD', KEYS[2], '*', 'job', job_id)
return {1, job_id}
"""
)

# -- JobQueue: claims on messages -----------------------------------------------------------------------------------

# KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] ids. Resets the idle time of each message still
# pending for this consumer (XCLAIM to itself, JUSTID: the delivery count is untouched); returns the ids that are
# no longer its own (another worker took them over, or they were acked).
EXTEND = """
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
CLAIM_ORPHANED = """
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
PROMOTE = (
    NOW_MS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('XADD', KEYS[2], '*', 'job', id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"""
)

# -- Outbox: webhook deliveries (thumbify.outbox) -------------------------------------------------------------------

# KEYS[1] job hash, KEYS[2] outbox, KEYS[3] due set, KEYS[4] failed set; ARGV[1] group, ARGV[2] entry id,
# ARGV[3] job id, ARGV[4] the attempt (a JSON object), ARGV[5] the callback's new state (pending: try again in
# ARGV[6] ms, on the Redis clock as promotion is). The outbox entry is acked and deleted; the attempt appended to the
# job's `callback_attempts` (a JSON array, extended as text: Lua's cjson cannot tell an empty array from an empty
# object) unless the job is gone. Returns the Redis clock (ms), or 0 when the job is gone.
RECORD_ATTEMPT = (
    NOW_MS
    + """
redis.call('XACK', KEYS[2], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[3])
  return 0
end
local attempts = redis.call('HGET', KEYS[1], 'callback_attempts') or '[]'
if attempts == '[]' then attempts = '[' .. ARGV[4] .. ']'
else attempts = string.sub(attempts, 1, -2) .. ',' .. ARGV[4] .. ']' end
redis.call('HSET', KEYS[1], 'callback_attempts', attempts, 'callback_state', ARGV[5])
if ARGV[5] == 'pending' then redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[6]), ARGV[3]) end
if ARGV[5] == 'failed' then redis.call('ZADD', KEYS[4], now_ms, ARGV[3]) else redis.call('ZREM', KEYS[4], ARGV[3]) end
return now_ms
"""
)

# KEYS[1] job hash, KEYS[2] outbox, KEYS[3] due set, KEYS[4] failed set; ARGV[1] job id. An operator's redelivery
# of a finished job's webhook: pending again, its window reopened from now, a fresh outbox entry (the webhook-id
# stays the same: a receiver that has it already drops it). Returns 1, 0 if the job has not ended, -1 if it has no
# callback, -2 if it is gone.
REDELIVER = (
    _WEBHOOK
    + """
local row = redis.call('HMGET', KEYS[1], 'status', 'callback_url')
if not row[1] then return -2 end
if not row[2] then return -1 end
if row[1] ~= 'done' and row[1] ~= 'failed' then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
webhook_due(KEYS[1], KEYS[2], ARGV[1])
return 1
"""
)
