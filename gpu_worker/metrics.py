"""A worker's Prometheus metrics (served on THUMBIFY_WORKER_METRICS_PORT); the API's are in api/metrics.py."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

JOBS = Counter("thumbify_jobs_total", "Jobs finished by a worker, by outcome and backend", ["outcome", "backend"])
JOB_ERRORS = Counter(
    "thumbify_job_errors_total",
    "Tries of a job that ended in an error, by the error's problem type (corrupt-image, image-timeout, ...), whether "
    "the job then failed, was retried or went to the dead letters",
    ["type"],
)
JOB_SECONDS = Histogram(
    "thumbify_job_seconds",
    "Image work per job (decode, resize, encode)",
    ["backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BATCH_SIZE = Histogram(
    "thumbify_batch_size", "Messages per batch read from the queue", buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
JOBS_IN_FLIGHT = Gauge(
    "thumbify_worker_jobs_in_flight", "Jobs this worker holds (rendering, or fetched to render next)"
)
RENDER_BATCH = Histogram(
    "thumbify_render_batch_size",
    "Images per batch handed to the GPU render process",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
RENDERS = Counter(
    "thumbify_renders_total",
    "Images handed to a backend (dali, tiles, vips), by why it took them: routed there, refused by the GPU backend "
    "it was routed to (then vips), or spilled to an idle vips process while the GPU was busy",
    ["backend", "why"],
)
RENDER_REPLACED = Counter(
    "thumbify_render_processes_replaced_total", "Render processes replaced after an image timed out or the process died"
)
WEBHOOK_ATTEMPTS = Counter(
    "thumbify_webhook_attempts_total",
    "Webhook delivery attempts by outcome: delivered (2xx), retry (to be tried again), failed (given up)",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "thumbify_webhook_delivery_seconds",
    "From a job's end to its webhook's delivery (retries included)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
WEBHOOK_OUTBOX = Gauge(
    "thumbify_webhook_outbox_depth", "Webhook deliveries not yet made (on the outbox or waiting for a retry)"
)
