"""API keys: named, scoped, and stored only as hashes.

A key reads `tfy_<id>_<secret>`. The 8-hex id finds its entry without scanning every key; the 256-bit secret is
checked against its stored SHA-256 with `hmac.compare_digest`. The secrets are random, not chosen by people, so a
fast hash is enough: a slow password hash only helps against guessing low-entropy secrets.

Keys come from a JSON file (`THUMBIFY_API_KEYS_FILE`, e.g. a mounted Kubernetes Secret) and/or the
`THUMBIFY_API_KEYS` variable, both `{"keys": [{"name", "id", "sha256", "scopes"}]}`; `thumbify keys create NAME`
appends to the file and prints the key once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("submit", "read", "admin")
_TOKEN = re.compile(r"^tfy_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Compared against when the id is unknown, so a miss costs the same as a wrong secret.
_DUMMY = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str  # the owner of every job the key creates
    id: str
    sha256: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    def entry(self) -> dict:
        return {"name": self.name, "id": self.id, "sha256": self.sha256, "scopes": sorted(self.scopes)}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(name: str, scopes: list[str]) -> tuple[str, ApiKey]:
    """A fresh key: the token (shown once) and the entry to store."""
    if not _NAME.match(name):
        raise ValueError("a key name is 1..64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(sorted(unknown)) or 'none'}")
    key_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    return f"tfy_{key_id}_{secret}", ApiKey(name, key_id, _digest(secret), frozenset(scopes))


def _parse(text: str, origin: str) -> list[ApiKey]:
    try:
        entries = json.loads(text)["keys"]
        return [ApiKey(e["name"], e["id"], e["sha256"], frozenset(e["scopes"])) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f'{origin}: expected {{"keys": [{{"name", "id", "sha256", "scopes"}}, ...]}} ({exc})') from exc


class KeyRing:
    """The keys this process accepts. Empty means authentication is off (allowed only on loopback)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = {k.id: k for k in keys}

    @classmethod
    def load(cls, file: Path | None, inline: str = "") -> KeyRing:
        keys: list[ApiKey] = []
        if file is not None and file.exists():
            keys += _parse(file.read_text(), str(file))
        if inline.strip():
            keys += _parse(inline, "THUMBIFY_API_KEYS")
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def verify(self, token: str) -> ApiKey | None:
        match = _TOKEN.match(token.strip())
        if not match:
            return None
        key = self.keys.get(match.group(1))
        ok = hmac.compare_digest(_digest(match.group(2)), key.sha256 if key else _DUMMY)
        return key if ok and key else None


def add_to_file(path: Path, key: ApiKey) -> None:
    """Append a key's entry to the keys file, atomically (temp + rename), readable by the owner only."""
    existing = _parse(path.read_text(), str(path)) if path.exists() else []
    if any(k.name == key.name for k in existing):
        raise ValueError(f"a key named {key.name!r} already exists in {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"keys": [k.entry() for k in [*existing, key]]}, fh, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
