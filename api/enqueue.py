"""The last step of every way a job is made (an upload, a completed direct upload, an object in the bucket): its
record written, its entry queued, and whatever else the caller binds to it, in one Redis transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from api.services import Services
from thumbify import logs, tracing
from thumbify.jobs import Job
from thumbify.probe import SourceInfo
from thumbify.spec import ThumbnailSpec, safe_stem
from thumbify.storage import original_key


def job_record(
    svc: Services,
    job_id: str,
    filename: str,
    info: SourceInfo,
    spec: ThumbnailSpec,
    owner: str,
    source: dict[str, object],
    extra: dict[str, str],
) -> dict[str, str]:
    """The job's record: the source as probed (plus `source`'s members), the spec, the `extra` fields."""
    public = info.public(filename or "upload") | source
    request_id, traceparent = logs.current(logs.REQUEST_ID), tracing.traceparent()
    record = svc.store.record(job_id, public, spec, safe_stem(filename), owner, request_id, traceparent)
    return record | extra


async def enqueue(
    svc: Services,
    job_id: str,
    record: dict[str, str],
    also: Callable[[object], None] | None = None,
    keep_original: bool = False,
) -> Job:
    """Create and queue the job, with `also(pipe)`'s commands in the same transaction. If that fails, its original
    is deleted (so nothing is left behind), unless `keep_original` (it is the client's: a direct upload that may be
    completed again, an object in the bucket)."""
    try:
        async with svc.redis.pipeline(transaction=True) as pipe:
            svc.store.add_to(pipe, job_id, record)
            svc.queue.add_to(pipe, job_id)
            if also is not None:
                also(pipe)
            await pipe.execute()
    except BaseException:
        if not keep_original:
            await asyncio.shield(svc.storage.delete_prefix(original_key(job_id)))
        raise
    # The job as just written (no read back: the transaction either wrote all of it or raised).
    return svc.store.as_job(job_id, record)
