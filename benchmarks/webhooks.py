"""Completion webhooks under load: N jobs with a callback through `thumbify serve`, every delivery received.

    python -m benchmarks.webhooks [--jobs 1000] [--concurrency 32] [--size 320x240]

A receiver on loopback (a threading HTTP server in this process, allow-listed for the server) verifies each
delivery's Standard Webhooks signature and notes when it arrived; the client uploads `--jobs` small photo-like
JPEGs, `--concurrency` at a time, each with `callback_url`. Reported: whether every job was delivered exactly once
(duplicates by `webhook-id` counted), how long the whole took, and p50/p99 from each job's end (`updated_at` of the
job in the payload, the worker's clock, the same machine) to its delivery. Writes benchmarks/results/webhooks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from benchmarks.common import ThumbifyServer, percentile, table, write_json

SECRET = "whsec_" + base64.b64encode(b"thumbify-webhook-bench-secret-32").decode()


class Receiver:
    """Counts deliveries by webhook-id and records each one's delay after the job ended."""

    def __init__(self) -> None:
        self.seen: collections.Counter[str] = collections.Counter()
        self.delays_ms: list[float] = []
        self.bad = 0
        self.lock = threading.Lock()
        hook, receiver = Webhook(SECRET), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    event = hook.verify(body, dict(self.headers))
                except Exception:  # noqa: BLE001 - any refusal counts as a bad delivery
                    with receiver.lock:
                        receiver.bad += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                ended = datetime.fromisoformat(event["data"]["updated_at"].replace("Z", "+00:00")).timestamp()
                with receiver.lock:
                    receiver.seen[self.headers["webhook-id"]] += 1
                    receiver.delays_ms.append((arrived - ended) * 1000)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # The default listen backlog, 5, drops connections when 16 deliveries come at once: 1 s SYN retries.
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


async def submit_all(url: str, bodies: list[bytes], concurrency: int, callback: str) -> None:
    todo: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        todo.put_nowait(body)

    async def lane(client: httpx.AsyncClient) -> None:
        while not todo.empty():
            body = todo.get_nowait()
            while True:
                r = await client.post(
                    "/v1/jobs", files={"file": ("p.jpg", body, "image/jpeg")}, data={"callback_url": callback}
                )
                if r.status_code != 503:
                    break
                await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            r.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(*(lane(client) for _ in range(concurrency)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    from benchmarks.corpus import photo

    width, height = (int(v) for v in args.size.split("x"))
    bodies = [photo(9000 + i % 50, width, height).jpegsave_buffer(Q=85) for i in range(args.jobs)]
    receiver = Receiver()
    env = {
        "THUMBIFY_CALLBACK_ALLOW_HTTP": "true",
        "THUMBIFY_CALLBACK_ALLOW_HOSTS": '["127.0.0.1"]',
        "THUMBIFY_WEBHOOK_SECRET": SECRET,
        "THUMBIFY_MAX_QUEUE_DEPTH": "0",
    }
    with ThumbifyServer(env=env, workers=None) as server:
        started = time.perf_counter()
        asyncio.run(submit_all(server.url, bodies, args.concurrency, receiver.url))
        submitted = time.perf_counter() - started
        deadline = time.monotonic() + args.timeout
        while len(receiver.seen) < args.jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        total = time.perf_counter() - started
        time.sleep(2)  # a late duplicate would arrive now
    delivered, duplicates = len(receiver.seen), sum(n - 1 for n in receiver.seen.values())
    delays = sorted(receiver.delays_ms)
    rows = [
        ["jobs submitted / delivered", f"{args.jobs} / {delivered}"],
        ["duplicate deliveries (same webhook-id)", duplicates],
        ["bad signatures", receiver.bad],
        ["all submitted after (s)", submitted],
        ["all delivered after (s)", total],
        ["job end → delivery p50 (ms)", percentile(delays, 50)],
        ["job end → delivery p99 (ms)", percentile(delays, 99)],
        ["job end → delivery max (ms)", delays[-1] if delays else float("nan")],
    ]
    table(f"Webhooks: {args.jobs} jobs of {args.size}, {args.concurrency} uploads in flight", ["", ""], rows)
    result = {
        "jobs": args.jobs,
        "delivered": delivered,
        "duplicates": duplicates,
        "bad_signatures": receiver.bad,
        "submitted_s": submitted,
        "delivered_s": total,
        "delay_ms": {"p50": percentile(delays, 50), "p99": percentile(delays, 99), "all": delays},
    }
    print(f"wrote {write_json('webhooks', result, args.out)}")
    if delivered < args.jobs or receiver.bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
