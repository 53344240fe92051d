"""A webhook receiver for tests: a real HTTP server on loopback (allow-listed by the service under test)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP server on loopback that answers each POST with the next of `answers` (a status, or a status and
    headers; the last repeats), and keeps what it received. With `hold` set, it answers nothing until that is set."""

    def __init__(self, answers: list[int | tuple[int, dict[str, str]]], hold: threading.Event | None = None) -> None:
        self.answers, self.hold = list(answers), hold
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append((dict(self.headers), body))
                receiver.arrived.set()
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                answer = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the sender is gone (killed)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
