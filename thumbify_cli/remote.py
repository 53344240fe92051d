"""What the commands that talk to a running server over HTTP share (`submit`, `ingest`): the server and key options,
the job option flags, the refusal they print when the server does not answer."""

from __future__ import annotations

from typing import Annotated

import typer

from thumbify_cli.common import console

UrlOpt = Annotated[str, typer.Option(metavar="URL", envvar="THUMBIFY_URL", help="The server \\[env THUMBIFY_URL]")]
KeyOpt = Annotated[
    str | None, typer.Option(metavar="KEY", envvar="THUMBIFY_API_KEY", help="API key \\[env THUMBIFY_API_KEY]")
]
FormatOpt = Annotated[str | None, typer.Option(metavar="FORMAT", help="jpeg, webp, png, avif, gif or auto")]
FitOpt = Annotated[str | None, typer.Option(metavar="FIT", help="inside, cover, fill or contain")]
QualityOpt = Annotated[int | None, typer.Option(min=1, max=100, help="Encoder quality")]
PresetOpt = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="One of the server's presets (`thumbify presets`); other flags override it"),
]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait until every job has ended, and show each")]
TimeoutOpt = Annotated[float, typer.Option(metavar="SECONDS", help="How long --wait waits in all")]
DEFAULT_URL = "http://127.0.0.1:8000"


def job_options(
    size: list[str] | None, format: str | None, fit: str | None, quality: int | None, preset: str | None = None
) -> dict:
    """The flags as the API's option names (None: the server's default, or the preset's)."""
    sizes = ",".join(size) if size else None
    return {"sizes": sizes, "format": format, "fit": fit, "quality": quality, "preset": preset}


def cannot_reach(url: str, exc: Exception) -> typer.Exit:
    """Say the server did not answer; the exit (status 2) to raise."""
    console.print(f"[red]cannot reach {url}: {exc}[/]\nStart it with `thumbify serve`, or name it with --url.")
    return typer.Exit(2)
