"""Metrics: the queue's state as the API reports it, a scrape that survives Redis going away, and a real Prometheus
scraping the API and a worker while jobs run."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from support.images import make_jpeg
from support.service import log_tail, start_service, stop_service

from thumbify.queue import JobQueue
from thumbify.redis_conn import EmbeddedRedis, connect, free_port

PROMETHEUS = shutil.which("prometheus")


def gauge(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def queue_gauges(client: httpx.Client) -> dict[str, float | None]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    states = ("waiting", "in_flight", "delayed", "dead")
    found = {s: gauge(r.text, "thumbify_queue_jobs", f'{{state="{s}"}}') for s in states}
    return {**found, "redis_up": gauge(r.text, "thumbify_redis_up")}


def oldest_age(client: httpx.Client) -> float | None:
    return gauge(client.get("/metrics").text, "thumbify_queue_oldest_job_seconds")


def test_queue_states_as_the_api_reports_them(redis_server: str, tmp_path: Path) -> None:
    svc = start_service(tmp_path, redis_server, with_worker=False)
    try:
        assert queue_gauges(svc.client) == {"waiting": 0, "in_flight": 0, "delayed": 0, "dead": 0, "redis_up": 1}
        assert oldest_age(svc.client) == 0
        for i in range(4):
            svc.submit_ok(make_jpeg(64, 48), f"q{i}.jpg")
        assert queue_gauges(svc.client)["waiting"] == 4
        time.sleep(1.2)
        assert 1.0 <= oldest_age(svc.client) < 60  # the first job's, by Redis's clock

        async def move_some() -> None:
            # What workers do, through the queue's own operations: read two, retry one later, bury one.
            redis = connect(svc.redis_url)
            queue = JobQueue(redis, svc.keys)
            await queue.ensure_group()
            first, second = await queue.read("probe", 2, None)
            await queue.retry_later(first, 60, {"type": "t", "detail": "later"})
            await queue.bury(second, {"type": "t", "detail": "dead"}, 5)
            await queue.read("probe", 1, None)
            await redis.aclose()

        asyncio.run(move_some())
        assert queue_gauges(svc.client) == {"waiting": 1, "in_flight": 1, "delayed": 1, "dead": 1, "redis_up": 1}
    finally:
        stop_service(svc)


@pytest.mark.service
def test_a_scrape_survives_redis_going_away(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis", port=free_port()).start()
    svc = start_service(tmp_path / "svc", redis.url, with_worker=False)
    try:
        svc.submit_ok(make_jpeg(64, 48), "a.jpg")
        assert queue_gauges(svc.client)["waiting"] == 1
        redis.stop()
        after = queue_gauges(svc.client)
        assert after["redis_up"] == 0 and after["waiting"] == 1  # the last numbers, flagged stale
    finally:
        stop_service(svc)
        redis.stop()


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (Debian's package; .ci/run installs it)")
def test_prometheus_scrapes_the_api_and_a_worker(redis_server: str, tmp_path: Path) -> None:
    worker_port, prom_port = free_port(), free_port()
    svc = start_service(tmp_path / "svc", redis_server, extra_env={"worker_metrics_port": worker_port})
    api_target = svc.base_url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 2s, scrape_timeout: 2s}\n"
        "scrape_configs:\n"
        f"  - {{job_name: thumbify-api, static_configs: [{{targets: ['{api_target}']}}]}}\n"
        f"  - {{job_name: thumbify-worker, static_configs: [{{targets: ['127.0.0.1:{worker_port}']}}]}}\n"
    )
    log = tmp_path / "prometheus.log"
    argv = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
    argv += [f"--web.listen-address=127.0.0.1:{prom_port}"]
    with log.open("wb") as out:
        prom = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        for i in range(3):
            assert svc.run_job(make_jpeg(320, 240), f"p{i}.jpg")["status"] == "done"
        expectations = {
            'up{job="thumbify-api"}': lambda v: v == 1,
            'up{job="thumbify-worker"}': lambda v: v == 1,
            'sum(thumbify_jobs_total{outcome="done"})': lambda v: v >= 3,
            'sum(thumbify_job_seconds_count{backend="vips"})': lambda v: v >= 3,
            'sum(thumbify_uploads_total{outcome="accepted"})': lambda v: v >= 3,
            'thumbify_queue_jobs{state="waiting",job="thumbify-api"}': lambda v: v == 0,
            'thumbify_redis_up{job="thumbify-api"}': lambda v: v == 1,
            # Each process exports only what it sets: a worker's 0 here would read as "Redis down".
            'count(thumbify_redis_up{job="thumbify-worker"}) or vector(0)': lambda v: v == 0,
            'count(thumbify_worker_jobs_in_flight{job="thumbify-api"}) or vector(0)': lambda v: v == 0,
            'thumbify_worker_jobs_in_flight{job="thumbify-worker"}': lambda v: v == 0,
        }
        seen: dict[str, float | None] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for query, ok in expectations.items():
                if seen.get(query) is not None and ok(seen[query]):
                    continue
                try:
                    r = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": query}, timeout=2)
                    result = r.json()["data"]["result"]
                    seen[query] = float(result[0]["value"][1]) if result else None
                except (httpx.HTTPError, KeyError, ValueError):
                    seen[query] = None
            if all(seen.get(q) is not None and ok(seen[q]) for q, ok in expectations.items()):
                return
            time.sleep(0.5)
        pytest.fail(f"Prometheus did not see what it should: {seen}\n{log_tail(log)}")
    finally:
        prom.terminate()
        prom.wait(10)
        stop_service(svc)
