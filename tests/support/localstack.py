"""An S3 server that checks presigned URLs, for the direct-upload tests: LocalStack's S3 (in .venv-localstack, made
by scripts/get-localstack.sh, as it needs Python 3.13+), on a free loopback port, nothing persisted. Unlike
`rclone serve s3` (s3server.py) it refuses a presigned PUT whose signature, expiry or signed Content-Length does not
match, and a presigned POST outside its policy (content-length-range, key, expiry); it does not check a POST form's
signature itself."""

from __future__ import annotations

import subprocess
import time

from support.s3server import S3Server
from support.service import ROOT, clean_env, log_tail

PYTHON = ROOT / ".venv-localstack" / "bin" / "python"
ACCESS_KEY = "test"  # LocalStack's account "000000000000"; it checks signatures against this pair
SECRET_KEY = "test"
BUCKET = "thumbify-direct"


def missing_reason() -> str | None:
    """Why LocalStack cannot be started here, or None when it can."""
    if not PYTHON.exists():
        venv = PYTHON.parent.parent.name
        return f"LocalStack is not installed ({venv} missing): run scripts/get-localstack.sh (needs Python 3.13+)"
    return None


class LocalStackS3(S3Server):
    """`root`: LocalStack's own folder (its state and the objects' files); `log`: its output."""

    bucket, access_key, secret_key = BUCKET, ACCESS_KEY, SECRET_KEY

    def start(self, timeout: float = 90.0) -> LocalStackS3:
        host = f"127.0.0.1:{self.port}"
        env = clean_env()
        env.update(
            GATEWAY_LISTEN=host,
            LOCALSTACK_HOST=host,
            SERVICES="s3",
            S3_SKIP_SIGNATURE_VALIDATION="0",  # the point of this server: presigned URLs are checked
            SKIP_SSL_CERT_DOWNLOAD="1",
            PERSISTENCE="0",
            FILESYSTEM_ROOT=str(self.root),
            TMPDIR=str(self.root),  # where it keeps objects over 512 KiB: in the test's folder, removed with it
            DISABLE_EVENTS="1",
        )
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(PYTHON), "-m", "localstack.runtime.main"],
                cwd=self.root,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"LocalStack exited with {self.proc.returncode}:\n{log_tail(self.log)}")
            if "Ready." in self.log.read_text(errors="replace"):
                self.client().create_bucket(Bucket=self.bucket)
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"LocalStack did not say Ready. within {timeout}s:\n{log_tail(self.log)}")

    def objects(self, prefix: str = "") -> set[str]:
        """Keys in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {obj["Key"] for page in pages for obj in page.get("Contents", [])}

    def open_multipart_uploads(self, prefix: str = "") -> list[str]:
        """Keys of multipart uploads begun under `prefix` and neither completed nor aborted."""
        answer = self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return [u["Key"] for u in answer.get("Uploads", [])]
