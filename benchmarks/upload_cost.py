"""What receiving one upload costs the API, piece by piece, in this process (no server): CPU ms per upload.

    python -m benchmarks.upload_cost [--size 4000x3000] [--count 20]

One photo-like JPEG (benchmarks.corpus) in a multipart body, fed to `api.upload`'s receiver in 64 KiB pieces (as
uvicorn hands them over): parsing and hashing alone (the SHA-256 also alone), then with the spool file written as the
API writes it, then the header read (`thumbify.probe.probe`) from the spooled file and from bytes in memory.
The HTTP side (uvicorn, the framework, the socket) is `job_cost`'s floor: an upload of the same size refused once read.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from python_multipart.multipart import MultipartParser

from api.upload import _Receiver
from benchmarks.common import table
from benchmarks.corpus import photo
from thumbify.probe import probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--count", type=int, default=20)
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    image = photo(11, width, height).jpegsave_buffer(Q=90, subsample_mode="on")
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n\r\n'.encode()
    body = head + image + f"\r\n--{boundary}--\r\n".encode()
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    spool = Path(tempfile.mkdtemp(prefix="thumbify-upload-cost-"))

    def receive(spill: bool) -> Path | None:
        rx = _Receiver(spool, 10**10)
        parser = MultipartParser(boundary.encode(), {n: getattr(rx, n) for n in dir(rx) if n.startswith("on_")})
        for piece in pieces:
            parser.write(piece)
            if spill and rx.pending_bytes >= 1 << 20:
                rx.spill()
        parser.finalize()
        if not spill:
            return None
        rx.spill()
        rx.fh.close()
        return rx.path

    def cost(fn) -> float:
        fn()
        start = time.process_time()
        for _ in range(args.count):
            fn()
        return (time.process_time() - start) / args.count * 1000

    try:
        spooled = receive(True)
        rows = [
            ["SHA-256 of the body alone", cost(lambda: hashlib.sha256(image).digest())],
            ["parse + hash (the body held in memory)", cost(lambda: receive(False))],
            ["parse + hash + spool file written", cost(lambda: receive(True))],
            ["header read from the spooled file", cost(lambda: probe(spooled, 10**10))],
            ["header read from bytes in memory", cost(lambda: probe(image, 10**10))],
        ]
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    table(f"Receiving a {args.size} JPEG upload ({len(body) / 1e6:.2f} MB): CPU ms", ["step", "CPU ms"], rows)


if __name__ == "__main__":
    main()
