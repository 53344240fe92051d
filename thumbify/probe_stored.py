"""An object already in storage (a direct upload, an object to ingest) judged without bringing it to the API.

Its size comes from a HEAD; its first 64 KiB from one ranged GET (the magic bytes, a JPEG's or PNG's layout); libvips
reads the header through a custom source whose reads are ranged GETs of 256 KiB blocks, so a TIFF whose directory
lies at its end costs two requests, not the file. A header that needs more than `HEADER_BUDGET` bytes (a large
GIF's frames, which libvips scans whole) is judged on a copy in the spool instead: correct, only slower. An object
that fits in the first read gets exactly the check a streamed upload gets. For the others, what needs the whole
file (frame blocks, PNG checksums) is the worker's to check on its copy before it decodes (`Check.partial`).
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import anyio.from_thread

from thumbify.errors import InvalidUpload, TooLarge
from thumbify.probe import LOADERS, SourceInfo, _vips, probe_for, probe_header, probe_limits
from thumbify.settings import Settings
from thumbify.storage import Storage, StoredObject

HEAD_BYTES = 64 * 1024
BLOCK_BYTES = 256 * 1024
HEADER_BUDGET = 16 * 1024 * 1024


@dataclass(frozen=True)
class Check:
    info: SourceInfo
    etag: str  # the version judged: the worker refuses any other
    partial: bool  # judged from the header only: the worker checks the whole file before decoding


class _OverBudget(Exception):
    pass


class _RangedReads:
    """Blocking reads for libvips' custom source (run in a worker thread), each block fetched once through the
    event loop's storage client."""

    def __init__(self, storage: Storage, key: str, size: int, etag: str, head: bytes) -> None:
        self.storage, self.key, self.size, self.etag = storage, key, size, etag
        self.blocks: dict[int, bytes] = {}
        self.head = head
        self.fetched = 0
        self.pos = 0

    def _block(self, index: int) -> bytes:
        if index not in self.blocks:
            if self.fetched >= HEADER_BUDGET:
                raise _OverBudget
            start = index * BLOCK_BYTES
            self.blocks[index] = anyio.from_thread.run(self.storage.read_range, self.key, start, BLOCK_BYTES, self.etag)
            self.fetched += len(self.blocks[index])
        return self.blocks[index]

    def read(self, length: int) -> bytes:
        if self.pos >= self.size or length <= 0:
            return b""
        if self.pos + length <= len(self.head):
            data = self.head[self.pos : self.pos + length]
        else:
            index, offset = divmod(self.pos, BLOCK_BYTES)
            data = self._block(index)[offset : offset + length]
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos


async def check_stored(storage: Storage, key: str, settings: Settings, stored: StoredObject | None = None) -> Check:
    """The object at `key` (as `stored` found it, or a HEAD now) judged as an upload is: TooLarge, InvalidUpload
    (empty), UnsupportedMedia, the header's limits; FileNotFoundError if there is none."""
    stored = stored or await storage.stat(key)
    if stored is None:
        raise FileNotFoundError(key)
    if stored.size == 0:
        raise InvalidUpload("the uploaded file is empty")
    if stored.size > settings.max_upload_bytes:
        raise TooLarge(f"the upload is {stored.size:,} bytes; the limit is {settings.max_upload_bytes:,}")
    head = await storage.read_range(key, 0, HEAD_BYTES, stored.etag)
    if len(head) >= stored.size:
        return Check(await anyio.to_thread.run_sync(probe_for, head, settings), stored.etag, partial=False)
    reads = _RangedReads(storage, key, stored.size, stored.etag, head)
    try:
        info = await anyio.to_thread.run_sync(_header, reads, probe_limits(settings))
    except _OverBudget:
        async with storage.local_copy(key, stored.etag) as path:
            return Check(await anyio.to_thread.run_sync(probe_for, path, settings), stored.etag, partial=False)
    return Check(info, stored.etag, partial=True)


def _header(reads: _RangedReads, limits: dict[str, int]) -> SourceInfo:
    pyvips = _vips()
    over = False

    def read(length: int) -> bytes:
        nonlocal over
        try:
            return reads.read(length)
        except _OverBudget:
            over = True
            return b""  # libvips sees the end of the file and fails its header read

    def open_header(fmt: str):
        source = pyvips.SourceCustom()
        source.on_read(read)
        source.on_seek(reads.seek)
        return getattr(pyvips.Image, f"{LOADERS[fmt]}_source")(source, access="sequential")

    try:
        return probe_header(reads.head, reads.size, open_header, limits)
    except Exception:
        if over:
            raise _OverBudget from None
        raise
