"""The job as clients see it: what `GET /v1/jobs/{id}` answers and what a webhook delivers (so it lives in the
core, which the API and the worker share)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from thumbify.batches import Batch, BatchEvents
from thumbify.jobs import Job, iso
from thumbify.spec import Crop, Fit, Format
from thumbify.state import Status


class SourceView(BaseModel):
    """The upload, as its header describes it."""

    filename: str = Field(description="The name the client gave the upload")
    format: str = Field(description="The format judged from its bytes", examples=["jpeg"])
    width: int = Field(description="Width as displayed (after the EXIF orientation)")
    height: int = Field(description="Height as displayed")
    bytes: int
    pages: int = Field(description="Frames or pages (1 for a still image)")
    has_alpha: bool
    sha256: str = Field(description="SHA-256 of the upload's bytes, hex")


class SpecView(BaseModel):
    """The options the thumbnails are made with: every option, defaults filled in (`format=auto` is resolved)."""

    sizes: list[Annotated[str, Field(pattern=r"^[0-9]+x[0-9]+$")]] = Field(
        description="Each box, `WxH`, in the order asked", examples=[["256x256", "640x480"]]
    )
    fit: Fit
    crop: Crop
    format: Format
    quality: Annotated[int, Field(ge=1, le=100)]
    background: str = Field(description="`#rrggbb`, or `#rrggbbaa` when not opaque", examples=["#ffffff"])


class ThumbnailView(BaseModel):
    name: str
    width: int
    height: int
    format: Format
    bytes: int
    url: str = Field(description="Where to download it (signed when the server has a signing secret)")


class ErrorView(BaseModel):
    type: str
    detail: str


class AttemptView(BaseModel):
    at: str = Field(description="When the attempt began (ISO 8601, UTC)")
    status: int | None = Field(description="The receiver's HTTP status; null when it gave none")
    error: str | None = Field(description="Why there was no status (network error, timeout, refused URL)")
    ms: int = Field(description="How long the attempt took")


class CallbackView(BaseModel):
    """The job's completion webhook (Standard Webhooks, signed): sent when the job ends."""

    url: str
    state: Literal["pending", "delivered", "failed"] = Field(
        description="`pending` until the receiver answers 2xx (`delivered`) or the retries give up (`failed`)"
    )
    attempts: list[AttemptView]


class JobView(BaseModel):
    id: str
    status: Status
    attempts: int
    created_at: str
    updated_at: str
    source: SourceView
    spec: SpecView
    thumbnails: list[ThumbnailView] = Field(description="In the order the sizes were asked (once each)")
    error: ErrorView | None
    callback: CallbackView | None = Field(None, description="The completion webhook; null when the job has none")
    batch_id: str | None = Field(None, description="The batch it was submitted in; null for a job of its own")


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None


def thumbnail_path(job_id: str, name: str) -> str:
    return f"/v1/thumbnails/{job_id}/{name}"


def job_view(job: Job, link: Callable[[str], str] = str) -> JobView:
    """The client's view of `job`; `link` turns a thumbnail's path into its URL (e.g. a signed one)."""
    spec = job.spec.model_dump(mode="json") | {"sizes": [str(size) for size in job.spec.sizes]}
    return JobView(
        id=job.id,
        status=job.status,
        attempts=job.attempts,
        created_at=job.created_at,
        updated_at=job.updated_at,
        source=SourceView.model_validate(job.source),
        spec=SpecView.model_validate(spec),
        thumbnails=[
            ThumbnailView(
                name=t.name,
                width=t.width,
                height=t.height,
                format=t.format,
                bytes=t.bytes,
                url=link(thumbnail_path(job.id, t.name)),
            )
            for t in job.thumbnails
        ],
        error=ErrorView(**job.error) if job.error else None,
        callback=CallbackView.model_validate(job.callback) if job.callback else None,
        batch_id=job.batch_id or None,
    )


class BatchCounts(BaseModel):
    """The batch's files by status; a file refused at upload counts as `failed`."""

    queued: int
    processing: int
    done: int
    failed: int


class RejectedFile(BaseModel):
    """A file of the batch refused at upload (no job was made of it): why, as the problem a single upload gets."""

    index: int = Field(description="Its position among the request's `file` parts, from 0")
    filename: str
    problem: dict[str, Any] = Field(description="RFC 9457 problem details: `type`, `title`, `status`, `detail`")


class BatchView(BaseModel):
    id: str
    status: Literal["queued", "processing", "completed"] = Field(
        description="`completed` once every file has ended (`done` or `failed`)"
    )
    created_at: str
    completed_at: str | None = Field(description="When its last job ended; null before")
    counts: BatchCounts
    rejected: list[RejectedFile] = Field(description="Files refused at upload, each with its problem")
    events: BatchEvents = Field(
        description="The webhooks its callback gets: `batch` (one `batch.completed`), `jobs` (each job's), `both`"
    )
    callback: CallbackView | None = Field(description="The `batch.completed` webhook; null when there is none")


def batch_view(batch: Batch) -> BatchView:
    counts = batch.counts
    started = counts["processing"] + counts["done"] + counts["failed"] > len(batch.rejected)
    status = "completed" if batch.completed else "processing" if started else "queued"
    ended = batch.completed_ms if batch.completed and batch.completed_ms else None
    return BatchView(
        id=batch.id,
        status=status,
        created_at=batch.created_at,
        completed_at=iso(datetime.fromtimestamp(ended / 1000, UTC)) if ended else None,
        counts=BatchCounts(**counts),
        rejected=[RejectedFile.model_validate(r) for r in batch.rejected],
        events=batch.events,
        callback=CallbackView.model_validate(batch.callback) if batch.callback else None,
    )
