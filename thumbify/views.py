"""The job as clients see it: what `GET /v1/jobs/{id}` answers and what a webhook delivers (so it lives in the
core, which the API and the worker share)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from thumbify.batches import Batch, BatchEvents
from thumbify.jobs import Job, iso
from thumbify.spec import PRESET_NAME, Crop, Fit, Format, Keep, ThumbnailSpec
from thumbify.state import Status


class FactsView(BaseModel):
    """What the image is like, read off the smallest thumbnail's pixels (upright, sRGB, before crop or padding) at
    most 64 px a side, never off the original again. Colours and hashes weigh pixels by alpha (`transparent`)."""

    blurhash: str = Field(description="BlurHash (blurha.sh), 4x3 components, of the image over white")
    thumbhash: str = Field(description="ThumbHash (evanw.github.io/thumbhash), its bytes in base64; keeps alpha")
    dominant_color: str = Field(
        description="`#rrggbb`: the mean of the most populous cell of a 16x16x16 sRGB grid (pixels at least half "
        "opaque)",
        examples=["#1e6fa8"],
    )
    average_color: str = Field(description="`#rrggbb`: the alpha-weighted mean, in linear light", examples=["#6b7a80"])
    dhash: str = Field(
        description="64-bit difference hash (imagehash's `dhash`, to within a few bits), 16 hex digits, of the image "
        "over white: images a few bits apart (Hamming distance) look alike",
        examples=["0f1e3c78f0e1c387"],
    )
    transparent: bool = Field(description="Whether any pixel is not fully opaque (an alpha band all 255 is not)")


class SourceView(BaseModel):
    """The upload, as its header describes it."""

    filename: str = Field(description="The name the client gave the upload")
    format: str = Field(description="The format judged from its bytes", examples=["jpeg"])
    width: int = Field(description="Width as displayed (after the EXIF orientation)")
    height: int = Field(description="Height as displayed")
    bytes: int
    pages: int = Field(description="Frames or pages (1 for a still image)")
    has_alpha: bool
    sha256: str | None = Field(
        None,
        description="SHA-256 of the upload's bytes, hex; null where the API never read them (a direct upload, an "
        "object ingested from the bucket)",
    )
    origin: Literal["upload", "direct", "ingest"] = Field(
        "upload",
        description="How the original came: streamed through the API (`upload`), sent straight to the bucket "
        "(`direct`, POST /v1/uploads), or an object already there (`ingest`, `source_key`)",
    )
    key: str | None = Field(None, description="The source object's key in the bucket, for `ingest`")
    facts: FactsView | None = Field(None, description="The image's facts once the job is done; null unless `facts`")


class SpecView(BaseModel):
    """The options the thumbnails are made with: every option, defaults filled in (`format=auto` is resolved)."""

    sizes: list[Annotated[str, Field(pattern=r"^[0-9]+x[0-9]+$")]] = Field(
        description="Each box, `WxH`, in the order asked", examples=[["256x256", "640x480"]]
    )
    fit: Fit
    crop: Crop
    fx: Annotated[float | None, Field(ge=0, le=1, description="The focal point's x (crop=focal); else null")] = None
    fy: Annotated[float | None, Field(ge=0, le=1, description="The focal point's y (crop=focal); else null")] = None
    format: Format
    quality: Annotated[int, Field(ge=1, le=100)]
    background: str = Field(description="`#rrggbb`, or `#rrggbbaa` when not opaque", examples=["#ffffff"])
    progressive: bool = Field(description="Progressive JPEG, interlaced PNG")
    keep: Keep = Field(description="Which metadata the thumbnails keep")
    optimize_coding: bool = Field(description="JPEG: optimal Huffman tables")
    effort: int | None = Field(description="The WebP, AVIF or GIF encoder's effort; null for JPEG and PNG")
    preset: str | None = Field(
        None, pattern=PRESET_NAME, description="The preset the options came from (`preset=NAME`); null for none"
    )
    facts: bool = Field(False, description="Whether the job's source gets its facts (`source.facts`)")
    animated: bool = Field(False, description="An animated GIF or WebP source's thumbnails stay animated")


class PresetOptionsView(SpecView):
    """A preset's options, defaults filled in; its `format` may be `auto` (chosen per job by the Accept header)."""

    format: Format | Literal["auto"]


class PresetView(BaseModel):
    name: str = Field(pattern=PRESET_NAME, examples=["avatar"])
    options: PresetOptionsView


class PresetList(BaseModel):
    items: list[PresetView] = Field(description="Every preset, by name; empty when the server has none")


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


def spec_fields(spec: ThumbnailSpec) -> dict[str, Any]:
    """The spec as SpecView shows it: sizes as `WxH`."""
    return spec.model_dump(mode="json") | {"sizes": [str(size) for size in spec.sizes]}


def job_view(job: Job, link: Callable[[str], str] = str) -> JobView:
    """The client's view of `job`; `link` turns a thumbnail's path into its URL (e.g. a signed one)."""
    spec = spec_fields(job.spec)
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
