"""`thumbify serve` run as a user runs it, in a session of its own, with the processes below it noted so that a
test can prove none survives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.processes import descendants, still_running
from support.service import ROOT, clean_env, log_tail, wait_ready

THUMBIFY = Path(sys.executable).parent / "thumbify"


class Serve:
    """One `thumbify serve` run, in its own session (so Ctrl-C can be sent to its process group as a terminal does)."""

    def __init__(
        self,
        tmp: Path,
        data_dir: Path,
        port: int,
        run: int,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`command`: how to run `thumbify` (default: the installed entry point, from `tmp`; anything else runs
        from the repository root). `env`: default nothing preset, so the embedded Redis is the default."""
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = tmp / f"serve-{run}.log"
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [*(command or [str(THUMBIFY)]), "serve", "--port", str(port), "--data-dir", str(data_dir)],
                cwd=tmp if command is None else ROOT,
                env=env or clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.children: dict[int, tuple[str, str]] = {}
        self.client = httpx.Client(base_url=self.base_url, timeout=60.0)

    def ready(self) -> None:
        wait_ready(self.base_url, [self.proc], [self.log], timeout=90)
        # The worker may still be importing; wait until both children are there.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.children = descendants(self.proc.pid)
            cmds = " | ".join(c for _, c in self.children.values())
            if "redis-server" in cmds and "gpu_worker" in cmds:
                return
            time.sleep(0.1)
        raise AssertionError(f"serve did not start redis-server and a worker: {self.children}\n{log_tail(self.log)}")

    def stop(self, sig: int, group: bool) -> int:
        """Send `sig` (to the whole process group, like Ctrl-C in a terminal, or to serve alone, like `kill`)."""
        self.children.update(descendants(self.proc.pid))
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        finally:
            self.client.close()

    def cleanup(self) -> None:
        """Whatever the test's outcome: nothing of this run may survive it."""
        self.client.close()
        if self.proc.poll() is None:
            self.children.update(descendants(self.proc.pid))
            self.proc.kill()
            self.proc.wait()
        for pid in still_running(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
