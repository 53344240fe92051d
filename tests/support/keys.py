"""API keys as an operator makes them (`thumbify keys create`), and the header a client sends one in."""

from __future__ import annotations

from pathlib import Path

from support.cli import cli


def create_key(keys_file: Path, name: str, *scopes: str, source_prefixes: tuple[str, ...] = ()) -> str:
    """A new key named `name` with `scopes` (default: the CLI's) in `keys_file`, allowed to ingest the bucket keys
    under `source_prefixes`; the secret is returned."""
    options = [
        *(arg for s in scopes for arg in ("--scope", s)),
        *(a for p in source_prefixes for a in ("--source-prefix", p)),
    ]
    done = cli("keys", "create", name, "--file", str(keys_file), *options)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def secret_of(key: str) -> str:
    """The 43-character secret of a `tfy_<id>_<secret>` key (the secret itself may hold "_")."""
    return key.split("_", 2)[2]
