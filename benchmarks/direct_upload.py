"""Uploads straight to the bucket against uploads through the API, on the all-in-one server with S3 storage (issue 15).

    python -m benchmarks.direct_upload [--corpus DIR] [--photos 24] [--concurrency 4] [--tiff-side 8192]
                                       [--tiff-repeat 2] [--rounds 3] [--localstack-python PATH]
                                       [--endpoint URL [--bucket B --access-key K --secret-key S --region R]]
                                       [--env THUMBIFY_X=Y ...] [--quick]

One `thumbify serve` (serve's default layout: API, embedded Redis, one worker with a render process per core) storing
in one bucket, and two ways of sending it the same files, interleaved (a warm-up round, then `--rounds`; the order
of the two rotates each round):

- `api`: the file in a multipart POST /v1/jobs with `Prefer: wait=30` (the API receives, hashes and spools the
  bytes, then writes them to the bucket);
- `direct`: POST /v1/uploads (`method` PUT; `parts` = ceil(size / 64 MiB) above 64 MiB, as the client does), the
  bytes PUT to the presigned URL(s) on the bucket, then POST /v1/uploads/{id}/complete with `Prefer: wait=30` (the
  API only HEADs the object and reads its first 64 KiB).

Either way the job is waited for until `done` (GET ?wait=30 if the Prefer wait ran out), then deleted outside the
timing. Every job: fit in 256×256, JPEG q80. Two corpora (benchmarks.corpus): `--photos` 12 MP JPEGs (3–4 MB),
`--concurrency` in flight; and one 8192×8192 uncompressed RGB TIFF of noise (201,327,326 bytes: under the default
`THUMBIFY_MAX_UPLOAD_BYTES` of 200 MiB = 209,715,200), `--tiff-repeat` times one after the other per pass. The
client is this process: one keep-alive connection to the API per lane and one to the bucket, every body held in
memory before the pass (sent from memory in both modes).

The S3 server: LocalStack's S3 (it checks presigned URLs; `rclone serve s3`, the tests' other server, does not take
them), started from `--localstack-python` (default: .venv-localstack/bin/python, made by scripts/get-localstack.sh)
on a free port, nothing persisted; or `--endpoint` for one already running (its CPU is then not measured).

Reported per corpus and mode: images/s (median over rounds; direct × api as the median of per-round ratios), CPU ms
per image of the API process, the worker, its render processes, Redis, the S3 server and the client (/proc/PID/stat
before and after each pass), and for the TIFF the API process's peak VmRSS and RssAnon above their value when the
pass began (sampled every 20 ms). Writes benchmarks/results/direct_upload.json and direct_upload.png.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks import corpus as corpus_mod
from benchmarks.common import (
    DEFAULT_CORPUS,
    ROOT,
    MemorySampler,
    ThumbifyServer,
    bar_plot,
    mib,
    process_tree,
    stop_process,
    summary,
    table,
    write_json,
)
from benchmarks.e2e import OPTIONS, Corpus, Mode, Thumbify, http_pass, measure, multipart, ratio, request
from thumbify.redis_conn import free_port

PART = 64 * 1024 * 1024  # the client's part size: multipart above it (contract of issue 15)
LOCALSTACK_VENV = ROOT / ".venv-localstack"
CLIENT = "client (this process)"


@dataclass
class Bucket:
    """Where the server stores. As given (`--endpoint`): an S3 server someone runs already, its CPU not measured."""

    url: str
    bucket: str = "thumbify-bench"
    access_key: str = "test"  # LocalStack's account: it checks signatures against this pair
    secret_key: str = "test"
    region: str = "us-east-1"

    def pids(self) -> list[int]:
        return []

    def stop(self) -> None:
        pass

    def ensure(self) -> Bucket:
        """The bucket made if it is missing."""
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        try:
            client.head_bucket(Bucket=self.bucket)
        except ClientError:
            client.create_bucket(Bucket=self.bucket)
        return self

    def env(self) -> dict[str, str]:
        """The server's THUMBIFY_* storage settings."""
        return {
            "THUMBIFY_STORAGE": "s3",
            "THUMBIFY_S3_BUCKET": self.bucket,
            "THUMBIFY_S3_PREFIX": "bench/",
            "THUMBIFY_S3_ENDPOINT_URL": self.url,
            "THUMBIFY_S3_REGION": self.region,
            "THUMBIFY_S3_ACCESS_KEY_ID": self.access_key,
            "THUMBIFY_S3_SECRET_ACCESS_KEY": self.secret_key,
            "THUMBIFY_S3_ADDRESSING_STYLE": "path",
        }


class LocalStack(Bucket):
    """LocalStack's S3 on a free loopback port, its state and spooled objects in a temporary folder."""

    def __init__(self, python: Path) -> None:
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.python = python
        self.root = Path(tempfile.mkdtemp(prefix="thumbify-bench-localstack-"))
        self.log = self.root / "localstack.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> LocalStack:
        host = f"127.0.0.1:{self.port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "THUMBIFY_"))},
            "GATEWAY_LISTEN": host,
            "LOCALSTACK_HOST": host,
            "SERVICES": "s3",
            "S3_SKIP_SIGNATURE_VALIDATION": "0",  # presigned URLs are checked, as a real bucket does
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "PERSISTENCE": "0",
            "FILESYSTEM_ROOT": str(self.root),
            "TMPDIR": str(self.root),  # where it spools objects over 512 KiB
            "DISABLE_EVENTS": "1",
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", "localstack.runtime.main"],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while "Ready." not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"LocalStack did not start:\n{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        return self

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.root, ignore_errors=True)


class Uploads(Thumbify):
    """Both ways into one server: `one` (e2e's multipart POST /v1/jobs) and `direct` (presigned PUTs, complete)."""

    def __init__(self, server: ThumbifyServer, s3: Bucket, files: dict[Path, bytes]) -> None:
        super().__init__(server.url, server=server)
        self.s3, self.files = s3, files
        parts = urlsplit(s3.url)
        self.s3_address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lane = threading.local()
        self._s3_conns: list[http.client.HTTPConnection] = []

    def _bucket(self) -> http.client.HTTPConnection:
        """This lane's keep-alive connection to the bucket (closed after the pass, in `cleanup`)."""
        conn = getattr(self._lane, "conn", None)
        if conn is None:
            conn = self._lane.conn = http.client.HTTPConnection(*self.s3_address, timeout=300)
            self._s3_conns.append(conn)
        return conn

    def _put(self, url: str, body, headers: dict[str, str]) -> str:
        """A presigned PUT of `body` (its exact length is signed): the ETag the bucket answers."""
        parts = urlsplit(url)
        status, answer, data = request(self._bucket(), "PUT", f"{parts.path}?{parts.query}", body, headers)
        if status != 200:
            raise RuntimeError(f"PUT to the bucket: {status} {data[:300]!r}")
        return answer.get("ETag", "")

    def direct(self, conn: http.client.HTTPConnection, path: Path) -> None:
        data = memoryview(self.files[path])
        parts = math.ceil(len(data) / PART) if len(data) > PART else 1
        ask = {"filename": path.name, "size": len(data), "method": "PUT", "parts": parts, "options": OPTIONS}
        json_type = {"Content-Type": "application/json"}
        ticket = json.loads(self.post(conn, "/v1/uploads", json.dumps(ask).encode(), json_type, path.name))
        done: dict = {}
        if parts == 1:
            self._put(ticket["url"], data, ticket.get("headers") or {})
        else:
            size, etags = ticket["part_size"], []
            for part in ticket["parts"]:
                start = (part["number"] - 1) * size
                etag = self._put(part["url"], data[start : start + part["size"]], {})
                etags.append({"number": part["number"], "etag": etag})
            done = {"parts": etags}
        headers = json_type | {"Prefer": "wait=30"}
        answer = self.post(conn, ticket["complete_url"], json.dumps(done).encode(), headers, path.name)
        self.finish(conn, path.name, answer)

    def cleanup(self) -> None:
        super().cleanup()
        while self._s3_conns:
            self._s3_conns.pop().close()

    def modes(self, lanes: dict[str, int], peaks: dict[str, list[dict]]) -> list[Mode]:
        """`api` and `direct`, each with `lanes[corpus]` requests in flight; the TIFF passes sample the API's memory
        into `peaks[mode]`."""

        def runner(name: str, one):
            def run(corpus: Corpus) -> float:
                each = lambda conn, path: one(conn, path, corpus)  # noqa: E731
                work = lambda: http_pass(corpus.items, [self.address], lanes[corpus.name], each)  # noqa: E731
                if corpus.name != "tiff":
                    return work()
                with MemorySampler(self.server.proc.pid, keys=("VmRSS", "RssAnon")) as sampler:
                    elapsed = work()
                peaks[name].append({k: sampler.peak[k] - sampler.first.get(k, 0) for k in sampler.keys})
                return elapsed

            return Mode(name, "", run, self.processes, self.cleanup)

        api = runner("api", lambda conn, path, corpus: self.one(conn, path, corpus, prefer_wait=True))
        return [api, runner("direct", lambda conn, path, _: self.direct(conn, path))]

    def processes(self) -> dict[int, str]:
        return super().processes() | dict.fromkeys(self.s3.pids(), "s3 server")


def load_corpora(args) -> list[Corpus]:
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    photos = corpus_mod.make_photos(args.corpus, args.photos, log=log)
    tiff = corpus_mod.make_tiff(args.corpus, args.tiff_side, log=log)
    corpora = [Corpus("12mp", args.corpus, photos), Corpus("tiff", args.corpus, [tiff], repeat=args.tiff_repeat)]
    for c in corpora:
        c.uploads = {p: multipart(p) for p in c.files}
    return corpora


ROLES = {"api": "api (serve process)", "worker": "worker", "render": "render processes", "redis": "redis"}


def corpus_results(tallies: dict, peaks: dict[str, list[dict]], rounds: int) -> dict:
    out = {}
    for name, t in tallies.items():
        per_image = {role: s / t.images * 1000 for role, s in t.cpu_s.items()}
        out[name] = {
            "per_s": summary(t.rates),
            "rates": t.rates,
            "ratio_to_api": ratio(t.rates, tallies["api"].rates),
            "cpu_ms_per_image": per_image,
            "server_cpu_ms_per_image": sum(v for k, v in per_image.items() if k != CLIENT),
        }
        counted = peaks.get(name, [])[-rounds:]  # the warm-up's pass is the first
        if counted:
            out[name]["api_peak_growth_mib"] = {k: mib(max(p[k] for p in counted)) for k in counted[0]}
    return out


def report(results: dict, corpora: list[Corpus], lanes: dict[str, int], rounds: int, tiff_bytes: int) -> None:
    rows = []
    for c in corpora:
        for mode, r in results[c.name].items():
            cpu = r["cpu_ms_per_image"]
            rss = r.get("api_peak_growth_mib", {})
            rows.append(
                (
                    f"{c.name} {mode}",
                    r["per_s"]["median"],
                    f"{r['per_s']['min']:.3g}–{r['per_s']['max']:.3g}",
                    r["ratio_to_api"],
                    *(cpu.get(ROLES[k], 0.0) for k in ("api", "worker", "render", "redis")),
                    cpu.get("s3 server"),
                    cpu.get(CLIENT, 0.0),
                    rss.get("VmRSS"),
                )
            )
    table(
        f"Direct to the bucket vs through the API: {len(corpora[0].files)} × 12 MP JPEG (c{lanes['12mp']}), "
        f"{tiff_bytes / 1e6:.0f} MB TIFF × {corpora[1].repeat} per pass (c{lanes['tiff']}) → fit 256 JPEG q80; "
        f"median of {rounds} rounds",
        [
            "corpus mode",
            "images/s",
            "range",
            "× api",
            "API",
            "worker",
            "render",
            "Redis",
            "S3 server",
            "client",
            "API peak RSS +MiB",
        ],  # fmt: skip
        rows,
        note="CPU in ms per image by process, from /proc; × api: median of per-round ratios; "
        "API peak RSS: VmRSS above its value at the pass's start.",
    )


def chart(results: dict, rounds: int):
    labels, values, notes = [], [], []
    for corpus, modes in results.items():
        for mode, r in modes.items():
            labels.append(f"{corpus} {mode}")
            values.append(r["cpu_ms_per_image"].get(ROLES["api"], 0.0))
            notes.append(f"ms ({r['per_s']['median']:.3g} images/s)")
    return bar_plot(
        "direct_upload",
        f"API process CPU per image over {rounds} rounds (images/s: median), direct to the bucket vs through the API",
        labels,
        values,
        "API process CPU ms per image (log)",
        notes,
        log=True,
    )


def s3_server(args) -> Bucket:
    if args.endpoint:
        return Bucket(args.endpoint.rstrip("/"), args.bucket, args.access_key, args.secret_key, args.region)
    return LocalStack(args.localstack_python).start()


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.direct_upload")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--photos", type=int, default=24, help="12 MP JPEGs per pass (default 24)")
    parser.add_argument("--concurrency", type=int, default=4, help="photos in flight (default 4)")
    parser.add_argument("--tiff-side", type=int, default=8192, help="the TIFF's side (default 8192: 201 MB)")
    parser.add_argument("--tiff-repeat", type=int, default=2, help="TIFF uploads per pass, one at a time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--localstack-python", type=Path, help="a Python with LocalStack (.venv-localstack's)")
    parser.add_argument("--endpoint", help="an S3 server already running, instead of starting LocalStack")
    parser.add_argument("--bucket", default="thumbify-bench", help="with --endpoint (made if missing)")
    parser.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID", "test"))
    parser.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    parser.add_argument("--env", action="append", default=[], metavar="THUMBIFY_X=Y", help="for `thumbify serve`")
    parser.add_argument("--quick", action="store_true", help="4 photos, the TIFF once per pass, 1 round")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.tiff_repeat, args.rounds = 4, 1, 1
    args.localstack_python = args.localstack_python or LOCALSTACK_VENV / "bin" / "python"
    if not args.endpoint and not args.localstack_python.exists():
        parser.error(
            f"no LocalStack at {args.localstack_python}: run scripts/get-localstack.sh (makes .venv-localstack; needs "
            "Python 3.13+), or pass --localstack-python PATH (a Python with `localstack` installed), or --endpoint "
            "URL of a running S3 server"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    corpora = load_corpora(args)
    files = {p: p.read_bytes() for c in corpora for p in c.files}
    lanes = {"12mp": args.concurrency, "tiff": 1}
    env = dict(item.split("=", 1) for item in args.env)
    load = {"before": os.getloadavg()}
    running: list = []
    peaks: dict[str, list[dict]] = {"api": [], "direct": []}
    try:
        s3 = s3_server(args)
        running.append(s3)
        server = ThumbifyServer(s3.ensure().env() | env, workers=None)
        running.append(server)
        uploads = Uploads(server.start(), s3, files)
        modes = uploads.modes(lanes, peaks)
        tallies = measure(modes, corpora, args.rounds)
    finally:
        for thing in reversed(running):
            thing.stop()
    load["after"] = os.getloadavg()

    results = {c.name: corpus_results(tallies[c.name], peaks if c.name == "tiff" else {}, args.rounds) for c in corpora}
    tiff_bytes = corpora[1].files[0].stat().st_size
    report(results, corpora, lanes, args.rounds, tiff_bytes)
    png = chart(results, args.rounds)
    direct = {c.name: results[c.name]["direct"]["ratio_to_api"] for c in corpora}
    path = write_json(
        "direct_upload",
        {
            "corpora": {c.name: {"files": [str(p) for p in c.files], "repeat": c.repeat} for c in corpora},
            "tiff_bytes": tiff_bytes,
            "concurrency": lanes,
            "rounds": args.rounds,
            "s3": "endpoint " + args.endpoint if args.endpoint else "localstack",
            "env": env,
            "loadavg": load,
            "results": results,
            "direct_to_api_images_per_s": direct,
            "chart": str(png) if png else None,
        },
        args.out,
    )
    print("direct × api, images/s: " + ", ".join(f"{k} {v:.2f}" for k, v in direct.items()))
    print(f"load average (1, 5, 15 min): {load['before']} before, {load['after']} after, on {os.cpu_count()} cores")
    print(f"wrote {path}" + (f" and {png}" if png else "; no chart: matplotlib is missing (pip install -e '.[bench]')"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
