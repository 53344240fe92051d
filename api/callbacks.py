"""A submitted job's completion webhook: its URL (the `callback_url` option, else the API key's default), checked
before the job is written."""

from __future__ import annotations

import anyio

from thumbify import callback_url
from thumbify.errors import InvalidCallbackUrl, InvalidOptions
from thumbify.jobs import callback_fields
from thumbify.keys import ApiKey
from thumbify.settings import Settings


async def callback_for(options: dict[str, list[str]], key: ApiKey | None, settings: Settings) -> dict[str, str]:
    """The record fields of the job's callback ({} when it has none), or 422 invalid-callback-url. Deliveries are
    always signed, so a callback needs a secret: the key's own, else THUMBIFY_WEBHOOK_SECRET. The URL check
    resolves the host, so it runs in a thread."""
    given = options.get("callback_url") or []
    if len(given) > 1:
        raise InvalidOptions("callback_url: give it once", errors=[{"field": "callback_url", "message": "repeated"}])
    url = (given[0].strip() if given else "") or (key.callback_url if key else "")
    if not url:
        return {}
    if not (key and key.webhook_secret) and not settings.webhook_secret.get_secret_value():
        raise InvalidCallbackUrl(
            "no secret to sign webhooks with: set THUMBIFY_WEBHOOK_SECRET, or use a key created with "
            "`thumbify keys create NAME --callback-url URL` (which has its own)"
        )
    await anyio.to_thread.run_sync(callback_url.check, url, settings)
    return callback_fields(url)
