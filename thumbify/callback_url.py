"""Which callback URLs a webhook may be POSTed to (SSRF guard).

A callback URL comes from a client, and the server POSTs to it from inside the cluster: without a check it could
reach Redis, the metadata service (169.254.169.254) or any private host. So the URL must be https (http only where
`callback_allow_http`), carry no credentials, and every address its host resolves to must be public. The check runs
at submit (a clear 422) and again right before each delivery, because a name can resolve elsewhere later (DNS
rebinding). `callback_allow_hosts` names hosts (or host:port) exempt from the address check, such as a receiver
inside the cluster or the tests' loopback server.
"""

from __future__ import annotations

import ipaddress
import socket
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


def check(url: str, settings: Settings) -> SplitResult:
    """The URL's parts if a webhook may be POSTed there now; InvalidCallbackUrl says why not.

    Blocking (it resolves the host): call it off the event loop."""
    parts = parse(url, settings)
    if _allow_listed(parts, settings):
        return parts
    for address in resolve(parts.hostname or "", _port(parts)):
        if forbidden(address):
            raise InvalidCallbackUrl(
                f"callback_url host {parts.hostname!r} resolves to {address}, an internal address; "
                "name it in THUMBIFY_CALLBACK_ALLOW_HOSTS to allow it"
            )
    return parts
