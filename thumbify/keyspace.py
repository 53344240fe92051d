"""Every Redis key Thumbify uses, named in one place from the settings' `key_prefix`.

The names are the data's format: a server restarted on an existing Redis finds its jobs by them, so they never
change. The Lua scripts (`thumbify.scripts`) derive two kinds of name themselves, from what they are passed, the
way `index_of` and `job` do here: `<index>:<status>` and `<job prefix><id>`, and a job's batch's names from the index
(`<prefix>:batch:<id>`, as `batch` does).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    # -- jobs (thumbify.jobs) ----------------------------------------------------------------------------------

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        """A job's record (a hash)."""
        return self.job_prefix + job_id

    @property
    def index(self) -> str:
        """Every job id (a sorted set read by lexicographic range); also the stem of the indexes below."""
        return f"{self.prefix}:index"

    def index_of(self, status: str) -> str:
        """The ids of the jobs in one status."""
        return f"{self.index}:{status}"

    def owner_index(self, owner: str) -> str:
        """The ids of one API key's jobs ("" when authentication is off)."""
        return f"{self.index}:owner:{owner}"

    @property
    def events(self) -> str:
        """The pub/sub channel that says `<job id> <status>` (or `deleted`) at each change."""
        return f"{self.prefix}:events"

    # -- batches (thumbify.batches) -------------------------------------------------------------------------------

    def batch(self, batch_id: str) -> str:
        """A batch's record (a hash: its counts, kept by the scripts, `thumbify.state.batch_moved`)."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_jobs(self, batch_id: str) -> str:
        """The ids of a batch's jobs (a sorted set read by lexicographic range, as `index` is)."""
        return f"{self.batch(batch_id)}:jobs"

    # -- the queue (thumbify.queue) ----------------------------------------------------------------------------

    @property
    def stream(self) -> str:
        return f"{self.prefix}:jobs"

    @property
    def delayed(self) -> str:
        """Jobs waiting for a retry, scored by when (ms)."""
        return f"{self.prefix}:delayed"

    @property
    def dead(self) -> str:
        """The dead-letter stream."""
        return f"{self.prefix}:dead"

    @property
    def workers(self) -> str:
        """The set of workers that publish heartbeats."""
        return f"{self.prefix}:workers"

    @property
    def worker_prefix(self) -> str:
        return f"{self.prefix}:worker:"

    def worker(self, name: str) -> str:
        """A worker's heartbeat (a key with a short TTL)."""
        return self.worker_prefix + name

    # -- webhooks (thumbify.outbox) ----------------------------------------------------------------------------

    @property
    def outbox(self) -> str:
        """Webhook deliveries to make (a stream of `{job}` read by a consumer group), added by the outcome scripts."""
        return f"{self.prefix}:webhooks"

    @property
    def webhooks_due(self) -> str:
        """Job ids whose next delivery attempt waits, scored by when (ms)."""
        return f"{self.prefix}:webhooks:due"

    @property
    def webhooks_failed(self) -> str:
        """Job ids whose delivery failed for good, scored by when (ms): what `thumbify webhooks list` shows."""
        return f"{self.prefix}:webhooks:failed"

    # -- housekeeping and the API's per-client state -----------------------------------------------------------

    @property
    def cleanup_lock(self) -> str:
        """Held by the worker that sweeps for retention (thumbify.retention)."""
        return f"{self.prefix}:lock:cleanup"

    def rate(self, client: str) -> str:
        """A client's token bucket (thumbify.ratelimit)."""
        return f"{self.prefix}:rate:{client}"

    def uploads(self, client: str) -> str:
        """A client's upload leases (thumbify.ratelimit)."""
        return f"{self.prefix}:upload-leases:{client}"

    def idempotency(self, client: str, key: str) -> str:
        """What a client's `Idempotency-Key` is bound to (api.idempotency); hashed, as the key is the client's
        text."""
        digest = hashlib.sha256(f"{client}\0{key}".encode()).hexdigest()
        return f"{self.prefix}:idem:{digest}"

    # -- direct uploads (thumbify.uploads) -----------------------------------------------------------------------

    def direct_upload(self, upload_id: str) -> str:
        """A direct upload's record (a hash) while it is open, and for a while after it completed."""
        return f"{self.prefix}:direct-upload:{upload_id}"

    @property
    def open_uploads(self) -> str:
        """Direct uploads not yet completed, scored by when their URLs expire (the retention sweep's to-do list)."""
        return f"{self.prefix}:direct-uploads:open"
