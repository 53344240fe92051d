"""Traces (thumbify/tracing.py): off and free without OpenTelemetry; on, one trace from the API's upload span to the
worker's job span (through the `traceparent` the job keeps) and its render stages and stores.

The API and the worker run in this process, so the SDK's in-memory exporter sees both; Redis is a real server, the
render processes real processes.
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import logging
import sys
import threading
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from support.images import make_jpeg
from support.service import start_service, stop_service

from thumbify import logs, tracing
from thumbify.keyspace import Keys
from thumbify.settings import Settings


def test_off_without_the_endpoint_or_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tracing.ENDPOINT_VAR, raising=False)
    assert not tracing.setup("test") and not tracing.enabled()
    with tracing.span("upload", {"a": 1}) as span:
        span.set_attribute("b", 2)
        assert tracing.traceparent() == ""
    with tracing.job_span("00-" + "1" * 32 + "-" + "2" * 16 + "-01"):
        tracing.render_stages({"total": 1.0}, 0)
    # Asked for, but the packages are missing: a warning, and still off.
    monkeypatch.setenv(tracing.ENDPOINT_VAR, "http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    assert not tracing.setup("test") and not tracing.enabled()


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch):
    """The SDK's in-memory exporter, fed span by span; the API's own `setup` (no endpoint here) leaves it be."""
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter", reason="no otel extra")
    monkeypatch.delenv(tracing.ENDPOINT_VAR, raising=False)
    spans = memory.InMemorySpanExporter()
    assert tracing.setup("test", spans)
    yield spans
    tracing.shutdown()


def test_one_trace_from_the_upload_to_the_thumbnails(redis_server: str, tmp_path: Path, exporter) -> None:
    settings = Settings(
        redis_url=redis_server, data_dir=tmp_path, key_prefix=f"t{uuid.uuid4().hex[:10]}", image_processes=1
    )
    job_id = asyncio.run(_upload_and_render(settings))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"upload", "job", "render", "decode", "resize", "encode", "store"} <= spans.keys(), spans.keys()
    upload, job = spans["upload"], spans["job"]
    assert job.parent.span_id == upload.context.span_id and job.context.trace_id == upload.context.trace_id
    assert upload.attributes["thumbify.job.id"] == job.attributes["thumbify.job.id"] == job_id
    assert upload.attributes["http.request.id"] == job.attributes["http.request.id"] == "traced-1"
    assert spans["render"].parent.span_id == job.context.span_id
    assert spans["store"].parent.span_id == job.context.span_id
    for stage in ("decode", "resize", "encode"):
        assert spans[stage].parent.span_id == spans["render"].context.span_id
        assert spans[stage].context.trace_id == upload.context.trace_id
    with redis.Redis.from_url(redis_server, decode_responses=True) as r:
        kept = r.hget(Keys(settings.key_prefix).job(job_id), "traceparent")
    assert kept.startswith(f"00-{upload.context.trace_id:032x}-{upload.context.span_id:016x}-")  # then the flags


async def _upload_and_render(settings: Settings) -> str:
    from api.app import create_app
    from gpu_worker.backends.vips import VipsBackend
    from gpu_worker.worker import Worker

    app = create_app(settings)
    worker = Worker(settings, VipsBackend(), name="traced")
    running = asyncio.create_task(worker.run())
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                r = await client.post(
                    "/v1/jobs",
                    files={"file": ("a.jpg", make_jpeg(64, 48), "image/jpeg")},
                    headers={"X-Request-ID": "traced-1"},
                )
                assert r.status_code == 202, r.text
                job_id = r.json()["id"]
                done = await client.get(f"/v1/jobs/{job_id}", params={"wait": 30})
                assert done.json()["status"] == "done", done.text
    finally:
        worker.stop()
        await running
    return job_id


def test_lines_logged_inside_a_span_carry_its_ids(exporter) -> None:
    record = logging.LogRecord("thumbify.test", logging.INFO, __file__, 1, "inside", (), None)
    with tracing.span("upload"):
        logs.ContextFilter().filter(record)
    (upload,) = exporter.get_finished_spans()
    assert record.__dict__["trace.id"] == f"{upload.context.trace_id:032x}"
    assert record.__dict__["span.id"] == f"{upload.context.span_id:016x}"


class _Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP receiver on loopback: it keeps every span exported to it (what an OpenTelemetry Collector
    would receive), with its resource's service.name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        super().__init__(("127.0.0.1", 0), _Receive)


class _Receive(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
            for scope_spans in resource_spans.scope_spans:
                self.server.spans += [(names[0], s) for s in scope_spans.spans]
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def test_the_service_sends_one_trace_over_otlp(redis_server: str, tmp_path: Path, monkeypatch) -> None:
    """The real processes (uvicorn, `python -m gpu_worker`, its render processes) with only the variable set: the
    spans reach an OTLP receiver, the worker's job span a child of the API's upload span."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the otel extra is not installed")
    collector = _Collector()
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    monkeypatch.setenv(tracing.ENDPOINT_VAR, f"http://127.0.0.1:{collector.server_address[1]}")
    try:
        svc = start_service(tmp_path, redis_server)
        try:
            job = svc.run_job(make_jpeg(64, 48), "traced.jpg")
        finally:
            stop_service(svc)  # the processes send what they still hold as they stop
    finally:
        collector.shutdown()
        collector.server_close()
    assert job["status"] == "done"
    spans = {(service, s.name): s for service, s in collector.spans}
    stages = ("job", "render", "decode", "resize", "encode", "store")
    want = {("thumbify-api", "upload")} | {("thumbify-worker", name) for name in stages}
    assert want <= spans.keys(), sorted(spans)
    upload, worker_job = spans["thumbify-api", "upload"], spans["thumbify-worker", "job"]
    assert worker_job.trace_id == upload.trace_id and worker_job.parent_span_id == upload.span_id
    assert {a.key: a.value.string_value for a in worker_job.attributes}["thumbify.job.id"] == job["id"]
