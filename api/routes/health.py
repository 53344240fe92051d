"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.metrics import QUEUE_JOBS, QUEUE_OLDEST, REDIS_UP
from api.problems import problem_responses
from api.services import Services, services
from thumbify.errors import NotReady

router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Redis and storage answer",
    responses=problem_responses(
        503, descriptions={503: "Not ready: `checks` says which dependency fails and why"}, kinds={503: (NotReady,)}
    ),
)
async def readyz(svc: Svc):
    checks: dict[str, str] = {}
    for name, check in (("redis", svc.redis.ping), ("storage", svc.storage.ping)):
        try:
            await asyncio.wait_for(check(), timeout=2.0)
            checks[name] = "ok"
        except Exception as exc:  # any failure means not ready; say which and why
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"[:200]
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", **checks}
    raise NotReady("; ".join(f"{k}: {v}" for k, v in checks.items()), checks=checks)


# A route, not a mounted app: a mount answers `GET /metrics` with a redirect to `/metrics/`.
@router.get("/metrics", include_in_schema=False)
async def metrics(svc: Svc) -> Response:
    """This process's counters, and the queue's state read from Redis now. A scrape never fails for Redis being
    away (`thumbify_redis_up` 0 says so, and the queue gauges keep their last values)."""
    try:
        counts = await asyncio.wait_for(svc.queue.counts(), timeout=2.0)
        oldest = await asyncio.wait_for(svc.queue.oldest_age_s(), timeout=2.0)
    except Exception:  # noqa: BLE001 - down, hung or refusing: all mean "no fresh numbers"
        REDIS_UP.set(0)
    else:
        REDIS_UP.set(1)
        for state, n in counts.items():
            QUEUE_JOBS.labels(state).set(n)
        QUEUE_OLDEST.set(oldest)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
