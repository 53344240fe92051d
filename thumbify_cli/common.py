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


def apply_options(**values: object) -> None:
    """Command-line options become THUMBIFY_* variables, so this process and its children read one source."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"THUMBIFY_{name.upper()}"] = str(value)


def load_settings():
    from thumbify.settings import Settings

    return Settings()
