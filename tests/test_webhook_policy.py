"""Webhook delivery rules (thumbify/webhook_policy.py): verdicts, backoff, Retry-After, the window, signatures."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from thumbify import webhook_policy as policy
from thumbify.settings import Settings

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, policy.Verdict.DELIVERED),
        (204, policy.Verdict.DELIVERED),
        (None, policy.Verdict.RETRY),
        (500, policy.Verdict.RETRY),
        (503, policy.Verdict.RETRY),
        (429, policy.Verdict.RETRY),
        (400, policy.Verdict.FAILED),
        (404, policy.Verdict.FAILED),
        (410, policy.Verdict.FAILED),
        (302, policy.Verdict.FAILED),
    ],
)
def test_verdicts(status: int | None, verdict: policy.Verdict) -> None:
    assert policy.judge(status) is verdict


def test_retry_after_reads_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert policy.retry_after_s("7", now) == 7.0
    assert policy.retry_after_s("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert policy.retry_after_s("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert policy.retry_after_s("soon", now) is None
    assert policy.retry_after_s(None, now) is None


def test_backoff_grows_is_capped_and_yields_to_retry_after() -> None:
    settings = Settings(webhook_retry_base_s=2.0, webhook_retry_max_s=10.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (30, 10.0)]:
        delays = [policy.next_delay_s(attempt, settings, rng=rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > ceiling / 2  # jitter spreads over the whole range
    assert policy.next_delay_s(1, settings, retry_after=60.0, rng=rng) == 60.0


def test_the_window_ends_retries() -> None:
    settings = Settings(webhook_window_s=100.0)
    assert not policy.gives_up(1000.0, 1099.0, settings)
    assert policy.gives_up(1000.0, 1101.0, settings)


def test_signature_verifies_with_standardwebhooks_and_fails_when_tampered() -> None:
    body = json.dumps({"type": "job.done", "data": {"id": "j1"}}).encode()
    headers = policy.signed_headers(SECRET, "msg_j1", body, datetime.now(UTC))
    assert Webhook(SECRET).verify(body, headers) == {"type": "job.done", "data": {"id": "j1"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"j1", b"j2"), headers)
    stale = policy.signed_headers(SECRET, "msg_j1", body, datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body, stale)
