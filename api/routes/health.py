"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends

from api.problems import problem, problem_responses
from api.services import Services, services

router = APIRouter(tags=["health"])
Svc = Annotated[Services, Depends(services)]


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Redis and storage answer",
    responses=problem_responses(503, descriptions={503: "Not ready: `checks` says which dependency fails and why"}),
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
    return problem(
        503,
        "not-ready",
        "Not ready",
        "; ".join(f"{k}: {v}" for k, v in checks.items()),
        "/readyz",
        {"Retry-After": "5"},
        checks=checks,
    )
