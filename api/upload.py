"""Streams a multipart upload to a spool file without holding the body in memory (a body smaller than one write
chunk is kept in memory instead: it never touches the spool).

FastAPI's `UploadFile` parses the whole body before the route runs, so a byte cap could only be checked after the
fact. Here python-multipart's push parser is fed the request stream chunk by chunk: the magic bytes are judged as
soon as they arrive (415 without reading on), the byte cap is enforced while streaming (413), a client that stops
sending is dropped after an idle timeout (408), and the partial file is deleted on any failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.types import Message

from api.spool import UPLOAD_PREFIX
from thumbify.errors import InvalidUpload, ThumbifyError, TooLarge, UnsupportedMedia, UploadTimeout
from thumbify.probe import SNIFF_BYTES, sniff

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 32
# How much of a rejected body is still read and dropped; past this the connection is closed.
DRAIN_LIMIT = 16 * 1024 * 1024


@dataclass
class Upload:
    # The spooled file; or, for a body that ended before one write chunk filled up, its bytes (no file, no thread
    # hops: on web-size images the spool's create/write/close/rename cost more than the rest of the upload).
    source: Path | bytes
    filename: str
    sha256: str
    fields: dict[str, list[str]] = field(default_factory=dict)

    def discard(self) -> None:
        if isinstance(self.source, Path):
            self.source.unlink(missing_ok=True)


class _Receiver:
    def __init__(self, spool: Path, max_bytes: int) -> None:
        self.spool, self.max_bytes = spool, max_bytes
        self.headers: dict[str, bytes] = {}
        self._hname = bytearray()
        self._hvalue = bytearray()
        self.part_name: str | None = None
        self.in_file = False
        self.value = bytearray()
        self.fields: dict[str, list[str]] = {}
        self.filename = ""
        self.fh = None
        self.path: Path | None = None
        self.size = 0
        self.head = bytearray()
        self.format: str | None = None
        self.pending: list[memoryview] = []
        self.pending_bytes = 0
        self.digest = hashlib.sha256()
        self.files_seen = 0
        self.error: Exception | None = None

    # python-multipart callbacks (synchronous; they only buffer, the file writes happen off the event loop)
    def on_part_begin(self) -> None:
        self.headers, self.part_name, self.in_file = {}, None, False
        self.value = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self._hname).lower().decode("latin-1")] = bytes(self._hvalue)
        self._hname, self._hvalue = bytearray(), bytearray()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self.part_name = name
        if name == "file":
            self.files_seen += 1
            if self.files_seen > 1:
                raise InvalidUpload("send exactly one `file` part")
            self.in_file = True
            self.filename = params.get(b"filename", b"").decode("utf-8", "replace")[:255]
        elif b"filename" in params:
            raise InvalidUpload(f"send the image in a part named `file`, not {name!r}")
        elif sum(len(v) for v in self.fields.values()) >= MAX_FIELDS:
            raise InvalidUpload(f"at most {MAX_FIELDS} form fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        # A view, not a copy: `data` is the immutable body chunk the parser was given. On a 3 MB upload the copies
        # (this slice, then joining them to write) cost more CPU than the SHA-256.
        chunk = memoryview(data)[start:end]
        if not self.in_file:
            self.value += chunk
            if len(self.value) > MAX_FIELD_BYTES:
                raise InvalidUpload(f"form field {self.part_name!r} is longer than {MAX_FIELD_BYTES} bytes")
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise TooLarge(f"the upload is larger than the limit of {self.max_bytes:,} bytes")
        if self.format is None and len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self._judge()
        self.digest.update(chunk)
        self.pending.append(chunk)
        self.pending_bytes += len(chunk)

    def on_part_end(self) -> None:
        if self.in_file:
            self.in_file = False
            if self.format is None and self.head:
                self._judge()
        elif self.part_name:
            self.fields.setdefault(self.part_name, []).append(self.value.decode("utf-8", "replace"))

    def _judge(self) -> None:
        self.format = sniff(bytes(self.head))
        if self.format is None:
            raise UnsupportedMedia(
                "not an image we accept: JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF (judged by content, not by name)"
            )

    def take_pending(self) -> bytes:
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        return data

    def spill(self) -> None:
        """Write what is pending to the spool file, created on the first call (run off the event loop)."""
        if self.fh is None:
            fd, name = tempfile.mkstemp(dir=self.spool, prefix=UPLOAD_PREFIX, suffix=".part")
            self.path = Path(name)
            self.fh = os.fdopen(fd, "wb")
        self.fh.writelines(self.pending)
        self.pending, self.pending_bytes = [], 0


async def receive(request: Request, spool: Path, max_bytes: int, chunk_bytes: int, idle_timeout_s: float) -> Upload:
    """The upload, spooled; a ThumbifyError (and nothing left in the spool) if it is refused or stops arriving for
    `idle_timeout_s`."""
    content_type = request.headers.get("content-type", "")
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidUpload("send the image as multipart/form-data with a `file` part")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise TooLarge(f"the upload is larger than the limit of {max_bytes:,} bytes")

    rx = _Receiver(spool, max_bytes)
    callbacks = {n: getattr(rx, n) for n in dir(rx) if n.startswith("on_")}
    consumed, more = 0, True
    try:
        try:
            parser = MultipartParser(boundary, callbacks)  # refuses a boundary over 256 bytes
            while more:
                message = await _next(request, idle_timeout_s)
                if message["type"] == "http.disconnect":
                    raise InvalidUpload("the client closed the connection before the upload finished")
                chunk = message.get("body", b"")
                more = message.get("more_body", False)
                consumed += len(chunk)
                parser.write(chunk)
                if rx.pending_bytes >= chunk_bytes:
                    await anyio.to_thread.run_sync(rx.spill)
            parser.finalize()
        except ValueError as exc:  # python-multipart's parse errors
            raise InvalidUpload(f"malformed multipart body: {exc}") from exc
        if not rx.files_seen:
            raise InvalidUpload("the `file` part is missing")
        if rx.size == 0:
            raise InvalidUpload("the uploaded file is empty")
        if rx.fh is not None:
            await anyio.to_thread.run_sync(rx.spill)
            await anyio.to_thread.run_sync(rx.fh.close)
    except BaseException as exc:
        if rx.fh is not None:
            rx.fh.close()
        if rx.path is not None:
            rx.path.unlink(missing_ok=True)
        if more and isinstance(exc, ThumbifyError) and not isinstance(exc, UploadTimeout):
            await drain(request, idle_timeout_s, consumed)
        raise
    assert rx.format is not None
    source = rx.path if rx.path is not None else rx.take_pending()
    return Upload(source, rx.filename, rx.digest.hexdigest(), rx.fields)


async def _next(request: Request, idle_timeout_s: float) -> Message:
    """The next piece of the body; 408 (and the connection closed) if the client sends nothing for that long."""
    try:
        with anyio.fail_after(idle_timeout_s):
            return await request.receive()
    except TimeoutError:
        raise UploadTimeout(f"the upload stalled: nothing arrived for {idle_timeout_s:g} s") from None


async def drain(request: Request, idle_timeout_s: float, consumed: int = 0) -> None:
    """Read and drop what is left of the body (up to DRAIN_LIMIT, and while it keeps coming), so a client still
    sending reads our answer instead of a reset connection."""
    with contextlib.suppress(UploadTimeout):
        while consumed <= DRAIN_LIMIT:
            message = await _next(request, idle_timeout_s)
            if message["type"] != "http.request":
                return
            consumed += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
