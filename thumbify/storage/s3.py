"""S3 and anything that speaks its API (MinIO, Ceph, R2, rclone), through aioboto3.

Keys map to `<s3_prefix><key>` in one bucket. Uploads of originals go up in parts (`s3_part_mib`) from the API's spool
file, one part held at a time, and a failed multipart upload is aborted (an upload cut short by the
process dying is what the bucket's AbortIncompleteMultipartUpload lifecycle rule is for). Workers download an
original to a temporary file in their spool folder for the length of a render. Errors: a missing object is
FileNotFoundError (stat: None), anything else StorageFailed (503 at the API, a retry with backoff in the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aioboto3
import aiohttp
import anyio
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from thumbify.errors import OriginalChanged, StorageFailed
from thumbify.storage.base import THUMBNAIL_CACHE_CONTROL, StoredObject
from thumbify.storage.layout import is_thumbnail

log = logging.getLogger(__name__)

MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
CHANGED = {"412", "PreconditionFailed"}  # an If-Match that no longer holds
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes
PING_KEY = ".thumbify-ping"
DOWNLOAD_CHUNK = 1 << 20


class S3Storage:
    def __init__(self, settings) -> None:
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self.spool = settings.spool_dir.resolve()
        self.spool.mkdir(parents=True, exist_ok=True)
        secret = settings.s3_secret_access_key.get_secret_value()
        # Empty settings leave the choice to boto's own chain (AWS_* variables, profiles, IRSA, instance roles).
        self._session = aioboto3.Session(
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=secret or None,
            region_name=settings.s3_region or None,
        )
        self._endpoint = settings.s3_endpoint_url or None
        self._config = Config(
            signature_version="s3v4",  # presigned URLs too: S3-compatible servers often refuse SigV2
            s3={"addressing_style": settings.s3_addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=64,  # boto's 10 would queue an API's concurrent uploads and downloads
            connect_timeout=5,
            read_timeout=30,
        )
        self._part = settings.s3_part_mib * 1024 * 1024
        self._clients: dict[str | None, object] = {}  # by endpoint
        self._stack: AsyncExitStack | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"key outside storage: {key!r}")
        return self.prefix + key

    async def _s3(self, endpoint: str | None = None):
        """The client for `endpoint` (default: the storage's own; presigning may sign for a public one), made on
        first use in the running event loop (aiobotocore's sessions belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._clients, self._stack, self._loop, self._opening = {}, AsyncExitStack(), loop, asyncio.Lock()
        endpoint = endpoint or self._endpoint
        async with self._opening:
            if endpoint not in self._clients:
                self._clients[endpoint] = await self._stack.enter_async_context(
                    self._session.client("s3", endpoint_url=endpoint, config=self._config)
                )
        return self._clients[endpoint]

    async def aclose(self) -> None:
        stack, self._clients, self._stack, self._loop = self._stack, {}, None, None
        if stack is not None:
            await stack.aclose()

    async def put_file(self, key: str, path: Path) -> None:
        s3 = await self._s3()
        full = self._key(key)
        try:
            with s3_errors("upload", key):
                await self._upload(s3, full, path)
        except BaseException:
            # Failed or cancelled (a client that hung up), the upload leaves nothing behind: its multipart upload
            # is aborted, and an object that completed just before the cancel is not the caller's either.
            await asyncio.shield(self._discard(key))
            raise
        path.unlink(missing_ok=True)  # a move, as on local storage: the spool file is ours to remove

    async def _upload(self, s3, full: str, path: Path) -> None:
        """The file in one PUT, or in parts read one at a time: the API holds one part, whatever the file's size.
        (aioboto3's managed `upload_file` reads ahead of its 4 concurrent parts: a 200 MB original grew the API by
        150-210 MiB, measured by benchmarks/direct_upload.py.)"""
        with path.open("rb") as fh:
            first = await anyio.to_thread.run_sync(fh.read, self._part)
            if len(first) < self._part:
                await s3.put_object(Bucket=self.bucket, Key=full, Body=first)
                return
            upload_id = (await s3.create_multipart_upload(Bucket=self.bucket, Key=full))["UploadId"]
            parts, chunk = [], first
            while chunk:
                number = len(parts) + 1
                answer = await s3.upload_part(
                    Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                chunk = None  # let it go before the next part is read
                chunk = await anyio.to_thread.run_sync(fh.read, self._part)
        # (A failure leaves the multipart upload open: `put_file` aborts it through `_discard`.)
        await s3.complete_multipart_upload(
            Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    async def _open_uploads(self, full: str) -> list[dict]:
        s3 = await self._s3()
        try:
            return (await s3.list_multipart_uploads(Bucket=self.bucket, Prefix=full)).get("Uploads", [])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return []  # how rclone's S3 server says "none" (AWS answers an empty list)
            raise

    async def discard(self, key: str) -> None:
        """The object at `key` deleted, and any unfinished multipart upload to it aborted."""
        s3 = await self._s3()
        full = self._key(key)
        with s3_errors("delete", key):
            for upload in await self._open_uploads(full):
                if upload["Key"] == full:  # keys are one job's: no one else is uploading to it
                    await s3.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload["UploadId"])
            await s3.delete_object(Bucket=self.bucket, Key=full)

    async def _discard(self, key: str) -> None:
        try:
            await self.discard(key)
        except Exception as exc:  # S3 away: the bucket's AbortIncompleteMultipartUpload rule is the backstop
            log.warning("could not clean up the failed upload of %s: %s", key, exc)

    async def put_bytes(self, key: str, data: bytes) -> None:
        s3 = await self._s3()
        extra = {"ContentType": mimetypes.guess_type(key)[0] or "application/octet-stream"}
        if is_thumbnail(key):
            extra["CacheControl"] = THUMBNAIL_CACHE_CONTROL
        with s3_errors("write", key):
            await s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    @asynccontextmanager
    async def local_copy(self, key: str, etag: str = "") -> AsyncIterator[Path]:
        s3 = await self._s3()
        fd, name = tempfile.mkstemp(dir=self.spool, prefix=".s3-", suffix=".part")
        path = Path(name)
        try:
            # One GET streamed to the file: about a fifth less CPU than aioboto3's managed download (its ranged GETs
            # and thread-pool writes), measured on 3 MB originals. Writes of 1 MiB to a local disk do not hold the
            # event loop for long.
            with os.fdopen(fd, "wb") as out, s3_errors("download", key):
                response = await s3.get_object(Bucket=self.bucket, Key=self._key(key), **_if_match(etag))
                _same_version(response, etag, key)
                stream = response["Body"]
                async with stream:  # (the context gives aiohttp's response, whose read takes no size)
                    while chunk := await stream.read(DOWNLOAD_CHUNK):
                        out.write(chunk)
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def read_range(self, key: str, start: int, length: int, etag: str = "") -> bytes:
        s3 = await self._s3()
        with s3_errors("read", key):
            response = await s3.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}", **_if_match(etag)
            )
            _same_version(response, etag, key)
            async with response["Body"] as body:
                return await body.read()

    async def stat(self, key: str) -> StoredObject | None:
        s3 = await self._s3()
        try:
            with s3_errors("stat", key):
                head = await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except FileNotFoundError:
            return None
        return StoredObject(key, int(head["ContentLength"]), etag=head.get("ETag", ""))

    async def read(self, key: str) -> bytes:
        s3 = await self._s3()
        with s3_errors("read", key):
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
            async with response["Body"] as body:
                return await body.read()

    async def presigned_get(self, key: str, ttl_s: int) -> str | None:
        s3 = await self._s3()
        with s3_errors("presign", key):
            return await s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=ttl_s
            )

    async def delete_prefix(self, prefix: str) -> int:
        """The object `prefix` and everything under `prefix/` (not `prefix2`: S3 prefixes are plain strings)."""
        s3 = await self._s3()
        full = self._key(prefix)
        keys: list[str] = []
        with s3_errors("list", prefix):
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys += [
                    o["Key"] for o in page.get("Contents", []) if o["Key"] == full or o["Key"].startswith(full + "/")
                ]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": k} for k in keys[start : start + DELETE_BATCH]]
            with s3_errors("delete", prefix):
                result = await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            if result.get("Errors"):
                first = result["Errors"][0]
                raise StorageFailed(f"S3 delete under {prefix!r} failed: {first.get('Code')}: {first.get('Message')}")
        return len(keys)

    async def ping(self) -> None:
        s3 = await self._s3()
        with s3_errors("write", PING_KEY):
            await s3.put_object(Bucket=self.bucket, Key=self.prefix + PING_KEY, Body=b"")


def _if_match(etag: str) -> dict[str, str]:
    return {"IfMatch": etag} if etag else {}


def _same_version(response: dict, etag: str, key: str) -> None:
    """OriginalChanged if a server that ignores If-Match sent another version of the object."""
    if etag and response.get("ETag", etag) != etag:
        raise _changed(key)


def _changed(key: str) -> OriginalChanged:
    return OriginalChanged(f"{key!r} changed after it was checked (uploaded again?)")


@contextlib.contextmanager
def s3_errors(op: str, key: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if str(error.get("Code")) in MISSING:
            raise FileNotFoundError(key) from exc
        if str(error.get("Code")) in CHANGED:
            raise _changed(key) from exc
        raise StorageFailed(f"S3 {op} of {key!r} failed: {error.get('Code')}: {error.get('Message')}") from exc
    except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise StorageFailed(f"S3 {op} of {key!r} failed: {exc}") from exc


__all__ = ["S3Storage"]
