"""Direct uploads: the client sends the file straight to the bucket with presigned URLs, then asks for the job.

`POST /v1/uploads` answers a presigned POST form (the bucket itself enforces the size range and the key), a presigned
PUT (its signature covers the length), or one presigned PUT per part of a multipart upload. `complete` checks the
object where it lies (thumbify.probe_stored: a HEAD and the header's bytes) and creates the job, whose id is the
upload's; a refused object is deleted. Uploads never completed are swept after their URLs expire (thumbify.uploads).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from api import prefer as prefer_header
from api.auth import Reader, Submitter
from api.callbacks import callback_for
from api.from_bucket import job_of_object, options_of
from api.json_body import documented, parsed
from api.metrics import UPLOAD_BYTES, UPLOADS
from api.options import job_options, spec_options
from api.problems import AUTH_PROBLEMS, UPLOAD_PROBLEM_KINDS, problem_responses
from api.routes.jobs import admit, ended
from api.services import Services, services
from thumbify import logs
from thumbify.errors import (
    Conflict,
    CorruptImage,
    InvalidUpload,
    NotFound,
    SideTooLong,
    ThumbifyError,
    TooLarge,
    TooManyFrames,
    TooManyPixels,
    UnsupportedMedia,
    UploadExpired,
    UploadNotReceived,
    invalid_options,
)
from thumbify.jobs import JOB_ID_RE, new_job_id
from thumbify.retention import iso as iso_of
from thumbify.spec import ThumbnailSpec
from thumbify.state import TERMINAL
from thumbify.uploads import DirectUpload
from thumbify.views import JobView, job_view

router = APIRouter(prefix="/v1/uploads", tags=["uploads"])
Svc = Annotated[Services, Depends(services)]

MIN_PART = 5 * 1024 * 1024  # S3's smallest part (but the last)
MAX_PARTS = 10_000
# What refuses the object itself (it is deleted, the upload closed); anything else leaves the upload open for a retry.
REFUSALS = (UnsupportedMedia, TooLarge, InvalidUpload, CorruptImage, TooManyPixels, SideTooLong, TooManyFrames)


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255, description="The file's name (its stem names the thumbnails)")
    size: int = Field(ge=1, description="Its size in bytes, at most `THUMBIFY_MAX_UPLOAD_BYTES`")
    content_type: str | None = Field(None, description="Informative only: the bytes are judged, not this")
    method: Literal["POST", "PUT"] | None = Field(
        None, description="`POST` (default for one part): an HTML form the bucket checks; `PUT`: a presigned PUT"
    )
    parts: int = Field(1, ge=1, le=MAX_PARTS, description="2+: a multipart upload, one presigned PUT per part")
    options: dict[str, str | int | list[str]] = Field(
        default_factory=dict, description="The job's options, as the form fields of `POST /v1/jobs`"
    )


class PartTicket(BaseModel):
    number: int
    url: str
    size: int


class UploadTicket(BaseModel):
    id: str = Field(description="The upload's id, and its job's once completed")
    method: Literal["POST", "PUT"]
    url: str | None = Field(None, description="Where to send the file (one part)")
    fields: dict[str, str] | None = Field(
        None, description="POST: the form fields to send, in this order, before the `file` part (last)"
    )
    headers: dict[str, str] | None = Field(None, description="PUT: headers the request must carry")
    part_size: int | None = Field(None, description="Multipart: each part's size but the last's")
    parts: list[PartTicket] | None = Field(None, description="Multipart: each part's presigned PUT")
    expires_at: str
    complete_url: str


class UploadState(BaseModel):
    id: str
    status: Literal["pending", "completed"]
    expires_at: str
    job_id: str | None


class PartDone(BaseModel):
    number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(min_length=1, max_length=256, description="The ETag header the bucket answered the part's PUT")


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: list[PartDone] | None = Field(None, description="Multipart: every part, with its ETag")


@router.post(
    "",
    status_code=201,
    response_model=UploadTicket,
    response_model_exclude_none=True,
    openapi_extra=documented(UploadRequest),
    summary="Start a direct upload: presigned URLs to send the file straight to the bucket",
    description="For large files: the bytes go to the bucket, never through the API. Send the file as the answer "
    "says, then `POST /v1/uploads/{id}/complete`. URLs expire after `THUMBIFY_UPLOAD_URL_TTL_S`; an upload not "
    "completed by then is deleted. Needs S3 storage (501 on a local folder: POST the file to /v1/jobs).",
    responses=problem_responses(
        *AUTH_PROBLEMS,
        413,
        422,
        501,
        503,
        descriptions={413: "`size` over the upload limit", 422: "Bad `parts`, options or body"},
    ),
)
async def start_upload(request: Request, response: Response, svc: Svc, caller: Submitter):
    presign = svc.s3()
    body = await parsed(request, UploadRequest)
    settings = svc.settings
    if body.size > settings.max_upload_bytes:
        raise TooLarge(f"the upload is larger than the limit of {settings.max_upload_bytes:,} bytes")
    method = body.method or ("POST" if body.parts == 1 else "PUT")
    if body.parts > 1 and method == "POST":
        raise invalid_options([{"field": "method", "message": "a multipart upload (parts > 1) is sent with PUT"}])
    part_size = math.ceil(body.size / body.parts)
    if body.parts > 1 and (part_size < MIN_PART or part_size * (body.parts - 1) >= body.size):
        why = f"each part but the last must be at least {MIN_PART:,} bytes: at most {body.size // MIN_PART} parts"
        raise invalid_options([{"field": "parts", "message": why}])
    options = job_options({}, options_of(body.options), svc.presets, caller.presets_only)
    ThumbnailSpec.from_options(spec_options(options))  # a bad option is refused before anything is sent
    await callback_for(options, svc.keys.named(caller.owner) if caller.owner else None, settings)
    await admit(svc)
    upload_id = new_job_id()
    ttl = settings.upload_url_ttl_s
    upload = DirectUpload(
        upload_id, caller.owner, body.filename, body.size, method, body.parts, time.time() + ttl, options
    )
    ticket = UploadTicket(
        id=upload_id,
        method=method,
        expires_at=iso_of(upload.expires_at),
        complete_url=f"/v1/uploads/{upload_id}/complete",
    )
    if body.parts > 1:
        upload.multipart_id = await presign.start_multipart(upload.key)
        ticket.part_size, ticket.parts = part_size, []
        for number in range(1, body.parts + 1):
            size = min(part_size, body.size - part_size * (number - 1))
            url = await presign.part(upload.key, upload.multipart_id, number, size, ttl)
            ticket.parts.append(PartTicket(number=number, url=url, size=size))
    elif method == "PUT":
        ticket.url, ticket.headers = await presign.put(upload.key, body.size, ttl), {}
    else:
        ticket.url, ticket.fields = await presign.post(upload.key, body.size, ttl)
    await svc.uploads.add(upload)
    logs.bind(job_id=upload_id)
    response.headers["Location"] = f"/v1/uploads/{upload_id}"
    return ticket


@router.post(
    "/{upload_id}/complete",
    status_code=202,
    response_model=JobView,
    openapi_extra=documented(CompleteRequest, required=False),
    summary="Finish a direct upload: the object is checked and its job queued",
    description="The object is judged as an upload is (size, magic bytes, header; the same problem types), where it "
    "lies; a refused one is deleted and the upload closed. 202 with the job (its id is the upload's); again after "
    "that, the same job. 409 `upload-not-received` while the object is not in the bucket (the upload stays open). "
    "With `Prefer: wait=S`, 201 with the finished job if it ends within S seconds.",
    responses={
        201: {"description": "The job ended within the `Prefer: wait`", "model": JobView},
        **problem_responses(
            *AUTH_PROBLEMS,
            404,
            409,
            410,
            413,
            415,
            422,
            501,
            503,
            kinds=UPLOAD_PROBLEM_KINDS | {409: (UploadNotReceived, Conflict)},
            descriptions={
                404: "No such upload for this key (or it was refused, swept or completed long ago)",
                409: "The object is not in the bucket yet, or another request is completing it",
                410: "Its URLs expired before it was completed: the object is deleted",
                413: "The object is over the upload limit",
                415: "Not an image we accept (judged by its bytes)",
            },
        ),
    },
)
async def complete_upload(
    upload_id: str,
    request: Request,
    response: Response,
    svc: Svc,
    caller: Submitter,
    prefer: Annotated[
        str | None, Header(alias=prefer_header.HEADER, description="`wait=S`, as on POST /v1/jobs")
    ] = None,
) -> JobView:
    presign = svc.s3()
    logs.bind(job_id=upload_id)
    body = await parsed(request, CompleteRequest)
    wait_s = prefer_header.wait_seconds(prefer, svc.settings.max_wait_s)
    deadline = asyncio.get_running_loop().time() + wait_s
    upload = await _upload(svc, upload_id, caller)
    with svc.waiter.watch(upload_id) as finished:
        if upload.status == "completed":
            job = await svc.store.get(upload_id)
            if job is None:
                raise NotFound(f"no upload {upload_id}")
        else:
            try:
                job = await _complete(request, svc, presign, upload, body)
            except ThumbifyError as exc:
                UPLOADS.labels(exc.slug).inc()
                raise
            UPLOADS.labels("accepted").inc()
            UPLOAD_BYTES.inc(job.source["bytes"])
        if wait_s:
            job = await ended(svc, job, finished, deadline) or job
    if wait_s and job.status in TERMINAL:
        response.status_code = 201
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_view(job, svc.link)


async def _complete(request: Request, svc: Services, presign, upload: DirectUpload, body: CompleteRequest | None):
    if upload.expired():
        await svc.uploads.drop(svc.storage, upload.id)
        raise UploadExpired(f"the upload's URLs expired at {iso_of(upload.expires_at)}; start a new upload")
    await admit(svc)
    if not await svc.uploads.claim(upload.id):
        raise Conflict("another request is completing this upload; retry when it has finished")
    try:
        if upload.parts > 1:
            await _join_parts(presign, upload, body)
        source = {"origin": "direct"}

        def completed(pipe) -> None:
            svc.uploads.completed_in(pipe, upload)

        job, _ = await job_of_object(
            request, svc, upload.id, upload.key, upload.filename, upload.options, upload.owner, source, completed
        )
        return job
    except FileNotFoundError:
        await svc.uploads.unclaim(upload.id)
        raise UploadNotReceived(
            "the file is not in the bucket yet: send it as POST /v1/uploads said, then complete"
        ) from None
    except REFUSALS:
        await svc.uploads.drop(svc.storage, upload.id)
        raise
    except BaseException:
        await asyncio.shield(svc.uploads.unclaim(upload.id))
        raise


async def _join_parts(presign, upload: DirectUpload, body: CompleteRequest | None) -> None:
    """A multipart upload's parts joined into the object (done already if an earlier `complete` got that far)."""
    parts = sorted((p.number, p.etag) for p in (body.parts if body and body.parts else []))
    if [n for n, _ in parts] != list(range(1, upload.parts + 1)):
        why = f"list each of the {upload.parts} parts once, with the ETag its PUT answered"
        raise invalid_options([{"field": "parts", "message": why}])
    try:
        await presign.complete_multipart(upload.key, upload.multipart_id, parts)
    except FileNotFoundError:  # no such multipart upload: joined by an earlier `complete`, or never started
        if await presign.storage.stat(upload.key) is None:
            raise
    except ValueError as exc:  # a part missing, or an ETag that is not the part's
        raise invalid_options([{"field": "parts", "message": f"the bucket refused the parts: {exc}"}]) from exc


@router.get(
    "/{upload_id}",
    response_model=UploadState,
    summary="A direct upload's state",
    responses=problem_responses(*AUTH_PROBLEMS, 404, 422, 501, 503),
)
async def get_upload(upload_id: str, svc: Svc, caller: Reader) -> UploadState:
    svc.s3()
    upload = await _upload(svc, upload_id, caller)
    done = upload.status == "completed"
    status = "completed" if done else "pending"
    return UploadState(
        id=upload.id, status=status, expires_at=iso_of(upload.expires_at), job_id=upload.id if done else None
    )


@router.delete(
    "/{upload_id}",
    status_code=204,
    summary="Abandon a direct upload: its object deleted, its multipart upload aborted",
    responses=problem_responses(*AUTH_PROBLEMS, 404, 409, 422, 501, 503),
)
async def delete_upload(upload_id: str, svc: Svc, caller: Submitter) -> Response:
    svc.s3()
    upload = await _upload(svc, upload_id, caller)
    if upload.status != "pending":
        raise Conflict("the upload is completed (delete its job instead) or being completed")
    await svc.uploads.drop(svc.storage, upload.id)
    return Response(status_code=204)


async def _upload(svc: Services, upload_id: str, caller) -> DirectUpload:
    """The caller's upload; 404 as for one that does not exist otherwise."""
    upload = await svc.uploads.get(upload_id) if JOB_ID_RE.fullmatch(upload_id) else None
    if upload is None or not caller.sees(upload.owner):
        raise NotFound(f"no upload {upload_id}")
    return upload
