"""The webhook delivery loop: a task of the worker process, beside the job loop and never in its way.

It reads the outbox (`thumbify.outbox`) through its consumer group, so the workers share the deliveries, at most
`webhook_concurrency` at once. For each event: the job (or the batch, for `batch.completed`) read, its URL checked
again (`thumbify.callback_url`: the host may resolve elsewhere now, DNS rebinding) and the job POSTed to the address
checked, as Standard Webhooks `{type, timestamp, data}` (data: the job as `GET /v1/jobs/{id}` shows it, or the batch
as `GET /v1/batches/{id}` does), signed with the API key's secret, else THUMBIFY_WEBHOOK_SECRET; no redirects
followed; each attempt bounded by `webhook_timeout_s`. The verdict (`thumbify.webhook_policy`) and the attempt are
recorded with the ack in one script: delivered, failed, or pending with its retry due later. The `webhook-id` is the
job and its status (or the batch and `completed`), so every attempt of one event (and a redelivery) carries the same
id. Entries a killed deliverer held are claimed after `claim_idle_s`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from gpu_worker.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_LATENCY, WEBHOOK_OUTBOX
from thumbify import batches, callback_url
from thumbify.errors import InvalidCallbackUrl
from thumbify.jobs import JobStore, now_iso
from thumbify.keys import KeyRing
from thumbify.outbox import Attempt, Event, Outbox
from thumbify.redis_conn import cancel_and_wait, raise_if_cancelled
from thumbify.settings import Settings
from thumbify.signing import linker
from thumbify.state import TERMINAL
from thumbify.views import batch_view, job_view
from thumbify.webhook_policy import Verdict, gives_up, judge, next_delay_s, retry_after_s, signed_headers

log = logging.getLogger("thumbify.webhooks")

POLL_S = 0.25  # how often due retries are promoted (and how long a read blocks)
CLAIM_EVERY_S = 2.0
STOP_GRACE_S = 2.0  # within the worker's wait for its background tasks (thumbify.redis_conn.cancel_and_wait)


@dataclass(frozen=True)
class _Webhook:
    """One delivery to make: the record it is kept on (a job's or a batch's), whose key signs it, where it goes
    (`callback`), and what is sent: `{type, timestamp, data}` under `webhook_id` (the same for every attempt)."""

    row: dict[str, str]
    owner: str
    callback: dict[str, Any]
    type: str
    webhook_id: str
    data: dict[str, Any]


class NoSecret(Exception):
    """Neither the job's key nor the settings hold a webhook secret: nothing to sign with, so nothing is sent."""


class Deliverer:
    def __init__(self, settings: Settings, store: JobStore, outbox: Outbox, name: str) -> None:
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.name = name
        self.keys = KeyRing.for_settings(settings)
        self.link = linker(settings)
        # A delivery left pending longer than this was held by a deliverer that died (an attempt takes at most
        # `webhook_timeout_s`, and its record follows at once).
        self.claim_idle_s = 2 * settings.webhook_timeout_s + 5
        self.inflight: set[asyncio.Task] = set()

    async def run(self) -> None:
        """Deliver until cancelled; Redis going away (or a bug) is logged and waited out."""
        timeout = httpx.Timeout(self.settings.webhook_timeout_s)
        # No connection kept alive: each delivery connects to the address it has just checked (a pooled connection,
        # keyed by address, could carry another host's request over a TLS session verified for the first).
        limits = httpx.Limits(max_connections=self.settings.webhook_concurrency, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False) as self.client:
            try:
                await self._loop()
            finally:
                # A stop lets the deliveries in flight finish briefly; those cut short stay pending and are claimed
                # again after `claim_idle_s` (the receiver may get them twice).
                if self.inflight:
                    await asyncio.wait(list(self.inflight), timeout=STOP_GRACE_S)
                await cancel_and_wait(list(self.inflight))

    async def _loop(self) -> None:
        last_claim = 0.0
        delay = 0.2
        while True:
            raise_if_cancelled()  # redis-py can swallow a cancel that lands mid-command (thumbify.redis_conn)
            try:
                if last_claim == 0.0:  # at start, and after Redis came back (it may have lost the group)
                    await self.outbox.ensure_group()
                await self.outbox.promote_due()
                WEBHOOK_OUTBOX.set(await self.outbox.depth())
                free = self.settings.webhook_concurrency - len(self.inflight)
                if free > 0 and time.monotonic() - last_claim > CLAIM_EVERY_S:
                    last_claim = time.monotonic()
                    idle_ms = int(self.claim_idle_s * 1000)
                    stale = await self.outbox.claim_stale(self.name, idle_ms, free)
                    if stale:
                        log.info("claimed %d webhook delivery(ies) a stopped worker held", len(stale))
                    free -= self._dispatch(stale)
                if free > 0:
                    self._dispatch(await self.outbox.read(self.name, free, int(POLL_S * 1000)))
                else:
                    await asyncio.wait(list(self.inflight), timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
                delay = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away or refusing, or a bug: never let it take the worker down
                raise_if_cancelled()  # a cancel redis-py turned into a connection error is still a cancel
                log.warning("webhook delivery loop: %s; retrying in %.1fs", exc, delay)
                last_claim = 0.0  # the group may be gone with Redis's data: make it again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _dispatch(self, events: list[Event]) -> int:
        for event in events:
            task = asyncio.create_task(self._deliver(event), name=f"webhook-{event.job_id}")
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)
        return len(events)

    async def _deliver(self, event: Event) -> None:
        try:
            await self._deliver_one(event)
        except asyncio.CancelledError:
            raise
        except Exception:  # the entry stays pending and is claimed again after `claim_idle_s`
            log.exception("webhook for job %s: unexpected error; it will be tried again", event.job_id)

    async def _deliver_one(self, event: Event) -> None:
        hook = await self._due(event)
        if hook is None:
            await self.outbox.ack(event)  # gone, requeued, or delivered already (a duplicate event)
            return
        at, started = now_iso(), time.monotonic()
        status, error, retry_after, verdict = None, None, None, None
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                response = await self._post(hook)
            status = response.status_code
            retry_after = retry_after_s(response.headers.get("retry-after"), datetime.now(UTC))
        except NoSecret as exc:
            error, verdict = str(exc), Verdict.FAILED
        except InvalidCallbackUrl as exc:  # it resolves elsewhere now; it may resolve back within the window
            error = exc.detail
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            error = f"{exc.__class__.__name__}: {exc}".rstrip(": ")
        attempt = Attempt(at, status, error, round((time.monotonic() - started) * 1000))
        verdict = verdict or judge(status)
        retry_in = 0.0
        ended_ms = hook.row.get("callback_ended_ms")
        if verdict == Verdict.RETRY:
            retry_in = next_delay_s(len(hook.callback["attempts"]) + 1, self.settings, retry_after)
            now_s = await self.outbox.now_ms() / 1000
            ended_s = int(ended_ms or 0) / 1000 or now_s
            if gives_up(ended_s, now_s + retry_in, self.settings):
                verdict = Verdict.FAILED
        state = {Verdict.DELIVERED: "delivered", Verdict.FAILED: "failed", Verdict.RETRY: "pending"}[verdict]
        now_ms = await self.outbox.record(event, attempt, state, retry_in)
        WEBHOOK_ATTEMPTS.labels(verdict.value).inc()
        if verdict == Verdict.DELIVERED and now_ms and ended_ms:
            WEBHOOK_LATENCY.observe(max(0.0, (now_ms - int(ended_ms)) / 1000))
        if verdict == Verdict.FAILED:
            log.warning("webhook for %s failed for good: %s", event.job_id, error or f"HTTP {status}")

    async def _due(self, event: Event) -> _Webhook | None:
        """The webhook the outbox entry stands for, if it is still to be sent: its job ended (or its batch
        completed) with the callback pending."""
        redis = self.store.redis
        batch_id = batches.batch_of(event.job_id)
        if batch_id is not None:
            row = await redis.hgetall(self.store.keys.batch(batch_id))
            batch = batches.as_batch(batch_id, row) if row else None
            if batch is None or batch.callback is None or not batch.completed or batch.callback["state"] != "pending":
                return None
            data = batch_view(batch).model_dump(mode="json")
            return _Webhook(row, batch.owner, batch.callback, "batch.completed", f"batch_{batch_id}_completed", data)
        row = await redis.hgetall(self.store.keys.job(event.job_id))
        job = JobStore.as_job(event.job_id, row) if row else None
        if job is None or job.callback is None or job.status not in TERMINAL or job.callback["state"] != "pending":
            return None
        data = job_view(job, self.link).model_dump(mode="json")
        return _Webhook(row, job.owner, job.callback, f"job.{job.status}", f"job_{job.id}_{job.status}", data)

    async def _post(self, hook: _Webhook) -> httpx.Response:
        where = await asyncio.to_thread(callback_url.target, hook.callback["url"], self.settings)
        secret = self._secret(hook.owner)
        payload = {"type": hook.type, "timestamp": now_iso(), "data": hook.data}
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = signed_headers(secret, hook.webhook_id, body, datetime.now(UTC))
        return await self.client.post(
            where.url, content=body, headers=headers | where.headers, extensions=where.extensions
        )

    def _secret(self, owner: str) -> str:
        key = self.keys.named(owner) if owner else None
        secret = (key.webhook_secret if key else "") or self.settings.webhook_secret.get_secret_value()
        if not secret:
            raise NoSecret("no webhook secret to sign with (the key has none, THUMBIFY_WEBHOOK_SECRET is unset)")
        return secret
