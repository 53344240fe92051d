"""The one settings object. Every process reads it from `THUMBIFY_*` variables and passes it down."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THUMBIFY_", env_file=None, extra="ignore")

    # Where the local storage, the embedded Redis and upload spool files live.
    data_dir: Path = Path("data")
    # Empty means "embedded": `thumbify serve` starts a redis-server under data_dir/redis.
    redis_url: str = ""
    key_prefix: str = "thumbify"

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    # Upload limits.
    max_upload_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 1_000_000_000
    upload_chunk_bytes: int = 1024 * 1024
    # Backpressure: above this many queued or in-flight jobs `POST /v1/jobs` answers 503 before reading the body
    # (0 = no cap).
    max_queue_depth: int = Field(10_000, ge=0)
    # How long an `Idempotency-Key` returns the job it first created.
    idempotency_window_s: int = Field(24 * 3600, ge=1)

    # Worker.
    batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_ms: int = Field(50, ge=0)
    # Image threads per worker process; 0 = one per core.
    worker_threads: int = Field(0, ge=0)
    # libvips threads per image; 1 keeps many small images from fighting over the cores.
    vips_concurrency: int = Field(1, ge=0)
    visibility_timeout_s: float = 300.0
    max_attempts: int = 5
    worker_metrics_port: int = 0

    max_wait_s: float = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @property
    def originals_prefix(self) -> str:
        return "originals"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def image_threads(self) -> int:
        return self.worker_threads or (os.cpu_count() or 1)
