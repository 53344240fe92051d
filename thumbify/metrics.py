"""Prometheus metrics both processes export. Each process has its own registry and endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UPLOADS = Counter("thumbify_uploads_total", "Uploads by outcome", ["outcome"])
UPLOAD_BYTES = Counter("thumbify_upload_bytes_total", "Bytes of accepted uploads")
JOBS = Counter("thumbify_jobs_total", "Jobs finished by a worker, by outcome and backend", ["outcome", "backend"])
JOB_SECONDS = Histogram(
    "thumbify_job_seconds",
    "Image work per job (decode, resize, encode)",
    ["backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BATCH_SIZE = Histogram(
    "thumbify_batch_size", "Messages per batch read from the queue", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)

# Read from Redis by the API at each scrape (every API replica reports the same numbers: take max() across them).
QUEUE_JOBS = Gauge(
    "thumbify_queue_jobs",
    "Jobs by queue state: waiting (no worker has read them), in_flight (read, not finished), delayed (waiting to be "
    "retried), dead (in the dead-letter stream)",
    ["state"],
)
REDIS_UP = Gauge("thumbify_redis_up", "1 when Redis answered this process's last look, else 0")
JOBS_IN_FLIGHT = Gauge(
    "thumbify_worker_jobs_in_flight", "Jobs this worker holds (rendering, or fetched to render next)"
)
RENDER_REPLACED = Counter(
    "thumbify_render_processes_replaced_total", "Render processes replaced after an image timed out or the process died"
)
