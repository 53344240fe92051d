"""Presigned uploads straight to the bucket (POST /v1/uploads): the bytes of a large image never pass through the API.

Three shapes, as S3 offers them: a POST form whose policy pins the key and bounds the size (`content-length-range`,
enforced by the bucket itself: what a browser sends), a PUT whose signature covers the exact Content-Length, and a
multipart upload with one presigned PUT per part. The URLs are made with the endpoint clients reach the bucket at
(`s3_public_endpoint_url`), which may differ from the API's own. Presigning is local arithmetic (no request).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from thumbify.storage.s3 import S3Storage, s3_errors

# The bucket's word for parts that are not the upload's (a missing part, a wrong ETag, one too small).
BAD_PARTS = {"InvalidPart", "InvalidPartOrder", "EntityTooSmall"}


class Presigner:
    def __init__(self, storage: S3Storage, public_endpoint: str = "") -> None:
        self.storage = storage
        self.public_endpoint = public_endpoint

    async def _signer(self):
        """The client that signs: the storage's own, or its client for the public endpoint (closed with it)."""
        return await self.storage._s3(self.public_endpoint or None)

    async def post(self, key: str, max_bytes: int, ttl_s: int) -> tuple[str, dict[str, str]]:
        """A form upload of 1..`max_bytes` bytes to exactly `key`: the URL and the form's fields."""
        signer = await self._signer()
        with s3_errors("presign", key):
            form = await signer.generate_presigned_post(
                self.storage.bucket,
                self.storage._key(key),
                Conditions=[["content-length-range", 1, max_bytes]],
                ExpiresIn=ttl_s,
            )
        return form["url"], form["fields"]

    async def put(self, key: str, size: int, ttl_s: int) -> str:
        """A PUT of exactly `size` bytes to `key` (the length is part of the signature)."""
        signer = await self._signer()
        params = {"Bucket": self.storage.bucket, "Key": self.storage._key(key), "ContentLength": size}
        with s3_errors("presign", key):
            return await signer.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl_s)

    async def start_multipart(self, key: str) -> str:
        """A multipart upload opened on `key` (a request to the bucket): its upload id."""
        s3 = await self.storage._s3()
        with s3_errors("multipart", key):
            answer = await s3.create_multipart_upload(Bucket=self.storage.bucket, Key=self.storage._key(key))
        return answer["UploadId"]

    async def part(self, key: str, upload_id: str, number: int, size: int, ttl_s: int) -> str:
        """A PUT of part `number` (exactly `size` bytes)."""
        signer = await self._signer()
        params = {
            "Bucket": self.storage.bucket,
            "Key": self.storage._key(key),
            "UploadId": upload_id,
            "PartNumber": number,
            "ContentLength": size,
        }
        with s3_errors("presign", key):
            return await signer.generate_presigned_url("upload_part", Params=params, ExpiresIn=ttl_s)

    async def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Join the parts (number, ETag) into the object. FileNotFoundError if the upload is unknown to the bucket,
        ValueError (the bucket's words) if the parts are not its parts."""
        s3 = await self.storage._s3()
        with s3_errors("multipart", key):
            try:
                await s3.complete_multipart_upload(
                    Bucket=self.storage.bucket,
                    Key=self.storage._key(key),
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag in parts]},
                )
            except ClientError as exc:
                error = exc.response.get("Error", {})
                if error.get("Code") in BAD_PARTS:
                    raise ValueError(error.get("Message", "bad parts")) from exc
                raise

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        s3 = await self.storage._s3()
        try:
            with s3_errors("multipart", key):
                await s3.abort_multipart_upload(
                    Bucket=self.storage.bucket, Key=self.storage._key(key), UploadId=upload_id
                )
        except FileNotFoundError:
            pass  # completed or aborted already
