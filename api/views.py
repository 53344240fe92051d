"""The job as clients see it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from thumbify.jobs import Job, Status


class ThumbnailView(BaseModel):
    name: str
    width: int
    height: int
    format: str
    bytes: int
    url: str


class ErrorView(BaseModel):
    type: str
    detail: str


class JobView(BaseModel):
    id: str
    status: Status
    attempts: int
    created_at: str
    updated_at: str
    source: dict[str, Any]
    spec: dict[str, Any]
    thumbnails: list[ThumbnailView]
    error: ErrorView | None


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None


def thumbnail_path(job_id: str, name: str) -> str:
    return f"/v1/thumbnails/{job_id}/{name}"


def job_view(job: Job, link: Callable[[str], str] = str) -> JobView:
    """The client's view of `job`; `link` turns a thumbnail's path into its URL (e.g. a signed one)."""
    spec = job.spec.model_dump(mode="json")
    spec["sizes"] = [f"{s['width']}x{s['height']}" for s in spec["sizes"]]
    return JobView(
        id=job.id,
        status=job.status,
        attempts=job.attempts,
        created_at=job.created_at,
        updated_at=job.updated_at,
        source=job.source,
        spec=spec,
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
    )
