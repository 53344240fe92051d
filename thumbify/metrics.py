"""Prometheus metrics both processes export. Each process has its own registry and endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
