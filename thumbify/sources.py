"""Jobs from objects already in the bucket (`POST /v1/jobs` with `source_key`, `thumbify ingest`): which keys may be
named, and by whom. A source key is relative to `s3_prefix`, like every key Thumbify writes; Thumbify's own areas
(originals, thumbnails) are never a source: a key could otherwise make jobs of another key's uploads."""

from __future__ import annotations

import hashlib
import json

from thumbify.errors import InvalidOptions
from thumbify.storage.layout import RESERVED_PREFIXES

MAX_KEY = 1024  # S3's longest key, in UTF-8 bytes


def _problem(key: str) -> str | None:
    """Why `key` cannot be a source (or a prefix of sources), or None."""
    if not key:
        return "is empty"
    if len(key.encode()) > MAX_KEY:
        return f"is longer than {MAX_KEY} bytes"
    if key.startswith("/") or ".." in key.split("/"):
        return "must be a key in the bucket: no leading '/', no '..'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return "contains control characters"
    if key.startswith(RESERVED_PREFIXES):
        return f"is in Thumbify's own area ({', '.join(RESERVED_PREFIXES)})"
    return None


def source_key(key: str) -> str:
    """`key` if it may name a source object; else 422 naming `source_key`."""
    if why := _problem(key):
        raise InvalidOptions(f"source_key {why}", errors=[{"field": "source_key", "message": why}])
    return key


def source_prefixes(prefixes: list[str]) -> list[str]:
    """An API key's allowed prefixes, each checked as a source key is (ValueError naming the bad one)."""
    for prefix in prefixes:
        if why := _problem(prefix):
            raise ValueError(f"source prefix {prefix!r} {why}")
    return prefixes


def may_read(key: str, admin: bool, prefixes: tuple[str, ...]) -> bool:
    return admin or any(key.startswith(p) for p in prefixes)


def fingerprint(key: str, etag: str, options: dict[str, list[str]]) -> str:
    """What makes two ingests the same one: the object (its key and version) and the options."""
    return hashlib.sha256(json.dumps([key, etag, options], sort_keys=True).encode()).hexdigest()
