"""Storage: one small interface, implementations side by side, chosen by settings (thumbor's shape)."""

from thumbify.storage.base import Storage, StoredObject
from thumbify.storage.local import LocalStorage


def open_storage(settings) -> Storage:
    return LocalStorage(settings.data_dir / "objects", settings.spool_dir)


__all__ = ["Storage", "StoredObject", "LocalStorage", "open_storage"]
