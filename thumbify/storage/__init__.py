"""Storage: one small interface, implementations side by side, chosen by settings (thumbor's shape)."""

from thumbify.storage.base import THUMBNAIL_CACHE_CONTROL, Storage, StoredObject
from thumbify.storage.layout import is_thumbnail, job_prefixes, original_key, thumbnail_key, thumbnails_prefix
from thumbify.storage.local import LocalStorage


def open_storage(settings) -> Storage:
    if settings.storage == "s3":
        from thumbify.storage.s3 import S3Storage  # aioboto3 loads only where S3 is used

        return S3Storage(settings)
    return LocalStorage(settings.data_dir / "objects", settings.spool_dir)


__all__ = [
    "THUMBNAIL_CACHE_CONTROL",
    "Storage",
    "StoredObject",
    "LocalStorage",
    "open_storage",
    "is_thumbnail",
    "job_prefixes",
    "original_key",
    "thumbnail_key",
    "thumbnails_prefix",
]
