"""What a webhook delivery attempt's answer means, when to try again, and how a delivery is signed.

Kept apart from the delivery loop (no I/O here) so the rules are tested once, directly: 2xx is delivered; a network
error, 5xx or 429 is retried with exponential backoff and full jitter (a 429's or 503's Retry-After wins when it asks
for longer), until the window since the job ended is spent; any other status (4xx, a 3xx since redirects are not
followed) stops at once, because sending the same body again cannot change the receiver's mind.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

from standardwebhooks import Webhook

from thumbify.settings import Settings


class Verdict(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


def judge(status: int | None) -> Verdict:
    """The verdict on one attempt: `status` is the HTTP status, None for a network error or timeout."""
    if status is not None and 200 <= status < 300:
        return Verdict.DELIVERED
    if status is None or status >= 500 or status == 429:
        return Verdict.RETRY
    return Verdict.FAILED


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP-date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay_s(
    attempt: int, settings: Settings, retry_after: float | None = None, rng: random.Random | None = None
) -> float:
    """How long to wait after failed attempt number `attempt` (1-based): full jitter, at least Retry-After."""
    ceiling = min(settings.webhook_retry_max_s, settings.webhook_retry_base_s * 2 ** (attempt - 1))
    delay = (rng or random).uniform(0, ceiling)
    return max(delay, retry_after) if retry_after is not None else delay


def gives_up(ended_at_s: float, retry_at_s: float, settings: Settings) -> bool:
    """Whether a retry at `retry_at_s` falls past the delivery window that opened when the job ended."""
    return retry_at_s - ended_at_s > settings.webhook_window_s


def signed_headers(secret: str, msg_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for `body` (HMAC-SHA256 over `id.timestamp.body`)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }
