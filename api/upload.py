"""Streams a multipart upload to a spool file without holding the body in memory (a body smaller than one write
chunk is kept in memory instead: it never touches the spool).

FastAPI's `UploadFile` parses the whole body before the route runs, so a byte cap could only be checked after the
fact. Here python-multipart's push parser is fed the request stream chunk by chunk: the magic bytes are judged as
soon as they arrive (415 without reading on), the byte cap is enforced while streaming (413), a client that stops
sending is dropped after an idle timeout (408), and the partial file is deleted on any failure.

A batch (`receive_many`) is the same stream with several `file` parts: each is judged, capped and spooled alone, and
one refused (415, 413, empty) is dropped alone, its reason kept; its small files stay in memory only up to one write
chunk in all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.types import Message

from api.spool import UPLOAD_PREFIX
from thumbify.errors import (
    InvalidUpload,
    ThumbifyError,
    TooLarge,
    TooManyFiles,
    UnsupportedMedia,
    UploadTimeout,
)
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


@dataclass
class Refused:
    """A batch's file refused at upload (too large, not an image, empty): its name and why."""

    filename: str
    error: ThumbifyError


@dataclass
class _File:
    """One `file` part as it streams in: its bytes pending a write, or spooled to `path`."""

    filename: str
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    format: str | None = None
    pending: list[memoryview] = field(default_factory=list)
    pending_bytes: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    fh: BinaryIO | None = None
    path: Path | None = None
    error: ThumbifyError | None = None  # refused (a batch's file: the rest of its bytes are dropped)

    def take_pending(self) -> bytes:
        data = b"".join(self.pending)
        self.pending, self.pending_bytes = [], 0
        return data

    def spill(self, spool: Path) -> None:
        """Write what is pending to the spool file, created on the first call (run off the event loop)."""
        if self.fh is None:
            fd, name = tempfile.mkstemp(dir=spool, prefix=UPLOAD_PREFIX, suffix=".part")
            self.path = Path(name)
            self.fh = os.fdopen(fd, "wb")
        self.fh.writelines(self.pending)
        self.pending, self.pending_bytes = [], 0

    def drop(self) -> None:
        """Its spool file, if any, closed and deleted."""
        if self.fh is not None:
            self.fh.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.pending, self.pending_bytes = [], 0


class _Receiver:
    """python-multipart's callbacks (synchronous; they only buffer, the file writes happen off the event loop). With
    `max_files` 1 (a single upload) a refused file refuses the request at once; with more (a batch) it is refused
    alone, and the others are read on."""

    def __init__(self, spool: Path, max_bytes: int, max_files: int) -> None:
        self.spool, self.max_bytes, self.max_files = spool, max_bytes, max_files
        self.headers: dict[str, bytes] = {}
        self._hname = bytearray()
        self._hvalue = bytearray()
        self.part_name: str | None = None
        self.current: _File | None = None  # the file part being read
        self.files: list[_File] = []
        self.value = bytearray()
        self.fields: dict[str, list[str]] = {}

    def on_part_begin(self) -> None:
        self.headers, self.part_name, self.current = {}, None, None
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
            if len(self.files) >= self.max_files:
                if self.max_files == 1:
                    raise InvalidUpload("send exactly one `file` part")
                raise TooManyFiles(f"a batch takes at most {self.max_files} files", limit=self.max_files)
            self.current = _File(params.get(b"filename", b"").decode("utf-8", "replace")[:255])
            self.files.append(self.current)
        elif b"filename" in params:
            raise InvalidUpload(f"send the image in a part named `file`, not {name!r}")
        elif sum(len(v) for v in self.fields.values()) >= MAX_FIELDS:
            raise InvalidUpload(f"at most {MAX_FIELDS} form fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        # A view, not a copy: `data` is the immutable body chunk the parser was given. On a 3 MB upload the copies
        # (this slice, then joining them to write) cost more CPU than the SHA-256.
        chunk = memoryview(data)[start:end]
        file = self.current
        if file is None:
            self.value += chunk
            if len(self.value) > MAX_FIELD_BYTES:
                raise InvalidUpload(f"form field {self.part_name!r} is longer than {MAX_FIELD_BYTES} bytes")
            return
        if file.error is not None:
            return
        file.size += len(chunk)
        if file.size > self.max_bytes:
            self._refuse(file, TooLarge(f"the upload is larger than the limit of {self.max_bytes:,} bytes"))
            return
        if file.format is None and len(file.head) < SNIFF_BYTES:
            file.head += chunk[: SNIFF_BYTES - len(file.head)]
            if len(file.head) >= SNIFF_BYTES and not self._judge(file):
                return
        file.digest.update(chunk)
        file.pending.append(chunk)
        file.pending_bytes += len(chunk)

    def on_part_end(self) -> None:
        file, self.current = self.current, None
        if file is not None:
            if file.format is None and file.head and file.error is None:
                self._judge(file)
            if file.size == 0 and file.error is None:
                self._refuse(file, InvalidUpload("the uploaded file is empty"))
        elif self.part_name:
            self.fields.setdefault(self.part_name, []).append(self.value.decode("utf-8", "replace"))

    def _judge(self, file: _File) -> bool:
        file.format = sniff(bytes(file.head))
        if file.format is None:
            self._refuse(
                file,
                UnsupportedMedia(
                    "not an image we accept: JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF (judged by content, not by name)"
                ),
            )
        return file.error is None

    def _refuse(self, file: _File, error: ThumbifyError) -> None:
        if self.max_files == 1:
            raise error
        file.error = error
        file.pending, file.pending_bytes = [], 0  # its spool file, if any, is deleted at the end

    def to_spill(self, chunk_bytes: int) -> list[_File]:
        """The files whose pending bytes go to the spool now: the one being read once it holds a chunk; finished
        ones held in memory (a batch's small files) once together they hold more than a chunk."""
        held = [f for f in self.files if f is not self.current and f.error is None and f.pending_bytes]
        spill = held if sum(f.pending_bytes for f in held) > chunk_bytes else []
        current = self.current
        if current is not None and current.error is None and current.pending_bytes >= chunk_bytes:
            spill.append(current)
        return spill

    def spill(self, files: list[_File]) -> None:
        for file in files:
            file.spill(self.spool)

    def result(self, file: _File) -> Upload | Refused:
        """A finished file: the upload (its spool file closed, or its bytes), or why it was refused."""
        if file.error is not None:
            file.drop()
            return Refused(file.filename, file.error)
        if file.fh is not None:
            file.spill(self.spool)
            file.fh.close()
        assert file.format is not None
        source = file.path if file.path is not None else file.take_pending()
        return Upload(source, file.filename, file.digest.hexdigest(), self.fields)


async def receive(request: Request, spool: Path, max_bytes: int, chunk_bytes: int, idle_timeout_s: float) -> Upload:
    """The upload, spooled; a ThumbifyError (and nothing left in the spool) if it is refused or stops arriving for
    `idle_timeout_s`."""
    (upload,), _ = await receive_many(request, spool, max_bytes, chunk_bytes, idle_timeout_s, max_files=1)
    assert isinstance(upload, Upload)  # with one file, a refused one raises
    return upload


async def receive_many(
    request: Request, spool: Path, max_bytes: int, chunk_bytes: int, idle_timeout_s: float, max_files: int
) -> tuple[list[Upload | Refused], dict[str, list[str]]]:
    """Up to `max_files` uploads, each spooled and judged alone (each within `max_bytes`): each file's upload, or why
    it was refused (with one file, that error is raised), and the form fields (on every upload too). A
    ThumbifyError (and nothing left in the spool) if the request as a whole is refused or stops arriving."""
    content_type = request.headers.get("content-type", "")
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidUpload("send the image as multipart/form-data with a `file` part")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes * max_files + 64 * 1024:
        if max_files == 1:
            raise TooLarge(f"the upload is larger than the limit of {max_bytes:,} bytes")
        raise TooLarge(f"the batch is larger than {max_files} files of at most {max_bytes:,} bytes")

    rx = _Receiver(spool, max_bytes, max_files)
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
                if spill := rx.to_spill(chunk_bytes):
                    await anyio.to_thread.run_sync(rx.spill, spill)
            parser.finalize()
        except ValueError as exc:  # python-multipart's parse errors
            raise InvalidUpload(f"malformed multipart body: {exc}") from exc
        if not rx.files:
            raise InvalidUpload("the `file` part is missing")
        files = [await anyio.to_thread.run_sync(rx.result, f) if f.fh else rx.result(f) for f in rx.files]
        return files, rx.fields
    except BaseException as exc:
        for file in rx.files:
            file.drop()
        if more and isinstance(exc, ThumbifyError) and not isinstance(exc, UploadTimeout):
            await drain(request, idle_timeout_s, consumed)
        raise


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
