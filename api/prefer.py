"""The `Prefer` request header (RFC 7240): a client that sends `Prefer: wait=10` with an upload gets the finished
job in the same answer when it ends within that many seconds, instead of polling for it."""

from __future__ import annotations

HEADER = "Prefer"


def wait_seconds(header: str | None, cap: float) -> float:
    """The `wait` preference in seconds, at most `cap`; 0 when there is none. A malformed preference is ignored, as
    RFC 7240 asks of a preference a server cannot honour."""
    for preference in (header or "").split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            if value.isdigit():
                return min(float(value), cap)
    return 0.0
