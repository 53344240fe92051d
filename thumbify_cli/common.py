"""What the commands share: the consoles, the options every command takes, and how options become settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# Messages go to stderr, results (tables, JSON) to stdout. Lines are never wrapped for a file or a pipe: rich would
# cut them at 80 columns where there is no terminal to ask.
console = Console(stderr=True, soft_wrap=True)


def output() -> Console:
    """stdout for results; wide when it is not a terminal, so tables in a log or a pipe are not folded at 80."""
    out = Console()
    return out if out.is_terminal else Console(width=200)


HostOpt = Annotated[
    str | None, typer.Option(metavar="ADDRESS", help="Address to bind \\[env THUMBIFY_HOST; default 127.0.0.1]")
]
PortOpt = Annotated[int | None, typer.Option(metavar="PORT", help="Port \\[env THUMBIFY_PORT; default 8000]")]
DataOpt = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Data folder \\[env THUMBIFY_DATA_DIR; default ./data]")
]
# The thumbnail sizes, for the commands that render (`thumbnail`) or ask a server to (`submit`, `ingest`).
SizeOpt = Annotated[
    list[str] | None,
    typer.Option("--size", "-s", metavar="SIZE", help="256 (a box) or 320x200; repeatable \\[default: 256]"),
]


def apply_options(**values: object) -> None:
    """Command-line options become THUMBIFY_* variables, so this process and its children read one source."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"THUMBIFY_{name.upper()}"] = str(value)


def load_settings():
    from thumbify.settings import Settings

    return Settings()


def redis_url_of(settings) -> str:
    """THUMBIFY_REDIS_URL, else the embedded Redis of `thumbify serve` on this data folder."""
    if settings.redis_url:
        return settings.redis_url
    from thumbify.redis_conn import EmbeddedRedis

    embedded = EmbeddedRedis(settings.data_dir / "redis")
    if embedded.socket.exists():
        return embedded.url
    no_service(
        f"THUMBIFY_REDIS_URL is not set and no `thumbify serve` runs on the data folder {settings.data_dir.resolve()}"
    )


def no_service(why: str) -> None:
    """Stop, telling the user how to point this command at the running service."""
    console.print(
        f"[red]{why}.[/]\nPoint at the running service with [bold]--data-dir DIR[/] (the folder `thumbify serve` "
        "was given; default ./data) or [bold]THUMBIFY_REDIS_URL[/]=redis://HOST:6379/0 (and THUMBIFY_KEY_PREFIX, "
        "if it is not `thumbify`)."
    )
    raise typer.Exit(2)


def with_redis(settings, work):
    """Run `await work(redis, keys)` against the running service's Redis (operator commands: dlq, webhooks)."""
    import asyncio

    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from thumbify.keyspace import Keys
    from thumbify.redis_conn import connect

    url = redis_url_of(settings)

    async def run():
        redis = connect(url)
        try:
            return await work(redis, Keys(settings.key_prefix))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        no_service(f"Redis at {url} does not answer ({exc})")
