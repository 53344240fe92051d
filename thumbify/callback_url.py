"""Which callback URLs a webhook may be POSTed to (SSRF guard).

A callback URL comes from a client, and the server POSTs to it from inside the cluster: without a check it could
reach Redis, the metadata service (169.254.169.254) or any private host. So the URL must be https (http only where
`callback_allow_http`), carry no credentials, and every address its host resolves to must be public. The check runs
at submit (a clear 422) and again right before each delivery, because a name can resolve elsewhere later (DNS
rebinding); the delivery then connects to the address it checked (`target`). `callback_allow_hosts` names hosts (or
host:port) exempt from the address check, such as a receiver inside the cluster or the tests' loopback server.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from thumbify.errors import InvalidCallbackUrl
from thumbify.settings import Settings

MAX_LENGTH = 2048


def parse(url: str, settings: Settings) -> SplitResult:
    """The URL split into parts, or InvalidCallbackUrl for what no delivery should ever try (no DNS here)."""
    if len(url) > MAX_LENGTH:
        raise InvalidCallbackUrl(f"callback_url is longer than {MAX_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidCallbackUrl(f"callback_url is not a URL: {exc}") from None
    schemes = ("https", "http") if settings.callback_allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidCallbackUrl(f"callback_url must use {' or '.join(schemes)}, not {parts.scheme or 'nothing'!r}")
    if not parts.hostname:
        raise InvalidCallbackUrl("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidCallbackUrl("callback_url must not carry credentials")
    if port == 0:
        raise InvalidCallbackUrl("callback_url has port 0")
    return parts


def _port(parts: SplitResult) -> int:
    """The port a delivery connects to: the URL's own, else its scheme's."""
    return parts.port or (443 if parts.scheme == "https" else 80)


def _allow_listed(parts: SplitResult, settings: Settings) -> bool:
    host, port = parts.hostname or "", _port(parts)
    names = {host, f"{host}:{port}", f"[{host}]:{port}"}
    return any(entry.lower() in names for entry in settings.callback_allow_hosts)


def forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether an address is internal: loopback, link-local, private, multicast, reserved or unspecified."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast or address.is_reserved


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to now (a literal address is its own answer)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidCallbackUrl(f"callback_url host {host!r} does not resolve: {exc}") from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def _public_addresses(parts: SplitResult) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    addresses = resolve(parts.hostname or "", _port(parts))
    for address in addresses:
        if forbidden(address):
            raise InvalidCallbackUrl(
                f"callback_url host {parts.hostname!r} resolves to {address}, an internal address; "
                "name it in THUMBIFY_CALLBACK_ALLOW_HOSTS to allow it"
            )
    return addresses


def check(url: str, settings: Settings) -> SplitResult:
    """The URL's parts if a webhook may be POSTed there now; InvalidCallbackUrl says why not.

    Blocking (it resolves the host): call it off the event loop."""
    parts = parse(url, settings)
    if not _allow_listed(parts, settings):
        _public_addresses(parts)
    return parts


@dataclass(frozen=True)
class Target:
    """Where a delivery connects: the address just checked, not whatever the name resolves to a moment later."""

    url: str  # the URL with its host replaced by that address (the URL itself for an allow-listed host)
    headers: dict[str, str]  # Host: the URL's own
    extensions: dict[str, str]  # httpx's `sni_hostname`: TLS sends, and verifies the certificate for, the URL's host


def target(url: str, settings: Settings) -> Target:
    """`check`, and the request pinned to the first address checked, so a name that resolves elsewhere between the
    check and the connection (DNS rebinding) cannot steer the POST to an internal address. Blocking."""
    parts = parse(url, settings)
    if _allow_listed(parts, settings):
        return Target(url, {}, {})
    address = _public_addresses(parts)[0]
    host = f"[{address}]" if address.version == 6 else str(address)
    pinned = parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl()
    sni = {"sni_hostname": parts.hostname or ""} if parts.scheme == "https" else {}
    return Target(pinned, {"host": parts.netloc}, sni)
