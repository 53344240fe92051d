"""Upload bodies written by hand, for what an HTTP client library would not send (odd parts, missing files)."""

from __future__ import annotations

import http.client
import socket
from urllib.parse import urlsplit

BOUNDARY = "thumbify-test-boundary-7d1f"


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body from (name, filename or None, data) parts, and its Content-Type."""
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: image/jpeg\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={BOUNDARY}"


class StalledUpload:
    """A raw-socket POST /v1/jobs that sends its headers and the first `sent` bytes of the file, then nothing until
    `finish()` sends the rest (or `close()` walks away): what no HTTP client library lets a test do on purpose."""

    def __init__(self, base_url: str, data: bytes, headers: dict[str, str] | None = None, sent: int = 100) -> None:
        body, content_type = multipart([("file", "stalled.jpg", data)])
        head = "".join(f"{k}: {v}\r\n" for k, v in {**(headers or {}), "Content-Type": content_type}.items())
        cut = body.index(data) + sent
        self._rest = body[cut:]
        parts = urlsplit(base_url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.sendall(
            f"POST /v1/jobs HTTP/1.1\r\nHost: thumbify\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode()
            + body[:cut]
        )

    def answer(self) -> tuple[int, dict[str, str], bytes] | None:
        """The server's answer, or None if it closed the connection without one."""
        response = http.client.HTTPResponse(self.sock, method="POST")
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()

    def finish(self) -> tuple[int, dict[str, str], bytes] | None:
        """Send the rest of the body; the answer, or None where the server is gone."""
        try:
            self.sock.sendall(self._rest)
        except OSError:
            return None
        return self.answer()

    def close(self) -> None:
        self.sock.close()
