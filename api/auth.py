"""Who is calling: the API key (`Authorization: Bearer` or `X-API-Key`), its scopes, and its rate limit.

Every job belongs to the key that created it (its name is the owner). Another key's job answers 404, exactly as a
job that does not exist, so ids cannot be probed; an `admin` key sees every job. With no keys configured the API is
open (every caller is one anonymous admin), which `refuse_open_bind` allows only on loopback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPBearer

from api.services import Services, services
from thumbify.errors import Forbidden, RateLimited, Unauthorized
from thumbify.keys import KeyRing
from thumbify.settings import Settings

# Declared for the OpenAPI schema (Swagger's "Authorize" button); the checks below read the headers themselves so
# that every failure is our problem+json, not FastAPI's default.
_BEARER = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer tfy_…`")
_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key, as an alternative header")


@dataclass(frozen=True)
class Caller:
    owner: str  # the key's name; "" when authentication is off
    admin: bool
    source_prefixes: tuple[str, ...] = ()  # where in the bucket it may make jobs from (thumbify.sources)
    presets_only: bool = False  # may only send `preset=NAME` (thumbify.presets)

    def sees(self, owner: str) -> bool:
        return self.admin or owner == self.owner


def _token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key")


async def authenticate(request: Request, svc: Services, scope: str, *alternatives: str) -> Caller:
    """The caller, if its key is valid, has `scope` (or one of the `alternatives`) and is under its rate limit; else
    401, 403 or 429."""
    if not svc.keys:
        return Caller("", admin=True)
    token = _token(request)
    if token is None:
        raise Unauthorized("send an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`")
    key = svc.keys.verify(token)
    if key is None:
        raise Unauthorized("the API key is not valid")
    if not any(key.allows(s) for s in (scope, *alternatives)):
        wanted = " or ".join(repr(s) for s in (scope, *alternatives))
        raise Forbidden(f"the key {key.name!r} lacks the {wanted} scope")
    wait = await svc.limits.take(key.id)
    if wait:
        raise RateLimited(f"the key {key.name!r} is over its request rate; retry in {wait:.0f}s", retry_after=wait)
    return Caller(key.name, key.admin, key.source_prefixes, key.presets_only)


def _requires(scope: str, *alternatives: str):
    async def dependency(
        request: Request,
        svc: Annotated[Services, Depends(services)],
        _bearer: Annotated[object, Depends(_BEARER)] = None,
        _header: Annotated[object, Depends(_HEADER)] = None,
    ) -> Caller:
        return await authenticate(request, svc, scope, *alternatives)

    return dependency


Submitter = Annotated[Caller, Depends(_requires("submit"))]
Reader = Annotated[Caller, Depends(_requires("read"))]
# Either: what a client needs to know before submitting (the presets).
Client = Annotated[Caller, Depends(_requires("submit", "read"))]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(settings: Settings, keys: KeyRing) -> None:
    """An API with no keys must not listen beyond this machine."""
    if not keys and not is_loopback(settings.host):
        raise SystemExit(
            f"refusing to serve on {settings.host} without API keys: anyone who can reach it could use it. "
            "Create a key (`thumbify keys create NAME`, stored in DATA_DIR/keys.json, which the server reads), "
            "or bind to 127.0.0.1."
        )
