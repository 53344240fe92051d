"""Completion webhooks end to end: the API takes `callback_url`, the worker POSTs the finished job to a real HTTP
receiver (a server in this test on loopback, allow-listed), signed per Standard Webhooks, retried, recorded on the
job, and not lost when the delivering worker is killed.

Real things only: redis-server, uvicorn, the worker process, an HTTP server; the signature is checked with the
`standardwebhooks` library a receiver would use.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook
from support.cli import cli
from support.images import make_jpeg
from support.service import PYTHON, Service, start_service, stop_service
from support.webhooks import Receiver

from thumbify.redis_conn import free_port

SECRET = "whsec_" + base64.b64encode(b"thumbify-webhook-test-secret-32b").decode()
# Small so that retries and giving up happen within a test.
WINDOW_S = 6.0


@pytest.fixture
def receiver() -> Iterator[type[Receiver]]:
    made: list[Receiver] = []

    def make(answers: list, hold: threading.Event | None = None) -> Receiver:
        made.append(Receiver(answers, hold))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture(scope="module")
def hooked(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API and a worker that may call back to loopback over http, with small retry times and window."""
    env = {
        "callback_allow_http": "true",
        "callback_allow_hosts": '["127.0.0.1"]',
        "webhook_secret": SECRET,
        "webhook_retry_base_s": 0.05,
        "webhook_retry_max_s": 0.5,
        "webhook_window_s": WINDOW_S,
        "webhook_timeout_s": 2,
        "worker_metrics_port": free_port(),
    }
    svc = start_service(tmp_path_factory.mktemp("hooked"), redis_server, extra_env=env)
    try:
        yield svc
    finally:
        stop_service(svc)


def settled(svc: Service, job_id: str, timeout: float = 60.0) -> dict:
    """The job once its callback is no longer pending."""
    deadline = time.monotonic() + timeout
    while True:
        job = svc.wait(job_id)
        if job["callback"]["state"] != "pending":
            return job
        assert time.monotonic() < deadline, f"callback still pending: {job['callback']}\n{svc.log_text()}"
        time.sleep(0.1)


def test_a_delivery_is_signed_and_carries_the_job(hooked: Service, receiver) -> None:
    hook = receiver([200])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    job = settled(hooked, job_id)
    assert job["callback"]["state"] == "delivered", job["callback"]
    (attempt,) = job["callback"]["attempts"]
    assert attempt["status"] == 200 and attempt["error"] is None
    (headers, body), *_ = hook.received
    assert len(hook.received) == 1
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "job.done"
    assert payload["data"]["id"] == job_id and payload["data"]["status"] == "done"
    assert [t["name"] for t in payload["data"]["thumbnails"]] == [t["name"] for t in job["thumbnails"]]
    assert headers["webhook-id"] == f"job_{job_id}_done"
    # A body changed in transit, or signed with another secret, does not verify.
    with pytest.raises(Exception, match="[Ss]ignature"):
        Webhook(SECRET).verify(body.replace(b"done", b"dune"), headers)


def test_a_delivery_carries_the_facts_when_asked(hooked: Service, receiver) -> None:
    hook = receiver([200])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url, facts="true")["id"]
    job = settled(hooked, job_id)
    ((headers, body),) = hook.received
    facts = Webhook(SECRET).verify(body, headers)["data"]["source"]["facts"]
    assert facts == job["source"]["facts"] and len(facts["dhash"]) == 16


def test_the_worker_counts_deliveries_and_their_latency(hooked: Service, receiver) -> None:
    hook = receiver([200])
    settled(hooked, hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"])
    port = hooked.env["THUMBIFY_WORKER_METRICS_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {
        (s.name, s.labels.get("outcome")): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    assert samples[("thumbify_webhook_attempts_total", "delivered")] >= 1
    assert samples[("thumbify_webhook_delivery_seconds_count", None)] >= 1
    assert ("thumbify_webhook_outbox_depth", None) in samples


def test_a_receiver_failing_twice_gets_one_successful_delivery_and_three_attempts(hooked: Service, receiver) -> None:
    hook = receiver([500, 500, 200])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    job = settled(hooked, job_id)
    assert job["callback"]["state"] == "delivered", job["callback"]
    assert [a["status"] for a in job["callback"]["attempts"]] == [500, 500, 200]
    assert len(hook.received) == 3
    # Every attempt of one event carries the same webhook-id, so the receiver can dedupe.
    assert {h["webhook-id"] for h, _ in hook.received} == {f"job_{job_id}_done"}
    for headers, body in hook.received:
        Webhook(SECRET).verify(body, headers)


def test_a_429_is_retried_no_sooner_than_its_retry_after(hooked: Service, receiver) -> None:
    hook = receiver([(429, {"Retry-After": "2"}), 200])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    job = settled(hooked, job_id)
    first, second = job["callback"]["attempts"]
    assert (first["status"], second["status"], job["callback"]["state"]) == (429, 200, "delivered")
    waited = datetime.fromisoformat(second["at"]) - datetime.fromisoformat(first["at"])
    assert waited.total_seconds() >= 2  # the backoff alone (base 0.05 s) would have tried again at once


def test_a_receiver_down_for_the_whole_window_ends_failed(hooked: Service, receiver) -> None:
    hook = receiver([503])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    job = settled(hooked, job_id, timeout=WINDOW_S + 60)
    assert job["callback"]["state"] == "failed", job["callback"]
    attempts = job["callback"]["attempts"]
    assert len(attempts) >= 2 and {a["status"] for a in attempts} == {503}
    assert len(hook.received) == len(attempts)
    with hooked.redis() as r:
        assert job_id in r.zrange(hooked.keys.webhooks_failed, 0, -1)
    # A deleted job's failed webhook is no longer listed, and `webhooks list` drops it from the set.
    assert hooked.client.delete(f"/v1/jobs/{job_id}").status_code == 204
    listed = cli("webhooks", "list", "--json", redis_url=hooked.redis_url, key_prefix=hooked.key_prefix)
    assert listed.returncode == 0 and job_id not in listed.stdout, listed.stderr
    with hooked.redis() as r:
        assert job_id not in r.zrange(hooked.keys.webhooks_failed, 0, -1)


def test_a_4xx_answer_stops_at_once(hooked: Service, receiver) -> None:
    hook = receiver([410, 200])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    job = settled(hooked, job_id)
    assert job["callback"]["state"] == "failed"
    assert [a["status"] for a in job["callback"]["attempts"]] == [410]


def test_a_redirect_is_not_followed(hooked: Service, receiver) -> None:
    elsewhere = receiver([200])
    hook = receiver([(307, {"Location": elsewhere.url})])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    job = settled(hooked, job_id)
    assert job["callback"]["state"] == "failed"
    assert [a["status"] for a in job["callback"]["attempts"]] == [307]
    assert elsewhere.received == []


def test_a_failed_job_is_delivered_too(hooked: Service, receiver) -> None:
    hook = receiver([200])
    whole = make_jpeg(640, 480)
    job_id = hooked.submit_ok(whole[: len(whole) // 2], "broken.jpg", callback_url=hook.url)["id"]
    job = settled(hooked, job_id)
    assert job["status"] == "failed" and job["callback"]["state"] == "delivered"
    payload = Webhook(SECRET).verify(hook.received[0][1], hook.received[0][0])
    assert payload["type"] == "job.failed" and payload["data"]["error"]["type"] == job["error"]["type"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://10.1.2.3/hook", "internal address"),
        ("http://169.254.169.254/latest/meta-data", "internal address"),
        ("http://[::1]:9/hook", "internal address"),
        ("ftp://example.com/hook", "must use"),
    ],
)
def test_a_private_address_callback_is_refused_at_submit(hooked: Service, url: str, why: str) -> None:
    before = hooked.snapshot()
    r = hooked.submit(make_jpeg(64, 48), callback_url=url)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"].endswith("/invalid-callback-url") and why in problem["detail"]
    assert hooked.snapshot()["jobs"] == before["jobs"]


def test_a_job_without_a_callback_shows_none(hooked: Service) -> None:
    job = hooked.run_job(make_jpeg(64, 48))
    assert job["callback"] is None


def test_redeliver_sends_a_finished_jobs_webhook_again(hooked: Service, receiver) -> None:
    hook = receiver([410, 200])
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    assert settled(hooked, job_id)["callback"]["state"] == "failed"
    on_service = {"redis_url": hooked.redis_url, "key_prefix": hooked.key_prefix}
    done = cli("webhooks", "list", "--json", **on_service)
    assert done.returncode == 0, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    assert any(row["job"] == job_id and row["state"] == "failed" for row in listed), listed
    done = cli("webhooks", "redeliver", job_id, **on_service)
    assert done.returncode == 0, done.stderr
    job = settled(hooked, job_id)
    assert job["callback"]["state"] == "delivered"
    assert [a["status"] for a in job["callback"]["attempts"]] == [410, 200]
    assert {h["webhook-id"] for h, _ in hook.received} == {f"job_{job_id}_done"}


def test_a_worker_killed_mid_delivery_delivers_after_restart(hooked: Service, receiver, tmp_path: Path) -> None:
    """kill -9 of the delivering worker while the POST is in flight (the job done, its delivery not recorded): a
    restarted worker claims the delivery and makes it. (Last in the module: it replaces the module's worker.)"""
    hold = threading.Event()
    hook = receiver([200], hold=hold)
    job_id = hooked.submit_ok(make_jpeg(64, 48), callback_url=hook.url)["id"]
    assert hook.arrived.wait(60), hooked.log_text()
    worker = hooked.procs["worker"]
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    hold.set()  # the first POST's answer now goes nowhere
    assert hooked.get_job(job_id).json()["callback"]["state"] == "pending"
    hooked.start("worker-restarted", [PYTHON, "-m", "gpu_worker"])
    job = settled(hooked, job_id)
    assert job["callback"]["state"] == "delivered"
    assert len(hook.received) == 2  # the cut-short POST and the one after the restart: at least once
    assert {h["webhook-id"] for h, _ in hook.received} == {f"job_{job_id}_done"}
    (attempt,) = job["callback"]["attempts"]
    assert attempt["status"] == 200


def test_a_keys_default_callback_is_signed_with_the_keys_own_secret(
    redis_server: str, receiver, tmp_path: Path
) -> None:
    """`keys create --callback-url` gives the key a default callback and a secret of its own (shown once); with no
    global secret, a key without one cannot ask for a callback."""
    hook = receiver([200])
    data_dir = tmp_path / "svc" / "data"
    keys_file = data_dir / "keys.json"
    made = cli(
        "keys", "create", "hooky", "--callback-url", hook.url, "--file", str(keys_file), callback_allow_http=True
    )
    assert made.returncode == 0, made.stderr
    token, secret = made.stdout.split()
    assert secret.startswith("whsec_") and secret not in made.stderr
    plain = cli("keys", "create", "plain", "--file", str(keys_file))
    assert plain.returncode == 0, plain.stderr
    listed = cli("keys", "list", "--json", "--file", str(keys_file))
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert (rows["hooky"]["callback_url"], rows["plain"]["callback_url"]) == (hook.url, None)
    assert secret not in listed.stdout + listed.stderr
    refused = cli("keys", "create", "ftp", "--callback-url", "ftp://example.com/x", "--file", str(keys_file))
    assert refused.returncode == 2 and "must use https" in refused.stderr
    env = {"callback_allow_http": "true", "callback_allow_hosts": '["127.0.0.1"]', "webhook_retry_base_s": 0.05}
    svc = start_service(tmp_path / "svc", redis_server, extra_env=env)
    try:
        svc.client.headers["Authorization"] = f"Bearer {token}"
        job_id = svc.submit_ok(make_jpeg(64, 48))["id"]
        job = settled(svc, job_id)
        assert job["callback"]["url"] == hook.url and job["callback"]["state"] == "delivered"
        headers, body = hook.received[0]
        assert Webhook(secret).verify(body, headers)["data"]["id"] == job_id
        with pytest.raises(Exception, match="[Ss]ignature"):
            Webhook(SECRET).verify(body, headers)
        svc.client.headers["Authorization"] = f"Bearer {plain.stdout.strip()}"
        r = svc.submit(make_jpeg(64, 48), callback_url=hook.url)
        assert r.status_code == 422 and "no secret" in r.json()["detail"], r.text
    finally:
        stop_service(svc)
