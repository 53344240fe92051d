"""Signed thumbnail URLs: `<path>?expires=<unix>&sig=<HMAC-SHA256(secret, path + expires)>`, so a browser can
fetch a thumbnail (an `<img src>`) without the owner's key, for a limited time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable

from thumbify.settings import Settings


def _mac(secret: str, path: str, expires: int) -> str:
    digest = hmac.new(secret.encode(), f"{path}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(secret: str, path: str, ttl_s: int, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    return f"{path}?expires={expires}&sig={_mac(secret, path, expires)}"


def valid(secret: str, path: str, expires: str, sig: str, now: float | None = None) -> bool:
    """The signature is ours for this path and has not expired."""
    # ASCII only: str.isdigit takes '²', and compare_digest refuses non-ASCII str.
    if not (expires.isascii() and expires.isdigit() and sig.isascii()) or len(expires) > 12:
        return False
    expected = _mac(secret, path, int(expires))
    return hmac.compare_digest(expected, sig) and int(expires) >= (now if now is not None else time.time())


def linker(settings: Settings) -> Callable[[str], str]:
    """How a job's thumbnail paths are shown (the API's answers, webhooks): signed for `signed_url_ttl_s` when a
    signing secret is set, else the bare path."""
    secret = settings.url_signing_secret.get_secret_value()
    if not secret:
        return str
    return lambda path: sign(secret, path, settings.signed_url_ttl_s)
