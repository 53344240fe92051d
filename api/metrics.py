"""The API's Prometheus metrics (served at /metrics by api/routes/health.py). A worker exports its own
(gpu_worker/metrics.py): each process exports only what it sets, so no zero stands in for a number it cannot know."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

UPLOADS = Counter("thumbify_uploads_total", "Uploads by outcome", ["outcome"])
UPLOAD_BYTES = Counter("thumbify_upload_bytes_total", "Bytes of accepted uploads")
# Read from Redis at each scrape (every API replica reports the same numbers: take max() across them).
QUEUE_JOBS = Gauge(
    "thumbify_queue_jobs",
    "Jobs by queue state: waiting (no worker has read them), in_flight (read, not finished), delayed (waiting to be "
    "retried), dead (in the dead-letter stream)",
    ["state"],
)
QUEUE_OLDEST = Gauge(
    "thumbify_queue_oldest_job_seconds",
    "How long the oldest job still queued or in flight has waited since it was (last) queued, by Redis's clock; 0 "
    "when there is none",
)
REDIS_UP = Gauge("thumbify_redis_up", "1 when Redis answered this API's last scrape, else 0")
