"""Logging for every Thumbify process, configured in one place (`configure`), and the context each line carries.

Lines are one JSON object each in the Elastic Common Schema (`ecs_logging.StdlibFormatter`: Filebeat or Fluent Bit
ship them to Elasticsearch as they are) or, on a terminal, plain text; `THUMBIFY_LOG_FORMAT` picks
(`auto`: console on a terminal, JSON otherwise) and `THUMBIFY_LOG_LEVEL` the level.

What a line is about travels in a context variable rather than in every call: the API's access-log middleware opens
a context per request (`http.request.id`), the routes add the job once it is known (`thumbify.job.id`), the worker
opens one per job with the request id kept in the job. `ContextFilter` copies the fields onto each record, so every
logger of every module gets them without being told. The context is a small dict that `bind` fills in place: a
field bound deep inside a request (the job id) is seen by the access-log line its middleware writes afterwards.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from typing import TextIO

from thumbify import tracing

REQUEST_ID = "http.request.id"
JOB_ID = "thumbify.job.id"
_FIELDS = {"request_id": REQUEST_ID, "job_id": JOB_ID}

_context: ContextVar[dict[str, str] | None] = ContextVar("thumbify_log_context", default=None)


def open_context(**fields: str | None) -> Token:
    """A fresh context for what follows in this task (a request, a job): `request_id`, `job_id`. Give the token to
    `close_context` where the task may go on to other work."""
    return _context.set({_FIELDS[k]: v for k, v in fields.items() if v})


def close_context(token: Token) -> None:
    _context.reset(token)


def bind(**fields: str | None) -> None:
    """Add `request_id` / `job_id` to the current context (opening one if there is none)."""
    values = {_FIELDS[k]: v for k, v in fields.items() if v}
    current = _context.get()
    if current is None:
        _context.set(values)
    else:
        current.update(values)


def current(field: str) -> str:
    """A field of the current context (`REQUEST_ID`, `JOB_ID`), "" when unset."""
    return (_context.get() or {}).get(field, "")


class ContextFilter(logging.Filter):
    """Puts the context's fields on every record that passes the handler (an explicit `extra` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _context.get()
        if fields:
            for name, value in fields.items():
                record.__dict__.setdefault(name, value)
        if tracing.enabled():  # trace.id / span.id of the active span, so Kibana links a line to its trace
            for name, value in tracing.log_fields().items():
                record.__dict__.setdefault(name, value)
        return True


_TAGS = (("request", REQUEST_ID), ("job", JOB_ID))


class ConsoleFormatter(logging.Formatter):
    """The classic one-line text, with the request and job appended when a line has them."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tags = [f"{short}={record.__dict__[name]}" for short, name in _TAGS if name in record.__dict__]
        return f"{text} [{' '.join(tags)}]" if tags else text


def json_wanted(log_format: str, stream: TextIO) -> bool:
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty and isatty())
    return log_format == "json"


def configure(log_format: str, level: str, service: str, stream: TextIO | None = None) -> None:
    """Configure logging for this process: one handler on the root logger (replacing the one a previous call
    installed, leaving others alone), uvicorn's loggers sent through it, and uvicorn's access log off (the API writes
    its own, api/access_log.py). `service` names the process in each JSON line (`service.name`)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    if json_wanted(log_format, stream):
        import ecs_logging

        # Only what a line needs: the process and thread ids, file and function of each call are dropped.
        handler.setFormatter(
            ecs_logging.StdlibFormatter(
                extra={"service.name": f"thumbify-{service}"},
                exclude_fields=["log.origin", "process", "log.original", "color_message"],
            )
        )
    else:
        handler.setFormatter(ConsoleFormatter())
    handler._thumbify = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_thumbify", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # libvips' messages only when debugging: its chatter ("threadpool completed", once per image) and its warnings
    # about damaged data, which the render reports as the job's error anyway. They arrive through pyvips' GLib log
    # callback, often on a libvips thread in the middle of a decode, where a record costs more than it tells (what
    # a garbage collection set off there may do is `probe.configure_vips`' concern).
    logging.getLogger("pyvips").setLevel(logging.DEBUG if level.lower() == "debug" else logging.ERROR)
    logging.captureWarnings(True)  # a library's warning is a line like any other, not loose text on stderr
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn writes an access line only while this logger has handlers: none, and it does not format one.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False


def configure_from(settings, service: str) -> None:
    """`configure` with the process's settings (`log_format`, `log_level`)."""
    configure(settings.log_format, settings.log_level, service)
