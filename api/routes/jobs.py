"""Submit, read, list and delete jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response

from api import from_bucket, idempotency, upload
from api import prefer as prefer_header
from api.access_log import bind_job
from api.auth import Caller, Reader, Submitter
from api.callbacks import callback_for
from api.enqueue import enqueue, job_record
from api.metrics import UPLOAD_BYTES, UPLOADS
from api.options import collect, openapi_request_body, spec_for, validate_early
from api.problems import AUTH_PROBLEMS, STORAGE_PROBLEM_KINDS, UPLOAD_PROBLEM_KINDS, problem_responses
from api.services import Services, services
from api.waiter import read_until
from thumbify import logs, tracing
from thumbify.animation import AnimationLimits
from thumbify.errors import IdempotencyKeyReused, InvalidOptions, NotFound, QueueFull, RateLimited, ThumbifyError
from thumbify.jobs import Job, decode_cursor, new_job_id
from thumbify.probe import SNIFF_BYTES, SourceInfo, probe_for, sniff
from thumbify.settings import Settings
from thumbify.spec import ThumbnailSpec
from thumbify.state import TERMINAL, Status
from thumbify.storage import job_prefixes, original_key
from thumbify.views import JobPage, JobView, job_view

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
Svc = Annotated[Services, Depends(services)]


@dataclass(frozen=True)
class Page:
    limit: int
    after: str | None  # the job id the page starts after
    status: Status | None


async def page_query(
    limit: Annotated[int, Query(ge=1, le=200, description="Page size, 1..200.")] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    status: Annotated[Status | None, Query(description="Only jobs in this status.")] = None,
) -> Page:
    """The query parameters of a page of jobs (the job list's, a batch's); 422 for a cursor this API did not give
    out."""
    try:
        after = decode_cursor(cursor) if cursor else None
    except ValueError as exc:
        raise InvalidOptions(f"cursor: {exc}", errors=[{"field": "cursor", "message": str(exc)}]) from exc
    return Page(limit, after, status)


PageQuery = Annotated[Page, Depends(page_query)]


def wait_query(until: str):
    """The `wait` query parameter of a read that may wait for `until`."""
    description = f"Wait up to this many seconds (max 30) for {until}; answers as soon as it does."
    return Query(ge=0, le=30, description=description)


def query_options(request: Request) -> dict[str, list[str]]:
    return {key: request.query_params.getlist(key) for key in request.query_params.keys()}


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    summary="Upload an image and queue its thumbnails",
    description="Multipart body: `file` plus options as form fields. The same options may be given as query "
    "parameters instead (form fields win), which are checked before the upload is read. Option values match in any "
    "case (`JPEG`, `Cover`). Answers at once with the queued job and its `Location`. With an "
    "`Idempotency-Key` header, a retried request (same key, same client) within the window gets the job the key "
    "first created (header `Idempotent-Replayed: true`) instead of a new one; the same key with another request "
    "(other options or another file) is 422 `idempotency-key-reused`. With `Prefer: wait=S` it answers when the "
    "job ends, within S seconds: 201 with the finished job (else 202 as without it). A JSON body "
    '`{"source_key", "options"}` (or `?source_key=` and no body) makes the job of an object already in the '
    "bucket, never copied (S3 storage only); the same object with the same options again answers 200 with the job "
    "it made (`Idempotent-Replayed: true`).",
    openapi_extra=openapi_request_body(),
    responses={
        202: {
            "headers": {
                "Location": {"description": "The job's path", "required": True, "schema": {"type": "string"}},
                "Idempotent-Replayed": {
                    "description": "`true` when this answers a retry of an earlier request (same Idempotency-Key)",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            }
        },
        200: {
            "description": "`source_key`: this object was made a job of before, with these options: that job",
            "model": JobView,
            "headers": {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}}},
        },
        201: {
            "description": "The job ended (`done` or `failed`) within the `Prefer: wait`: the finished job",
            "model": JobView,
            "headers": {
                "Location": {"description": "The job's path", "required": True, "schema": {"type": "string"}},
            },
        },
        **problem_responses(
            *AUTH_PROBLEMS,
            406,
            408,
            409,
            413,
            415,
            422,
            501,
            503,
            descriptions={
                403: "The key lacks the `submit` scope (or, with `source_key`, may not read that object)",
                408: "The upload stalled (nothing arrived for `UPLOAD_IDLE_TIMEOUT_S`); the connection is closed",
                409: "A request with the same Idempotency-Key is still in progress",
                413: "Too many bytes",
                415: "Not an image we accept (judged by its bytes)",
                422: "Bad options, a callback_url we will not post to, too many pixels, an unreadable header, a "
                "malformed upload, or an Idempotency-Key first sent with another request",
                429: "Over the key's request rate or concurrent uploads; see Retry-After",
                503: "The queue is full, or the job store or the storage is unavailable; see Retry-After",
            },
            kinds=UPLOAD_PROBLEM_KINDS,
        ),
    },
)
async def create_job(
    request: Request,
    response: Response,
    svc: Svc,
    caller: Submitter,
    prefer: Annotated[
        str | None,
        Header(
            alias=prefer_header.HEADER,
            description="`wait=S` (RFC 7240, S ≤ 30): answer when the job ends, within S seconds (201 with the "
            "finished job), else as without it (202). Saves the client a second request for a small image.",
        ),
    ] = None,
    # The key is declared for the OpenAPI schema, the options in `openapi_request_body`; `_submit` reads them from
    # the request itself, so that a bad one is judged before the body is read, with our own problem+json.
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            description="A client-chosen key (1..255 visible ASCII characters): retrying with the same key returns "
            "the job it first created instead of a new one.",
        ),
    ] = None,
) -> JobView:
    wait_s = prefer_header.wait_seconds(prefer, svc.settings.max_wait_s)
    deadline = asyncio.get_running_loop().time() + wait_s
    job_id = new_job_id()
    # Watched before the job exists, so that its end cannot slip by between the enqueue and the wait.
    with svc.waiter.watch(job_id) as finished:
        try:
            with tracing.span("upload", {logs.REQUEST_ID: logs.current(logs.REQUEST_ID)}) as span:
                job, negotiated, replayed = await _submit(request, svc, caller, job_id)
                span.set_attribute(logs.JOB_ID, job.id)
        except ThumbifyError as exc:
            UPLOADS.labels(exc.slug).inc()
            raise
        logs.bind(job_id=job.id)  # a replay's job too
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
            if job.source.get("origin") == "ingest":
                response.status_code = 200  # the object was made a job of before: nothing new was made
        else:
            UPLOADS.labels("accepted").inc()
            UPLOAD_BYTES.inc(job.source["bytes"])
            if wait_s:
                job = await ended(svc, job, finished, deadline) or job
    if replayed and wait_s:
        job = await _read_until_ended(svc, job.id, caller, deadline)
    if wait_s and job.status in TERMINAL:  # without the preference a replay stays 202, as its first answer was
        response.status_code = 201
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if negotiated:
        response.headers["Vary"] = "Accept"
    return job_view(job, svc.link)


async def _submit(request: Request, svc: Services, caller: Caller, job_id: str) -> tuple[Job, bool, bool]:
    """Admit the request before reading its body (backpressure, the idempotency key, the key's upload slot), then
    accept the upload. Returns the job, whether its format was negotiated, and whether it is a replay of an earlier
    request."""
    settings = svc.settings
    if from_bucket.wanted(request):
        await admit(svc)
        return await from_bucket.source_job(request, svc, caller, job_id)
    key = idempotency.header_key(request)
    client = caller.owner or idempotency.client_of(request)
    claimed = reading = False
    replay: tuple[Job, idempotency.Held] | None = None
    try:
        await admit(svc)
        while key and not claimed and replay is None:
            held = await svc.idempotency.claim(client, key)
            if held is None:
                claimed = True
            elif (job := await svc.store.get(held.job_id)) is not None:
                replay = job, held
            else:
                await svc.idempotency.forget(client, key, held.job_id)  # its job was deleted since: start afresh
        async with upload_slot(svc, caller):
            query = query_options(request)
            validate_early(query, svc.presets)
            reading = True
            received = await upload.receive(
                request,
                settings.spool_dir,
                settings.max_upload_bytes,
                settings.upload_chunk_bytes,
                settings.upload_idle_timeout_s,
            )
            if replay is not None:
                return _replayed(query, received, *replay), False, True
            idem = (client, key) if key else None
            job, negotiated = await _accept(request, svc, job_id, query, received, caller, idem)
            return job, negotiated, False
    except BaseException:
        if not reading:  # refused before the body was read: read and drop it, so the client sees our answer
            await upload.drain(request, settings.upload_idle_timeout_s)
        if claimed:
            with contextlib.suppress(Exception):
                await asyncio.shield(svc.idempotency.forget(client, key))
        raise


@contextlib.asynccontextmanager
async def upload_slot(svc: Services, caller: Caller) -> AsyncIterator[None]:
    """One of the key's concurrent upload slots, held while its upload is read and accepted (429 when it has none
    free); no slot without a key."""
    slot = await svc.limits.enter_upload(caller.owner) if caller.owner else None
    if caller.owner and slot is None:
        raise RateLimited(
            f"the key {caller.owner!r} already has {svc.limits.max_uploads} uploads in flight", retry_after=1
        )
    try:
        yield
    finally:
        if slot is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(slot.release())


def _replayed(query: dict[str, list[str]], received: upload.Upload, job: Job, held: idempotency.Held) -> Job:
    """The job a retried request's key created, if the retry is the same request; its own upload is dropped."""
    try:
        same = held.matches(idempotency.fingerprint(collect(query, received.fields), received.sha256))
    finally:
        received.discard()
    if not same:
        raise IdempotencyKeyReused(
            f"this {idempotency.HEADER} was first sent with another request (other options or another file); "
            "use a new key for a new request"
        )
    return job


async def admit(svc: Services) -> None:
    """Backpressure: refuse while the queue is over its cap. Also fails fast (503) while Redis is down, once the
    depth it knows is a second old."""
    cap = svc.settings.max_queue_depth
    if cap and await svc.queue.full(cap):
        raise QueueFull(f"the queue holds {cap:,} or more jobs; retry later")


async def _accept(
    request: Request,
    svc: Services,
    job_id: str,
    query: dict[str, list[str]],
    received: upload.Upload,
    caller: Caller,
    key: tuple[str, str] | None,
) -> tuple[Job, bool]:
    """Check and store the upload, then create and enqueue the job in one transaction (which also binds the
    idempotency key, if any, to it: to the options as sent, as a retry is compared by them)."""
    settings, owner = svc.settings, caller.owner
    try:
        given = collect(query, received.fields)
        options = svc.presets.expand(given, caller.presets_only)
        info, spec, negotiated = await checked(request, settings, options, received)
        callback = await callback_for(options, svc.keys.named(owner) if owner else None, settings)
        logs.bind(job_id=job_id)
        record = await stored(svc, job_id, received, info, spec, owner, callback)
    except BaseException:
        received.discard()
        raise

    def bind_key(pipe) -> None:
        if key:
            svc.idempotency.bind_to(pipe, *key, job_id, idempotency.fingerprint(given, received.sha256))

    return await enqueue(svc, job_id, record, bind_key), negotiated


async def checked(
    request: Request, settings: Settings, options: dict[str, list[str]], received: upload.Upload
) -> tuple[SourceInfo, ThumbnailSpec, bool]:
    """The upload's header read and judged against the limits, and the spec its options make for it (`format=auto`
    weighs its alpha); whether the format was negotiated."""
    info = await _probe(received.source, settings)
    accept = request.headers.get("accept")
    spec, negotiated = spec_for(options, accept, info, AnimationLimits.from_settings(settings))
    return info, spec, negotiated


async def stored(
    svc: Services,
    job_id: str,
    received: upload.Upload,
    info: SourceInfo,
    spec: ThumbnailSpec,
    owner: str,
    extra: dict[str, str],
) -> dict[str, str]:
    """The job's record (plus the `extra` fields), not yet written; its original put in storage."""
    record = job_record(svc, job_id, received.filename, info, spec, owner, {"sha256": received.sha256}, extra)
    if isinstance(received.source, bytes):
        await svc.storage.put_bytes(original_key(job_id), received.source)
    else:
        await svc.storage.put_file(original_key(job_id), received.source)
    return record


async def _probe(source: Path | bytes, settings: Settings) -> SourceInfo:
    """The header read: inline for a small JPEG held in memory (its marker walk and header cost a fraction of a
    millisecond, less than the hop to a thread), in a thread for anything else (a GIF's or WebP's frames are counted
    block by block in Python, a spooled file may be large)."""
    if isinstance(source, bytes) and sniff(source[:SNIFF_BYTES]) == "jpeg":
        return probe_for(source, settings)
    return await anyio.to_thread.run_sync(probe_for, source, settings)


@router.get(
    "/{job_id}",
    response_model=JobView,
    summary="A job, optionally waiting for it to finish",
    responses=problem_responses(
        *AUTH_PROBLEMS,
        404,
        422,
        503,
        descriptions={403: "The key lacks the `read` scope", 404: "No such job for this key"},
    ),
)
async def get_job(
    job_id: str,
    svc: Svc,
    caller: Reader,
    wait: Annotated[float, wait_query("the job to end `done` or `failed`")] = 0,
) -> JobView:
    bind_job(job_id)
    deadline = asyncio.get_running_loop().time() + min(wait, svc.settings.max_wait_s)
    return job_view(await _read_until_ended(svc, job_id, caller, deadline), svc.link)


async def _read_until_ended(svc: Services, job_id: str, caller: Caller, deadline: float) -> Job:
    """The job once it ends or at the deadline (at once without one); NotFound if the caller may not see it or it
    is deleted meanwhile."""
    with svc.waiter.watch(job_id) as finished:
        job = await svc.store.get(job_id)
        if job is None or not caller.sees(job.owner):
            raise NotFound(f"no job {job_id}")
        job = await ended(svc, job, finished, deadline)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def ended(svc: Services, job: Job, finished: asyncio.Event, deadline: float) -> Job | None:
    """`job` (as last read, its `finished` event watched from before that read) once it ends or at the deadline,
    read again; None if it was deleted."""
    return await read_until(job, finished, deadline, lambda: svc.store.get(job.id), lambda j: j.status in TERMINAL)


@router.get(
    "",
    response_model=JobPage,
    summary="Jobs, newest first",
    responses=problem_responses(
        *AUTH_PROBLEMS,
        422,
        503,
        descriptions={403: "The key lacks the `read` scope", 422: "Bad `limit`, `cursor` or `status`"},
    ),
)
async def list_jobs(svc: Svc, caller: Reader, page: PageQuery) -> JobPage:
    return await job_page(svc, page, owner=None if caller.admin else caller.owner)


async def job_page(svc: Services, page: Page, owner: str | None = None, index: str = "") -> JobPage:
    """One page of jobs (`JobStore.page`: one owner's, or one index's), as the client sees them."""
    jobs, next_cursor = await svc.store.page(page.limit, page.after, page.status, owner, index)
    return JobPage(items=[job_view(j, svc.link) for j in jobs], next_cursor=next_cursor)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a job, its original and its thumbnails",
    responses=problem_responses(
        *AUTH_PROBLEMS,
        404,
        422,
        503,
        descriptions={403: "The key lacks the `submit` scope", 404: "No such job for this key"},
        kinds=STORAGE_PROBLEM_KINDS,
    ),
)
async def delete_job(job_id: str, svc: Svc, caller: Submitter) -> Response:
    bind_job(job_id)
    job = await svc.store.get(job_id)
    if job is None or not caller.sees(job.owner) or not await delete(svc, job_id):
        raise NotFound(f"no job {job_id}")
    return Response(status_code=204)


async def delete(svc: Services, job_id: str) -> bool:
    """A job, its original and its thumbnails deleted; False if there was no such job. The record goes first: a
    worker still busy with the job then sees it gone and removes what it wrote."""
    if not await svc.store.delete(job_id):
        return False
    for prefix in job_prefixes(job_id):
        await svc.storage.delete_prefix(prefix)
    return True
