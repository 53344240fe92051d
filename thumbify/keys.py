"""API keys: named, scoped, and stored only as hashes.

A key reads `tfy_<id>_<secret>`. The 8-hex id finds its entry without scanning every key; the 256-bit secret is
checked against its stored SHA-256 with `hmac.compare_digest`. The secrets are random, not chosen by people, so a
fast hash is enough: a slow password hash only helps against guessing low-entropy secrets.

Keys come from a JSON file and/or the `THUMBIFY_API_KEYS` variable, both
`{"keys": [{"name", "id", "sha256", "scopes", "created"}]}`. The file is `THUMBIFY_API_KEYS_FILE` (e.g. a mounted
Kubernetes Secret), else `<data dir>/keys.json` unless `THUMBIFY_API_KEYS` alone is set: where `thumbify keys
create NAME` writes by default is where the servers look. A running API re-reads the file when it changes, so a
key created or revoked takes effect within seconds. Authentication fails closed: once a keys file exists (even an
empty one) or the variable holds keys, every request needs a key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thumbify.settings import Settings

SCOPES = ("submit", "read", "admin")
_TOKEN = re.compile(r"^tfy_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Compared against when the id is unknown, so a miss costs the same as a wrong secret.
_DUMMY = hashlib.sha256(b"no such key").hexdigest()
# How often a running API looks at the keys file for changes (a stat; re-read only when it changed).
RELOAD_EVERY_S = 1.0

log = logging.getLogger("thumbify.keys")


@dataclass(frozen=True)
class ApiKey:
    name: str  # the owner of every job the key creates
    id: str
    sha256: str
    scopes: frozenset[str]
    created: str = ""  # ISO 8601, UTC; empty for keys made before it was recorded
    # Webhooks: where this key's jobs report by default, and the Standard Webhooks secret ("whsec_...") that signs
    # them, kept in clear because the server signs with it (empty: the global THUMBIFY_WEBHOOK_SECRET).
    callback_url: str = ""
    webhook_secret: str = field(default="", repr=False)  # never in a log line or a traceback
    # Keys in the bucket this key may make jobs from (POST /v1/jobs with `source_key`), by prefix; admin: any.
    source_prefixes: tuple[str, ...] = ()
    # May only submit `preset=NAME` and no other spec option (thumbify/presets.py): bounds the variants it can make.
    presets_only: bool = False

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    def entry(self) -> dict:
        entry = {"name": self.name, "id": self.id, "sha256": self.sha256, "scopes": sorted(self.scopes)}
        optional = {
            "created": self.created,
            "callback_url": self.callback_url,
            "webhook_secret": self.webhook_secret,
            "source_prefixes": list(self.source_prefixes),
            "presets_only": self.presets_only,
        }
        return entry | {k: v for k, v in optional.items() if v}


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
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return f"tfy_{key_id}_{secret}", ApiKey(name, key_id, _digest(secret), frozenset(scopes), created)


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: "whsec_" and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _parse(text: str, origin: str) -> list[ApiKey]:
    try:
        entries = json.loads(text)["keys"]
        return [
            ApiKey(
                e["name"],
                e["id"],
                e["sha256"],
                frozenset(e["scopes"]),
                str(e.get("created", "")),
                str(e.get("callback_url", "")),
                str(e.get("webhook_secret", "")),
                tuple(str(p) for p in e.get("source_prefixes", ())),
                e.get("presets_only", False) is True,
            )
            for e in entries
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f'{origin}: expected {{"keys": [{{"name", "id", "sha256", "scopes"}}, ...]}} ({exc})') from exc


def keys_file(explicit: Path | None, inline: str, data_dir: Path) -> Path | None:
    """The keys file a server reads: the explicit one, else `<data dir>/keys.json` unless keys come only from the
    variable."""
    if explicit is not None:
        return explicit
    return None if inline.strip() else data_dir / "keys.json"


def read_file(path: Path) -> list[ApiKey]:
    return _parse(path.read_text(), str(path)) if path.exists() else []


class KeyRing:
    """The keys this process accepts, kept in step with the keys file. Authentication is on (`bool(ring)`) once
    the file exists or the variable holds keys; with neither the API is open, which is allowed only on loopback."""

    def __init__(self, keys: list[ApiKey], file: Path | None = None, inline: list[ApiKey] | None = None) -> None:
        self.file, self._inline = file, inline or []
        self._enabled = bool(keys) or bool(self._inline) or (file is not None and file.exists())
        self.keys = {k.id: k for k in [*keys, *self._inline]}
        self._seen = self._stamp()
        self._checked = time.monotonic()

    @classmethod
    def for_settings(cls, settings: Settings) -> KeyRing:
        inline = settings.api_keys
        return cls.load(keys_file(settings.api_keys_file, inline, settings.data_dir), inline)

    @classmethod
    def load(cls, file: Path | None, inline: str = "") -> KeyRing:
        in_file = read_file(file) if file is not None else []
        return cls(in_file, file, _parse(inline, "THUMBIFY_API_KEYS") if inline.strip() else [])

    def _stamp(self) -> tuple | None:
        try:
            st = self.file.stat() if self.file is not None else None
        except OSError:
            return None
        return st and (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self) -> None:
        """Re-read the keys file if it changed (looked at once per RELOAD_EVERY_S). A file that vanished or does
        not parse keeps the keys last read: a broken edit must not lock everyone out, nor open the API."""
        now = time.monotonic()
        if self.file is None or now - self._checked < RELOAD_EVERY_S:
            return
        self._checked = now
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        try:
            keys = read_file(self.file)
        except (OSError, ValueError) as exc:
            log.error("keys file %s could not be read (%s); keeping the %d keys read before", self.file, exc, len(self))
            return
        self._seen = stamp
        self.keys = {k.id: k for k in [*keys, *self._inline]}
        if not self._enabled:
            log.warning("keys file %s appeared: authentication is now on", self.file)
        self._enabled = True
        log.info("keys file %s re-read: %d key(s)", self.file, len(self))

    def __bool__(self) -> bool:
        self.refresh()
        return self._enabled

    def __len__(self) -> int:
        return len(self.keys)

    def describe(self) -> str:
        """One line for the start-up log: is authentication on, and from where."""
        sources = ([f"{self.file}"] if self.file is not None and self.file.exists() else []) + (
            ["THUMBIFY_API_KEYS"] if self._inline else []
        )
        if self._enabled:
            return f"authentication ON: {len(self)} key(s) from {' and '.join(sources)}"
        where = f"no keys file at {self.file}" if self.file is not None else "no keys file"
        return f"authentication OFF ({where}, THUMBIFY_API_KEYS empty): anyone who can reach the API may use it"

    def named(self, name: str) -> ApiKey | None:
        """The key with this name (a job's owner): its callback URL and webhook secret."""
        self.refresh()
        return next((k for k in self.keys.values() if k.name == name), None)

    def verify(self, token: str) -> ApiKey | None:
        self.refresh()
        match = _TOKEN.match(token.strip())
        if not match:
            return None
        key = self.keys.get(match.group(1))
        ok = hmac.compare_digest(_digest(match.group(2)), key.sha256 if key else _DUMMY)
        return key if ok and key else None


def _write(path: Path, keys: list[ApiKey]) -> None:
    """Replace the keys file atomically (temp + rename), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump({"keys": [k.entry() for k in keys]}, fh, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_to_file(path: Path, key: ApiKey) -> None:
    """Append a key's entry to the keys file."""
    existing = read_file(path)
    if any(k.name == key.name for k in existing):
        raise ValueError(f"a key named {key.name!r} already exists in {path}")
    _write(path, [*existing, key])


def remove_from_file(path: Path, name_or_id: str) -> ApiKey:
    """Take the key with this name or id out of the keys file; the removed entry, or ValueError."""
    existing = read_file(path)
    gone = [k for k in existing if name_or_id in (k.name, k.id)]
    if not gone:
        raise ValueError(f"no key named or with id {name_or_id!r} in {path}")
    _write(path, [k for k in existing if k not in gone])
    return gone[0]
