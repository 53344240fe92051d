"""Thumbnail downloads: immutable bytes with a strong ETag."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse

from api.services import Services, services
from thumbify.errors import NotFound
from thumbify.spec import MEDIA_TYPES, Format

router = APIRouter(prefix="/v1/thumbnails", tags=["thumbnails"])
Svc = Annotated[Services, Depends(services)]
IMMUTABLE = "public, max-age=31536000, immutable"


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    return header.strip() == "*" or etag in [part.strip().removeprefix("W/") for part in header.split(",")]


@router.api_route(
    "/{job_id}/{name}",
    methods=["GET", "HEAD"],
    summary="A thumbnail's bytes",
    responses={200: {"content": {m: {} for m in MEDIA_TYPES.values()}}, 304: {"description": "Not modified"}},
)
async def get_thumbnail(job_id: str, name: str, request: Request, svc: Svc) -> Response:
    job = await svc.store.get(job_id)
    # The name is looked up in the job's own list: nothing the client sends ever becomes a path.
    thumb = next((t for t in job.thumbnails if t.name == name), None) if job else None
    if thumb is None:
        raise NotFound(f"no thumbnail {name!r} for job {job_id}")
    etag = f'"{thumb.etag}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    stored = await svc.storage.stat(f"thumbnails/{job_id}/{name}")
    if stored is None:
        raise NotFound(f"thumbnail {name!r} of job {job_id} is gone")
    media_type = MEDIA_TYPES[Format(thumb.format)]
    if stored.path is not None:
        return FileResponse(stored.path, media_type=media_type, headers=headers)
    return Response(await svc.storage.read(stored.key), media_type=media_type, headers=headers)
