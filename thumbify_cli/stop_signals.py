"""SIGTERM and SIGINT for `thumbify serve`, caught from the command's first line: imported before anything heavy, so
that no moment of start-up is left to Python's default handler (whose KeyboardInterrupt is dropped, printed as
"Exception ignored", where it lands inside a finalizer)."""

from __future__ import annotations

import signal
from collections.abc import Callable


class StopSignals:
    """Each signal is recorded, `on_stop` is called (the API's server told to exit), and SystemExit is raised where
    it lands, so a blocking start-up step ends at once and the caller's `finally` stops what has started. The
    record outlives an exception that is dropped: `check()` raises it again at the next step."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.on_stop: Callable[[], None] = lambda: None

    def install(self) -> StopSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        return self

    def _on_signal(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        self.on_stop()
        raise SystemExit(128 + signum)

    def check(self) -> None:
        if self.received:
            raise SystemExit(128 + self.received[0])
