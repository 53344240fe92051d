"""The FastAPI application factory: `uvicorn --factory api.app:create_app`."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline

from api import problems, security, spool
from api.access_log import AccessLog
from api.auth import refuse_open_bind
from api.idempotency import IdempotencyKeys
from api.routes import batches, health, jobs, presets, thumbnails, uploads
from api.services import INGEST_MEMORY_S, Services, presigner_for
from api.waiter import JobWaiter
from thumbify import __version__, logs, tracing
from thumbify.batches import BatchStore
from thumbify.jobs import JobStore
from thumbify.keys import KeyRing
from thumbify.keyspace import Keys
from thumbify.presets import Presets
from thumbify.queue import JobQueue
from thumbify.ratelimit import Limits
from thumbify.redis_conn import connect
from thumbify.settings import Settings
from thumbify.storage import open_storage
from thumbify.uploads import UploadStore

DESCRIPTION = """
Upload an image, get a job id at once; the thumbnails are made by workers and fetched from here.

1. `POST /v1/jobs` with a multipart `file` (and options) → `202` with the job.
2. `GET /v1/jobs/{id}?wait=10` → the job once it is `done` (or `failed`, with a readable error).
3. `GET` each thumbnail's `url`.

Errors are RFC 9457 `application/problem+json` with a stable `type`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if not settings.redis_url:
        raise RuntimeError(
            "THUMBIFY_REDIS_URL is not set: run `thumbify serve` for the embedded Redis, "
            "or point THUMBIFY_REDIS_URL at a Redis server"
        )

    keys = KeyRing.for_settings(settings)
    refuse_open_bind(settings, keys)
    preset_book = Presets.for_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        redis = connect(settings.redis_url, max_connections=settings.redis_max_connections)
        storage = open_storage(settings)
        presigner = presigner_for(storage, settings)
        names = Keys(settings.key_prefix)
        waiter = JobWaiter(redis, names.events)
        app.state.services = Services(
            settings,
            redis,
            JobStore(redis, names),
            JobQueue(redis, names),
            storage,
            waiter,
            IdempotencyKeys(redis, names, settings.idempotency_window_s),
            keys,
            Limits(
                redis,
                names,
                settings.rate_limit_per_s,
                settings.rate_limit_burst,
                settings.max_concurrent_uploads,
                settings.upload_lease_s,
            ),
            BatchStore(redis, names),
            UploadStore(redis, names),
            presigner,
            IdempotencyKeys(redis, names, int(settings.retention_s) or INGEST_MEMORY_S),
            preset_book,
        )
        # Before the first request: this process's spool files are its own, leftovers of dead ones are gone.
        await anyio.to_thread.run_sync(spool.own, settings.spool_dir)
        await _sweep_spool(settings.spool_dir)
        await waiter.start()
        sweeper = asyncio.create_task(_sweep_spool_every(settings.spool_dir), name="spool-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            await waiter.stop()
            await storage.aclose()  # the presigner's clients too
            await redis.aclose()
            tracing.shutdown()

    logs.configure_from(settings, "api")
    tracing.setup("api")
    # One line at every start: whether the API is protected, and by which keys.
    logging.getLogger("thumbify.api").log(logging.INFO if keys else logging.WARNING, keys.describe())
    # /docs (Swagger UI) and /redoc with their scripts and styles served from the app itself (fastapi-offline ships
    # them): the pages work on a machine without internet, and load nothing from a CDN.
    app = FastAPIOffline(
        title="Thumbify", version=__version__, description=DESCRIPTION, lifespan=lifespan, static_url="/docs-assets"
    )
    problems.install(app)
    security.install(app, settings)
    security.outermost(app, AccessLog)  # outside even the security headers: it times and counts the whole answer
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(uploads.router)
    app.include_router(presets.router)
    app.include_router(thumbnails.router)
    app.include_router(health.router)

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> RedirectResponse:
        """A person who opens the server's address finds the documentation."""
        return RedirectResponse(f"{request.scope.get('root_path', '')}/docs")

    return app


async def _sweep_spool(folder: Path) -> None:
    """Remove the upload spool files of API processes that are gone (api/spool.py)."""
    try:
        await anyio.to_thread.run_sync(spool.sweep, folder)
    except OSError as exc:  # the folder unreadable for a moment: try again next time
        logging.getLogger("thumbify.api").warning("could not sweep the upload spool (%s)", exc)


async def _sweep_spool_every(folder: Path) -> None:
    while True:
        await asyncio.sleep(spool.SWEEP_EVERY_S)
        await _sweep_spool(folder)
