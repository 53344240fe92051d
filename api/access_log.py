"""The request id and the access log: a pure ASGI middleware, outermost, so every answer (a 500 of the error
middleware included) is counted once.

Each request gets an id: the client's `X-Request-ID` when it is sane (1..128 visible ASCII characters), else a new
one; it is echoed in the response's `X-Request-ID` and opened as the log context (thumbify/logs.py), so every line
logged while the request runs carries `http.request.id`, and the job it creates keeps it. When the answer is sent,
one ECS line: method, path, status, bytes and duration. The path only: the query string may hold a signed URL's
`sig` (and anything else a client puts there), and nothing secret is logged.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from thumbify import logs
from thumbify.jobs import JOB_ID_RE

HEADER = b"x-request-id"
_SANE = re.compile(rb"[\x21-\x7e]{1,128}")
log = logging.getLogger("thumbify.access")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID if it is sane, else a fresh one."""
    for name, value in headers:
        if name == HEADER:
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


def bind_job(job_id: str) -> None:
    """The job a request is about, from its path: in the log context once it is a well-formed id."""
    if JOB_ID_RE.fullmatch(job_id):
        logs.bind(job_id=job_id)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter_ns()
        rid = request_id(scope["headers"])
        token = logs.open_context(request_id=rid)
        status, sent = 500, 0  # what the line says if the app raises before answering (the server answers 500)

        async def send_logged(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, rid.encode())]}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            method, path = scope["method"], scope["path"]
            log.info(
                "%s %s %d",
                method,
                path,
                status,
                extra={
                    "event.kind": "event",
                    "event.category": ["web"],
                    "event.duration": time.perf_counter_ns() - started,
                    "http.request.method": method,
                    "url.path": path,
                    "http.response.status_code": status,
                    "http.response.body.bytes": sent,
                },
            )
            logs.close_context(token)
