"""`thumbify presets`: the presets a running server offers (GET /v1/presets), as a table or JSON lines."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from thumbify_cli.common import console, output
from thumbify_cli.remote import DEFAULT_URL, KeyOpt, UrlOpt, cannot_reach

# The columns shown; the rest of each preset's options are in --json.
_COLUMNS = ("sizes", "fit", "format", "quality", "effort")


def presets(
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="One JSON object per line (every option) instead of a table")
    ] = False,
) -> None:
    """The named option sets a job may ask for with `--preset NAME` (the server's THUMBIFY_PRESETS_FILE)."""
    import httpx

    from thumbify_cli.client import ThumbifyClient, ThumbifyError

    try:
        with ThumbifyClient(url, key) as client:
            items = client.presets()
    except httpx.TransportError as exc:
        raise cannot_reach(url, exc) from None
    except ThumbifyError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    if as_json:
        for item in items:
            print(json.dumps(item))
        return
    from rich.table import Table

    table = Table(title=f"{len(items)} preset(s) at {url}")
    for column in ("name", *_COLUMNS):
        table.add_column(column, overflow="fold")
    for item in items:
        options = item["options"]
        cells = [", ".join(options["sizes"]), *(str(options[c]) for c in _COLUMNS[1:])]
        table.add_row(item["name"], *(cell.replace("None", "-") for cell in cells))
    output().print(table)
