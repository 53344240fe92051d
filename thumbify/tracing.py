"""OpenTelemetry tracing, off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (placeholder until item 2)."""

from __future__ import annotations


def enabled() -> bool:
    return False


def log_fields() -> dict[str, str]:
    return {}
