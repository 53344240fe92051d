"""Jobs whose original is already in the bucket: a completed direct upload (api/routes/uploads.py), or an object
named by `source_key` on POST /v1/jobs (a back-fill; `thumbify ingest`). The API reads a HEAD and the header's
bytes (thumbify.probe_stored), never the image; the worker reads the object where it lies, as the version checked.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from fastapi import Request

from api.callbacks import callback_for
from api.enqueue import enqueue, job_record
from api.json_body import json_body
from api.options import collect, spec_for, spec_options
from api.services import Services
from thumbify import logs, sources
from thumbify.animation import AnimationLimits
from thumbify.errors import Forbidden, InvalidUpload, SourceMissing, invalid_options
from thumbify.jobs import Job
from thumbify.probe_stored import check_stored
from thumbify.spec import ThumbnailSpec
from thumbify.storage import StoredObject, original_key


async def job_of_object(
    request: Request,
    svc: Services,
    job_id: str,
    key: str,
    filename: str,
    options: dict[str, list[str]],
    owner: str,
    source: dict[str, object],
    also: Callable[[object], None] | None = None,
    stored: StoredObject | None = None,
) -> tuple[Job, bool]:
    """The object at `key` checked as an upload is, then the job made of it (`source` adds to its `source`);
    whether its format was negotiated. FileNotFoundError if there is no object."""
    check = await check_stored(svc.storage, key, svc.settings, stored)
    accept = request.headers.get("accept")
    limits = AnimationLimits.from_settings(svc.settings)
    spec, negotiated = spec_for(options, accept, check.info, limits)
    callback = await callback_for(options, svc.keys.named(owner) if owner else None, svc.settings)
    logs.bind(job_id=job_id)
    extra = callback | {"original_etag": check.etag}
    if check.partial:
        extra["verify"] = "1"
    if key != original_key(job_id):
        extra["original_key"] = key
    record = job_record(svc, job_id, filename, check.info, spec, owner, source, extra)
    return await enqueue(svc, job_id, record, also, keep_original=True), negotiated


def wanted(request: Request) -> bool:
    """Whether POST /v1/jobs names an object in the bucket instead of carrying a file."""
    return _is_json(request) or "source_key" in request.query_params


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


async def source_job(request: Request, svc: Services, caller, job_id: str) -> tuple[Job, bool, bool]:
    """A job of the object `source_key` names: the job, whether its format was negotiated, and whether it is one
    made of the same object with the same options before (then nothing new is made)."""
    key, given = await _request_of(request)
    options = svc.presets.expand(given, caller.presets_only)
    svc.s3()  # 501 on local storage
    if not sources.may_read(key, caller.admin, caller.source_prefixes):
        raise Forbidden(f"the key {caller.owner!r} may not make jobs from {key!r} (see `--source-prefix`)")
    ThumbnailSpec.from_options(spec_options(options))  # a bad option is refused before storage is asked
    stored = await svc.storage.stat(key)
    if stored is None:
        raise _missing(key)
    client, fingerprint = f"ingest\0{caller.owner}", sources.fingerprint(key, stored.etag, options)
    while (held := await svc.ingests.claim(client, fingerprint)) is not None:
        if (job := await svc.store.get(held.job_id)) is not None:
            return job, False, True
        await svc.ingests.forget(client, fingerprint, held.job_id)  # its job was deleted since: make it again

    def bind(pipe) -> None:
        svc.ingests.bind_to(pipe, client, fingerprint, job_id, fingerprint)

    try:
        source = {"origin": "ingest", "key": key}
        filename = posixpath.basename(key) or "source"
        job, negotiated = await job_of_object(request, svc, job_id, key, filename, options, caller.owner, source, bind)
    except BaseException as exc:
        await svc.ingests.forget(client, fingerprint)
        if isinstance(exc, FileNotFoundError):
            raise _missing(key) from None
        raise
    return job, negotiated, False


def _missing(key: str) -> SourceMissing:
    why = f"no object {key!r} in the bucket"
    return SourceMissing(why, errors=[{"field": "source_key", "message": why}])


async def _request_of(request: Request) -> tuple[str, dict[str, list[str]]]:
    """`source_key` and the options: from a JSON body `{"source_key", "options"}`, else from the query."""
    query = {k: request.query_params.getlist(k) for k in request.query_params.keys()}
    body: dict = {}
    if _is_json(request):
        body = await json_body(request)
    key = body.get("source_key", query.pop("source_key", [""])[-1])
    if not key or not isinstance(key, str):
        raise InvalidUpload(
            "send the image as multipart/form-data with a `file` part, or a JSON body naming `source_key` (an object "
            "in the bucket)"
        )
    return sources.source_key(key), collect(query, options_of(body.get("options")))


def options_of(value: object) -> dict[str, list[str]]:
    """JSON options (`{"sizes": "256,512", "quality": 80}`, a value or a list of values each) as the form's lists."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidUpload("options must be a JSON object of option names")
    out: dict[str, list[str]] = {}
    for name, given in value.items():
        values = given if isinstance(given, list) else [given]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
            raise invalid_options([{"field": str(name), "message": "must be a string or a number, or a list of them"}])
        out[str(name)] = [str(v) for v in values]
    return out
