"""The one settings object. Every process reads it from `THUMBIFY_*` variables and passes it down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from thumbify.animation import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS
from thumbify.cpus import usable_cpus


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="THUMBIFY_", env_file=None, extra="ignore")

    # Where the local storage, the embedded Redis and upload spool files live.
    data_dir: Path = Path("data")
    # Empty means "embedded": `thumbify serve` starts a redis-server under data_dir/redis.
    redis_url: str = ""
    # The embedded Redis's fsync of its append-only file: "everysec" (a kill or power loss can lose the last ~2 s of
    # writes, jobs accepted then included) or "always" (nothing acknowledged is lost; each write waits for the disk).
    redis_appendfsync: Literal["everysec", "always"] = "everysec"
    key_prefix: str = "thumbify"
    # Redis connections an API process may hold at once (its pool); past them a request waits for one (up to 10 s),
    # so a burst of requests queues instead of failing. A long-poll holds none while it waits.
    redis_max_connections: int = Field(50, ge=2)

    # Where originals and thumbnails live: "local" (data_dir/objects, one machine or a shared volume) or "s3" (any
    # S3 API: AWS, MinIO, Ceph, R2). Empty S3 credentials and region leave them to boto's own chain (AWS_*
    # variables, profiles, IRSA); the endpoint is for servers other than AWS.
    storage: Literal["local", "s3"] = "local"
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Originals go up in parts of this size (S3's minimum part is 5 MiB).
    s3_part_mib: int = Field(16, ge=5, le=5120)
    # Thumbnail downloads answer 307 to a presigned URL on the bucket valid this long, so the bytes do not pass
    # through the API (the API still checks the key, the owner and If-None-Match first); 0 = stream them.
    s3_redirect_ttl_s: int = Field(0, ge=0, le=7 * 24 * 3600)
    # Direct uploads (POST /v1/uploads): the presigned URLs a client sends the file to live this long; an upload not
    # completed by then is abandoned, and the retention sweep deletes its object. They are made for this endpoint,
    # the one clients reach the bucket at, where it differs from the API's own (a cluster-internal MinIO).
    upload_url_ttl_s: int = Field(900, ge=60, le=7 * 24 * 3600)
    s3_public_endpoint_url: str = ""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1

    # Upload limits.
    max_upload_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 1_000_000_000
    # Every limit below is judged from the header alone, before any pixel is decoded (thumbify/probe.py).
    # Longest side: 65500 is the largest a JPEG can be (libjpeg's JPEG_MAX_DIMENSION); it keeps extreme strips
    # such as 10,000,000x1 (few pixels, but a row no line buffer should hold) away from the workers.
    max_side: int = Field(65_500, ge=1)
    # Frames of a GIF or animated WebP, pages of a TIFF or top-level images of a HEIF (counted by a bounded walk
    # of the container, so a GIF of millions of 1x1 frames costs microseconds, not gigabytes).
    max_frames: int = Field(1000, ge=1)
    # `animated=true` (thumbify/animation.py): frames an animated thumbnail keeps (the first ones, with their
    # delays; the rest are dropped), and the output pixels of all its frames and sizes, past which the job is
    # refused (422 animation-too-large): 40 M is 200 frames of 447x447, 160 MB as RGBA in one render process.
    animation_max_frames: int = Field(DEFAULT_MAX_FRAMES, ge=1)
    animation_max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    # What the decoder must hold in memory at once, estimated from the header: the coefficients of a progressive
    # (or multi-scan) JPEG, a whole interlaced PNG, a GIF frame, a row of TIFF tiles, a whole HEIF/AVIF. Formats
    # that stream (baseline JPEG, plain PNG, stripped TIFF) count nothing here. Size the worker's memory as
    # image_processes x this.
    max_decode_bytes: int = Field(1024 * 1024 * 1024, ge=1)
    # Browser origins allowed to call the API (CORS), e.g. ["https://app.example"]; empty = no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    upload_chunk_bytes: int = 1024 * 1024
    # An upload that sends nothing for this long is dropped (408), its spool file and its slot freed.
    upload_idle_timeout_s: float = Field(60.0, gt=0)
    # Backpressure: above this many queued or in-flight jobs `POST /v1/jobs` answers 503 before reading the body
    # (0 = no cap).
    max_queue_depth: int = Field(10_000, ge=0)
    # Files one `POST /v1/batches` may carry (each within the limits above); more is 413 too-many-files.
    max_batch_files: int = Field(100, ge=1, le=10_000)
    # How long an `Idempotency-Key` returns the job it first created.
    idempotency_window_s: int = Field(24 * 3600, ge=1)

    # Authentication (see thumbify/keys.py): keys from a JSON file (default: data_dir/keys.json, unless only
    # `api_keys` is set) and/or this variable. With neither the API is open, which it allows only on loopback.
    api_keys_file: Path | None = None
    api_keys: str = ""
    # Named option sets (`preset=avatar`, thumbify/presets.py): a YAML (.yaml/.yml) or JSON file, read and checked
    # at start (a bad one stops the API); none = no presets.
    presets_file: Path | None = None
    # Signs thumbnail URLs so a browser may fetch them for `signed_url_ttl_s` without a key; empty = no signed URLs.
    url_signing_secret: SecretStr = SecretStr("")
    signed_url_ttl_s: int = Field(3600, ge=1)
    # Per key: requests per second (token bucket; 0 = no limit), the bucket's size, uploads in flight at once.
    rate_limit_per_s: float = Field(50.0, ge=0)
    rate_limit_burst: int = Field(100, ge=1)
    max_concurrent_uploads: int = Field(8, ge=0)
    # Each of those uploads holds a lease on its slot, renewed while it streams: the slots of an API that dies free
    # themselves within this time.
    upload_lease_s: float = Field(30.0, ge=1)

    # Worker.
    batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_ms: int = Field(50, ge=0)
    # Render processes per worker (each image is decoded, resized and encoded in one of them, so a pathological
    # image can be stopped without taking the worker down); 0 = one per CPU
    # the process may use (thumbify/cpus.py: its cores, capped by a container's CPU quota).
    image_processes: int = Field(0, ge=0)
    # How many times the thumbnail's size a JPEG (DCT scaling) or WebP is decoded at before the final Lanczos-3
    # step: 1.9 holds >= 45 dB against a full decode (benchmarks/shrink_quality.py); 1.0 decodes to about the output
    # size and skips most of the resampling, as thumbor's Pillow `draft` does: faster on web-size JPEGs, ~38 dB.
    resample_headroom: float = Field(1.9, ge=1.0, le=8.0)
    # libvips threads per image; 1 keeps many small images from fighting over the cores.
    vips_concurrency: int = Field(1, ge=0)
    # Which backends this node runs (gpu_worker/backend_choice.py): "cpu" = vips in `image_processes` render processes;
    # "gpu" = also one GPU render process fed whole batches (DALI; tiles past `one_shot_max_pixels`; what DALI
    # refuses or fails on goes to vips), and refuse to start where CUDA, CuPy or DALI is missing; "auto" = "gpu"
    # where all three work, else "cpu", saying why in one log line at start.
    backend: Literal["auto", "gpu", "cpu"] = "auto"
    gpu_device_id: int = Field(0, ge=0)
    # On GPU nodes, an image routed to DALI renders on a vips render process instead when one is idle and the GPU
    # process is busy with a batch (gpu_worker/renderers.py): the node's cores work beside the GPU under load.
    gpu_spill: bool = True
    # DALI: images per pipeline run (the GPU render process also takes batches of up to this many), CPU threads of
    # the pipeline, the share of JPEGs sent to the hardware decoder (A100/H100/H200 and later), and nvJPEG's
    # preallocation hints (pixels; 0 = none) so that typical images never grow its buffers.
    dali_max_batch: int = Field(16, ge=1, le=256)
    dali_threads: int = Field(4, ge=1, le=64)
    dali_hw_decoder_load: float = Field(0.65, ge=0.0, le=1.0)
    dali_prealloc_width: int = Field(0, ge=0)
    dali_prealloc_height: int = Field(0, ge=0)
    # Past this many pixels an image is not decoded whole in one shot (DALI): the tiles backend streams it in strips.
    one_shot_max_pixels: int = Field(64_000_000, ge=1)
    # Rows per strip the tiles backend reads and resamples at a time; its host buffers are 2 x rows x width x bands
    # samples (256 rows of a 30000 px wide RGB image: 46 MB); the GPU holds one strip and its horizontal pass.
    tiles_strip_rows: int = Field(256, ge=1, le=65_536)
    # A message a worker holds this long without renewing its claim (it died or hung) is taken by another worker.
    # A live worker renews the claims on its in-flight messages every third of this.
    visibility_timeout_s: float = Field(300.0, gt=0)
    # Tries per job (a try that crashed or timed out counts); past it the job goes to the dead-letter stream.
    max_attempts: int = Field(5, ge=1)
    # Transient failures wait a random time in [0, min(retry_max_s, retry_base_s * 2 ** (attempt - 1))].
    retry_base_s: float = Field(1.0, ge=0)
    retry_max_s: float = Field(300.0, ge=0)
    # One image's render may take this long; then its render process is replaced and the job fails (image-timeout).
    image_timeout_s: float = Field(120.0, gt=0)
    # On SIGTERM: how long in-flight jobs may take to finish before they are handed back to the queue.
    shutdown_grace_s: float = Field(30.0, ge=0)
    # Finished jobs (record, original, thumbnails) are deleted this long after they finished; 0 keeps them forever.
    retention_s: float = Field(7 * 24 * 3600.0, ge=0)
    # How often one worker (a Redis lock picks which) sweeps expired jobs.
    cleanup_interval_s: float = Field(600.0, gt=0)
    # Delete a job's original as soon as its thumbnails are stored.
    delete_originals: bool = False
    worker_metrics_port: int = 0

    # Completion webhooks (thumbify/callback_url.py). A callback URL must be https unless `callback_allow_http`, and
    # every address its host resolves to must be public (not loopback, link-local, private, multicast, reserved),
    # checked at submit and again before each delivery (DNS rebinding), unless `callback_allow_hosts` names its
    # host or host:port.
    callback_allow_http: bool = False
    callback_allow_hosts: list[str] = Field(default_factory=list)
    # Signs webhooks (Standard Webhooks, "whsec_" + base64) where the job's API key has no secret of its own.
    webhook_secret: SecretStr = SecretStr("")
    # A delivery attempt may take this long; failed ones (network error, 5xx, 429) are retried after a random time in
    # [0, min(webhook_retry_max_s, webhook_retry_base_s * 2 ** (attempt - 1))] (or after Retry-After), until
    # `webhook_window_s` after the job ended; then the callback is `failed`.
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_retry_base_s: float = Field(5.0, ge=0)
    webhook_retry_max_s: float = Field(3600.0, ge=0)
    webhook_window_s: float = Field(24 * 3600.0, ge=0)
    # Deliveries one worker makes at once (beside its rendering, never in its way).
    webhook_concurrency: int = Field(16, ge=1)

    max_wait_s: float = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "json": one ECS JSON object per line (for Filebeat / Fluent Bit -> Elasticsearch); "console": plain text;
    # "auto": console on a terminal, JSON otherwise (thumbify/logs.py).
    log_format: Literal["auto", "json", "console"] = "auto"

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("THUMBIFY_STORAGE=s3 needs THUMBIFY_S3_BUCKET (and usually THUMBIFY_S3_ENDPOINT_URL)")
        return self

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    def image_process_count(self) -> int:
        """Render processes per worker: `image_processes`, or one per CPU this process may use (its cores, capped
        by a container's or unit's CPU quota)."""
        return self.image_processes or usable_cpus()
