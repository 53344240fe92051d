"""OpenTelemetry traces, optional and off by default: on only where `OTEL_EXPORTER_OTLP_ENDPOINT` is set and the
`otel` extra is installed (`pip install 'thumbify[otel]'`); otherwise every function here is a no-op and nothing
of OpenTelemetry is imported.

One trace per upload: the API's `upload` span; the job keeps its W3C `traceparent`, and each attempt of the job in
a worker is a `job` span, a child of the upload's span (so one trace runs from the upload to the thumbnails, retries
included), with `render` (and under it `decode`, `resize`, `encode`, from the backends' stage timings) and one
`store` span per thumbnail written. Spans go out in batches over OTLP/HTTP (the SDK reads the usual `OTEL_*`
variables: endpoint, headers, `OTEL_SERVICE_NAME`); metrics stay Prometheus's.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
log = logging.getLogger("thumbify")

_tracer: Any = None  # an SDK Tracer once `setup` turned tracing on
_provider: Any = None


def wanted() -> bool:
    """Whether this process's environment asks for traces (a render process only measures its stages then)."""
    return bool(os.environ.get(ENDPOINT_VAR))


def enabled() -> bool:
    return _tracer is not None


def setup(service: str, exporter: Any = None) -> bool:
    """Turn tracing on for this process when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (or `exporter` is given: the
    tests' in-memory one, exported span by span); True if it is on."""
    global _tracer, _provider
    if exporter is None and not wanted():
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("%s is set but OpenTelemetry is not installed (the `otel` extra): no traces", ENDPOINT_VAR)
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = SimpleSpanProcessor(exporter)
    shutdown()
    # Our own provider, not the global one: nothing else in the process is traced, and tests may set up again.
    _provider = TracerProvider(resource=Resource.create({"service.name": f"thumbify-{service}"}))
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("thumbify")
    return True


def shutdown() -> None:
    """Send what is still buffered and turn tracing off."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


class _NoSpan:
    def set_attribute(self, key: str, value: object) -> None:
        pass


_NO_SPAN = _NoSpan()


@contextlib.contextmanager
def span(name: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
    """A span, child of the current one, current inside the block (the span, or a stand-in taking attributes)."""
    if _tracer is None:
        yield _NO_SPAN
        return
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


@contextlib.contextmanager
def job_span(traceparent: str, attributes: dict[str, Any] | None = None) -> Iterator[Any]:
    """A worker's `job` span, child of the upload span whose W3C `traceparent` the job kept (a root span if none)."""
    if _tracer is None:
        yield _NO_SPAN
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
    with _tracer.start_as_current_span("job", context=parent, attributes=attributes) as current:
        yield current


def traceparent() -> str:
    """The current span as a W3C `traceparent` header value; "" when tracing is off."""
    if _tracer is None:
        return ""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def log_fields() -> dict[str, str]:
    """ECS `trace.id` and `span.id` of the current span, for log lines (thumbify/logs.py)."""
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace.id": format(ctx.trace_id, "032x"), "span.id": format(ctx.span_id, "016x")}


def render_stages(timings: dict[str, float], started_ns: int) -> None:
    """`decode`, `resize` and `encode` spans under the current one, from a render's stage timings (seconds, as the
    backends add them up: gpu_worker/backends/context.py) and its `total`, laid end to end from `started_ns`.
    `encode` is the encoders' time; `resize` the resample and finishing steps (on libvips' streaming path the decode
    runs inside the resample, and is counted here); `decode` the rest (header, opening, the eager decoders)."""
    if _tracer is None or not timings:
        return
    encode = timings.get("encode", 0.0)
    resize = sum(timings.get(k, 0.0) for k in ("resize", "dali-run", "copy", "finish+encode")) - encode
    decode = max(0.0, timings.get("total", 0.0) - resize - encode)
    at = started_ns
    for name, seconds in (("decode", decode), ("resize", max(0.0, resize)), ("encode", encode)):
        end = at + int(seconds * 1e9)
        _tracer.start_span(name, start_time=at, attributes={"thumbify.stage.seconds": seconds}).end(end_time=end)
        at = end
