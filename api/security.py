"""Response headers every answer carries, CORS by allow-list only, and safe download names.

`install(app, settings)` wraps the whole application (outside even Starlette's error middleware, so a 500 carries
the headers too) in `SecurityHeaders`, a pure ASGI middleware that adds `X-Content-Type-Options: nosniff` to every
response start, and adds Starlette's CORS middleware only when `cors_origins` lists origins. With none, no
`Access-Control-*` header is ever sent, and a browser on another origin cannot read any answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thumbify.settings import Settings

CORS_METHODS = ["GET", "POST", "DELETE"]
CORS_HEADERS = ["Authorization", "X-API-Key", "Idempotency-Key", "Content-Type", "X-Request-ID"]
# What a browser script may read of an answer beyond the CORS-safelisted headers.
CORS_EXPOSE = ["Location", "Retry-After", "ETag", "Idempotent-Replayed", "X-Request-ID"]
CORS_MAX_AGE = 600

_HEADERS: list[tuple[bytes, bytes]] = [(b"x-content-type-options", b"nosniff")]


class SecurityHeaders:
    """Adds the fixed security headers to every HTTP response the wrapped app starts (unless it set them itself)."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.app = app
        self.headers = headers if headers is not None else _HEADERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in self.headers if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def check_origins(origins: list[str]) -> list[str]:
    """The configured CORS origins, each a bare `scheme://host[:port]`; a wildcard or a path is refused."""
    checked = []
    for origin in origins:
        parts = urlsplit(origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or "*" in origin
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ValueError(
                f"THUMBIFY_CORS_ORIGINS: {origin!r} is not an origin like https://app.example (no wildcards, paths)"
            )
        checked.append(f"{parts.scheme}://{parts.netloc}".lower())
    return checked


def install(app: FastAPI, settings: Settings) -> None:
    origins = check_origins(settings.cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSE,
            allow_credentials=False,  # keys travel in headers, never cookies
            max_age=CORS_MAX_AGE,
        )
    outermost(app, SecurityHeaders)


def outermost(app: FastAPI, middleware: Callable[[ASGIApp], ASGIApp]) -> None:
    """Wrap the whole application in `middleware`, outside what is there already. Starlette builds its stack (error
    middleware first) lazily on the first request; wrapping the built stack puts the middleware around every
    answer, the error middleware's 500s included."""
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: middleware(build())  # type: ignore[method-assign]


# -- download names (RFC 6266) -------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def content_disposition(name: str, disposition: str = "inline") -> str:
    """`inline; filename="..."` with an ASCII-only, quote- and path-free name, plus RFC 6266 `filename*` (UTF-8,
    percent-encoded) when the name is not plain ASCII."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    ascii_name = _UNSAFE.sub("_", ascii_name).strip("._") or "thumbnail"
    value = f'{disposition}; filename="{ascii_name[:200]}"'
    if ascii_name != base:
        value += f"; filename*=UTF-8''{quote(base[:200], safe='')}"
    return value
