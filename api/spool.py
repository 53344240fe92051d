"""Who owns an upload spool file, so that the files of a killed API are removed without robbing a live one.

Each API process has a random owner token. For its whole life it holds an exclusive `flock` on
`<spool>/owner-<token>.lock` (the kernel drops it when the process dies, even by SIGKILL), and it names its spool
files `upload-<token>-*.part`. A sweep, at start-up and every `SWEEP_EVERY_S`, removes every upload file whose owner
is gone (its lock file is missing, or can be locked), then the owner's lock file. Several API processes may share one
spool folder (one host, or a shared volume whose file system supports `flock`): none ever deletes another's live
upload. Files named the old way (`upload-*.part`, no token) are removed once they are `UNOWNED_STALE_S` old.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import time
from pathlib import Path

log = logging.getLogger("thumbify.api")

TOKEN = secrets.token_hex(8)
UPLOAD_PREFIX = f"upload-{TOKEN}-"  # for `tempfile.mkstemp(prefix=...)`
SWEEP_EVERY_S = 60.0
UNOWNED_STALE_S = 3600.0

_held: dict[Path, int] = {}  # spool folder -> the fd of this process's lock there


def own(folder: Path) -> None:
    """Take this process's owner lock in `folder` (once per process). The lock file appears under its final name
    already locked (created under a temporary name, then renamed), so no sweep can see it unlocked."""
    folder = folder.resolve()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".owner-{TOKEN}.new"
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.rename(temporary, folder / f"owner-{TOKEN}.lock")
    _held[folder] = fd


def sweep(folder: Path) -> int:
    """Remove the upload files (and lock files) of owners that are gone; how many upload files were removed."""
    folder = folder.resolve()
    alive: dict[str, bool] = {TOKEN: True}
    removed = 0
    for path in folder.glob("upload-*.part"):
        token = _token(path.name)
        if token is None:
            if _age(path) < UNOWNED_STALE_S:
                continue
        elif token not in alive:
            alive[token] = _locked(folder / f"owner-{token}.lock")
        if token is not None and alive[token]:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    for lock in folder.glob("owner-*.lock"):
        token = lock.name[len("owner-") : -len(".lock")]
        if not (alive[token] if token in alive else _locked(lock)):
            lock.unlink(missing_ok=True)
    if removed:
        log.info("removed %d upload spool file(s) left by API processes that are gone", removed)
    return removed


def _token(name: str) -> str | None:
    """The owner token in `upload-<token>-<random>.part`; None for a name without one."""
    middle = name[len("upload-") : -len(".part")]
    token, sep, _ = middle.partition("-")
    return token if sep else None


def _locked(lock: Path) -> bool:
    """Whether a live process holds `lock` (False when the file does not exist: its owner is gone)."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
