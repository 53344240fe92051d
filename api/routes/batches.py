"""Submit, read, list the jobs of and delete batches: many uploads with one set of options (thumbify.batches).

A batch's files are read as a single upload's are (api/upload.py, each file within the same byte limit, judged by
its bytes), probed and stored one by one as a single upload's are (`checked`, `stored`), and then every job and the
batch are written in one transaction: no job can end before its batch counts it, and the jobs reach the queue
together. A file refused (too large, not an image, corrupt header, too many pixels) is refused alone: it is listed
in the batch's `rejected` with its problem and counts as failed; the others run.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from api import upload
from api.auth import Caller, Reader, Submitter
from api.callbacks import callback_for
from api.metrics import UPLOAD_BYTES, UPLOADS
from api.options import BATCH_OPTIONS, job_options, openapi_request_body, spec_options, validate_early
from api.problems import AUTH_PROBLEMS, BATCH_PROBLEM_KINDS, STORAGE_PROBLEM_KINDS, problem_of, problem_responses
from api.routes.jobs import (
    PageQuery,
    admit,
    checked,
    delete,
    job_page,
    query_options,
    stored,
    upload_slot,
    wait_query,
)
from api.services import Services, services
from api.waiter import read_until
from thumbify import batches
from thumbify.batches import BATCH_EVENTS, Batch
from thumbify.errors import InvalidOptions, InvalidUpload, NotFound, ThumbifyError
from thumbify.jobs import new_job_id, now_iso
from thumbify.spec import ThumbnailSpec
from thumbify.storage import original_key
from thumbify.views import BatchView, JobPage, JobView, batch_view, job_view

router = APIRouter(prefix="/v1/batches", tags=["batches"])
Svc = Annotated[Services, Depends(services)]
NO_SUCH = {404: "No such batch for this key"}


class BatchCreated(BatchView):
    jobs: list[JobView] = Field(description="A job for each file accepted, in the order of the `file` parts")


@router.post(
    "",
    status_code=202,
    response_model=BatchCreated,
    summary="Upload several images with one set of options",
    description="Multipart body: several `file` parts (at most `THUMBIFY_MAX_BATCH_FILES`, default 100, each within "
    "the single upload's byte and pixel limits) and the options of `POST /v1/jobs` as form fields (or query "
    "parameters), plus `batch_events`. Each file becomes an ordinary job that knows its batch (`batch_id`). A file "
    "refused at upload is refused alone: it is listed in `rejected` with its problem and counted `failed`, the "
    "others run. With a `callback_url` (or the key's), one signed `batch.completed` webhook is sent when the last "
    "job ends (`batch_events=batch`, the default), or each job's own (`jobs`), or both. Answers at once. (No "
    "`Idempotency-Key` or `Prefer: wait` here: wait with `GET /v1/batches/{id}?wait=`.)",
    openapi_extra=openapi_request_body(batch=True),
    responses={
        202: {
            "headers": {
                "Location": {"description": "The batch's path", "required": True, "schema": {"type": "string"}},
            }
        },
        **problem_responses(
            *AUTH_PROBLEMS,
            406,
            408,
            413,
            422,
            503,
            descriptions={
                403: "The key lacks the `submit` scope",
                408: "The upload stalled (nothing arrived for `UPLOAD_IDLE_TIMEOUT_S`); the connection is closed",
                413: "More `file` parts than `THUMBIFY_MAX_BATCH_FILES` (too-many-files), or a body larger than "
                "that many files may be",
                422: "Bad options, a callback_url we will not post to, a malformed upload, or every file refused "
                "(`rejected` says why each was)",
                429: "Over the key's request rate or concurrent uploads; see Retry-After",
                503: "The queue is full, or the job store or the storage is unavailable; see Retry-After",
            },
            kinds=BATCH_PROBLEM_KINDS,
        ),
    },
)
async def create_batch(request: Request, response: Response, svc: Svc, caller: Submitter) -> BatchCreated:
    settings = svc.settings
    reading = False
    try:
        await admit(svc)
        async with upload_slot(svc, caller):
            query = query_options(request)
            validate_early(query, svc.presets, BATCH_OPTIONS)
            reading = True
            files, fields = await upload.receive_many(
                request,
                settings.spool_dir,
                settings.max_upload_bytes,
                settings.upload_chunk_bytes,
                settings.upload_idle_timeout_s,
                settings.max_batch_files,
            )
            created = await _accept(request, svc, query, fields, files, caller)
    except BaseException as exc:
        if not reading:  # refused before the body was read: read and drop it, so the client sees our answer
            await upload.drain(request, settings.upload_idle_timeout_s)
        if isinstance(exc, ThumbifyError):
            UPLOADS.labels(exc.slug).inc()
        raise
    response.headers["Location"] = f"/v1/batches/{created.id}"
    return created


async def _accept(
    request: Request,
    svc: Services,
    query: dict[str, list[str]],
    fields: dict[str, list[str]],
    files: list[upload.Upload | upload.Refused],
    caller: Caller,
) -> BatchCreated:
    """Check and store each file (a refused one is listed, not raised), then write every job and the batch in one
    transaction. Nothing is left behind when it fails: the spooled files, the stored originals."""
    settings, owner = svc.settings, caller.owner
    batch_id = new_job_id()
    accepted: list[tuple[str, dict[str, str]]] = []
    rejected: list[dict] = []
    try:
        options = job_options(query, fields, svc.presets, caller.presets_only, BATCH_OPTIONS)
        events = _events(options)
        # The options refuse the batch as a whole (before any file is stored), as they would a single upload.
        ThumbnailSpec.from_options(spec_options(options), request.headers.get("accept"))
        callback = await callback_for(options, svc.keys.named(owner) if owner else None, settings)
        job_fields = {"batch_id": batch_id} | (callback if events != "batch" else {})
        for index, received in enumerate(files):
            if isinstance(received, upload.Refused):
                rejected.append(_rejected(index, received.filename, received.error))
                continue
            job_id = new_job_id()
            try:
                info, spec, _ = await checked(request, settings, options, received)
                accepted.append((job_id, await stored(svc, job_id, received, info, spec, owner, job_fields)))
            except ThumbifyError as exc:
                if not exc.permanent:  # the storage failing, say: the batch is refused (503), not the file
                    raise
                received.discard()
                rejected.append(_rejected(index, received.filename, exc))
        if not accepted:
            raise InvalidUpload("every file of the batch was refused; `rejected` says why", rejected=rejected)
        record = batches.record(owner, now_iso(), len(accepted), rejected, events, callback if events != "jobs" else {})
        async with svc.redis.pipeline(transaction=True) as pipe:
            for job_id, job_record in accepted:
                svc.store.add_to(pipe, job_id, job_record)
                svc.queue.add_to(pipe, job_id)
            svc.batches.add_to(pipe, batch_id, record, [job_id for job_id, _ in accepted])
            await pipe.execute()
    except BaseException:
        for received in files:
            if isinstance(received, upload.Upload):
                received.discard()
        for job_id, _ in accepted:  # no record, no queue entry: take the originals back
            await asyncio.shield(svc.storage.delete_prefix(original_key(job_id)))
        raise
    jobs = [svc.store.as_job(job_id, job_record) for job_id, job_record in accepted]
    for entry in rejected:
        UPLOADS.labels(entry["problem"]["type"].rsplit("/", 1)[-1]).inc()
    UPLOADS.labels("accepted").inc(len(jobs))
    UPLOAD_BYTES.inc(sum(job.source["bytes"] for job in jobs))
    view = batch_view(batches.as_batch(batch_id, record))
    return BatchCreated(**view.model_dump(), jobs=[job_view(job, svc.link) for job in jobs])


def _events(options: dict[str, list[str]]) -> str:
    given = [value.strip().lower() for value in options.get("batch_events", [])]
    if len(given) > 1 or (given and given[0] not in BATCH_EVENTS):
        message = f"one of {', '.join(BATCH_EVENTS)}, given once"
        raise InvalidOptions(f"batch_events: {message}", errors=[{"field": "batch_events", "message": message}])
    return given[0] if given else "batch"


def _rejected(index: int, filename: str, error: ThumbifyError) -> dict:
    return {"index": index, "filename": filename, "problem": problem_of(error)}


@router.get(
    "/{batch_id}",
    response_model=BatchView,
    summary="A batch and its counts, optionally waiting for it to complete",
    responses=problem_responses(
        *AUTH_PROBLEMS, 404, 422, 503, descriptions={403: "The key lacks the `read` scope", **NO_SUCH}
    ),
)
async def get_batch(
    batch_id: str,
    svc: Svc,
    caller: Reader,
    wait: Annotated[float, wait_query("every job of the batch to end")] = 0,
) -> BatchView:
    deadline = asyncio.get_running_loop().time() + min(wait, svc.settings.max_wait_s)
    with svc.waiter.watch(batches.subject(batch_id)) as finished:
        batch = await _visible(svc, batch_id, caller)
        batch = await read_until(batch, finished, deadline, lambda: svc.batches.get(batch_id), lambda b: b.completed)
    if batch is None:
        raise NotFound(f"no batch {batch_id}")
    return batch_view(batch)


async def _visible(svc: Services, batch_id: str, caller: Caller) -> Batch:
    batch = await svc.batches.get(batch_id)
    if batch is None or not caller.sees(batch.owner):
        raise NotFound(f"no batch {batch_id}")
    return batch


@router.get(
    "/{batch_id}/jobs",
    response_model=JobPage,
    summary="A batch's jobs, newest first",
    responses=problem_responses(
        *AUTH_PROBLEMS,
        404,
        422,
        503,
        descriptions={403: "The key lacks the `read` scope", 422: "Bad `limit`, `cursor` or `status`", **NO_SUCH},
    ),
)
async def list_batch_jobs(batch_id: str, svc: Svc, caller: Reader, page: PageQuery) -> JobPage:
    await _visible(svc, batch_id, caller)
    return await job_page(svc, page, index=svc.store.keys.batch_jobs(batch_id))


@router.delete(
    "/{batch_id}",
    status_code=204,
    summary="Delete a batch and all its jobs (their originals and thumbnails)",
    responses=problem_responses(
        *AUTH_PROBLEMS,
        404,
        422,
        503,
        descriptions={403: "The key lacks the `submit` scope", **NO_SUCH},
        kinds=STORAGE_PROBLEM_KINDS,
    ),
)
async def delete_batch(batch_id: str, svc: Svc, caller: Submitter) -> Response:
    await _visible(svc, batch_id, caller)
    job_ids = await svc.batches.job_ids(batch_id)
    # The batch goes first, so that its jobs' deletions are not counted as its jobs ending (no batch.completed).
    await svc.batches.remove(batch_id)
    for job_id in job_ids:
        await delete(svc, job_id)
    return Response(status_code=204)
