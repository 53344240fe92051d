"""`thumbify keys`: the API keys in the keys file the servers of a data folder read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thumbify_cli.common import DataOpt, apply_options, console, load_settings, output

app = typer.Typer(help="API keys: each job belongs to the key that created it.", no_args_is_help=True)


KeysFileOpt = Annotated[
    Path | None,
    typer.Option("--file", metavar="FILE", help="Keys file \\[env THUMBIFY_API_KEYS_FILE; default DATA_DIR/keys.json]"),
]


def _keys_path(file: Path | None, data_dir: Path | None) -> Path:
    """The file to write or read: `--file`, else THUMBIFY_API_KEYS_FILE, else DATA_DIR/keys.json — the file the
    servers of this data folder read (thumbify.keys.keys_file), unless THUMBIFY_API_KEYS alone gives them keys."""
    apply_options(data_dir=data_dir)
    settings = load_settings()
    return file or settings.api_keys_file or settings.data_dir / "keys.json"


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The key's name: the owner of the jobs it creates")],
    scope: Annotated[
        list[str] | None,
        typer.Option(metavar="SCOPE", help="submit, read or admin; repeat for several \\[default: submit and read]"),
    ] = None,
    callback_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Where the key's jobs POST their completion webhook unless a job names its own; the key gets a "
            "webhook signing secret, printed once after the key",
        ),
    ] = None,
    source_prefix: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PREFIX",
            help="May make jobs from objects in the bucket whose keys start with PREFIX (POST /v1/jobs with "
            "source_key; `thumbify ingest`); repeatable. An admin key may use any",
        ),
    ] = None,
    presets_only: Annotated[
        bool,
        typer.Option(
            "--presets-only",
            help="Its jobs may only name a preset (`preset=NAME`, THUMBIFY_PRESETS_FILE) and no other thumbnail "
            "option: the key can make only the presets' variants",
        ),
    ] = False,
    file: KeysFileOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Make a key, store its hash in the keys file, print the key once (it is not stored anywhere)."""
    from dataclasses import replace

    from thumbify import callback_url as callbacks
    from thumbify.errors import InvalidCallbackUrl
    from thumbify.keys import add_to_file, new_key, new_webhook_secret
    from thumbify.sources import source_prefixes

    path = _keys_path(file, data_dir)
    try:
        token, key = new_key(name, scope or ["submit", "read"])
        if callback_url:
            callbacks.parse(callback_url, load_settings())  # the address is checked when a job is submitted
            key = replace(key, callback_url=callback_url, webhook_secret=new_webhook_secret())
        if source_prefix:
            key = replace(key, source_prefixes=tuple(source_prefixes(source_prefix)))
        key = replace(key, presets_only=presets_only)
        add_to_file(path, key)
    except (ValueError, InvalidCallbackUrl) as exc:
        console.print(f"[red]{getattr(exc, 'detail', exc)}[/]")
        raise typer.Exit(2) from exc
    only = ", presets only" if presets_only else ""
    console.print(
        f"key [bold]{name}[/] ({', '.join(sorted(key.scopes))}{only}) added to {path}; it is shown only now. "
        "Servers on this data folder read that file (running ones within seconds): every request now needs a key."
    )
    print(token)
    if key.webhook_secret:
        console.print(
            f"its jobs call back to {key.callback_url}, signed (Standard Webhooks) with this secret, shown only now:"
        )
        print(key.webhook_secret)


@app.command("list")
def keys_list(
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="One JSON object per line instead of a table")
    ] = False,
    file: KeysFileOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """The keys in the keys file: name, id, scopes, created, callback URL (never a secret)."""
    import json

    from thumbify.keys import read_file

    path = _keys_path(file, data_dir)
    try:
        entries = read_file(path)
    except (OSError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if as_json:
        for k in entries:
            row = {"name": k.name, "id": k.id, "scopes": sorted(k.scopes), "created": k.created or None}
            print(json.dumps(row | {"callback_url": k.callback_url or None, "presets_only": k.presets_only}))
        return
    if not path.exists():
        console.print(f"no keys file at {path}: authentication is off (create a key with `thumbify keys create`)")
        return
    from rich.table import Table

    table = Table(title=f"{len(entries)} key(s) in {path}")
    for column in ("name", "id", "scopes", "presets only", "created (UTC)", "callback URL"):
        table.add_column(column, no_wrap=True)
    for k in entries:
        only = "yes" if k.presets_only else "-"
        table.add_row(k.name, k.id, ", ".join(sorted(k.scopes)), only, k.created or "-", k.callback_url or "-")
    output().print(table)


@app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The key's name or its 8-hex id")],
    file: KeysFileOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Remove a key from the keys file; running servers refuse it within seconds, no restart needed."""
    from thumbify.keys import remove_from_file

    path = _keys_path(file, data_dir)
    try:
        gone = remove_from_file(path, key)
    except (OSError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"key [bold]{gone.name}[/] ({gone.id}) revoked: removed from {path}")
