"""End to end over HTTP: the all-in-one server beside thumbor in its best layout and a bare pyvips pool.

    python -m benchmarks.e2e [--corpus DIR] [--photos 24] [--web 60] [--web-repeat 3] [--concurrency 2,4]
                             [--rounds 3] [--latency 20] [--workers default,2] [--headroom default,1.0]
                             [--protocols poll,prefer] [--env THUMBIFY_X=Y ...] [--url URL]
                             [--no-thumbor] [--s3] [--quick]

Two corpora: `--photos` 12 MP photo-like JPEGs and `--web` 1024×768 ones (benchmarks.corpus), every file fit inside
256×256, JPEG q80, on the same cores, interleaved (a warm-up round, then `--rounds`; the order of the tools rotates
each round). One pass of a tool = every file of the corpus once (`--web-repeat` times for the web-size corpus, so
that a pass lasts long enough to time). The client is this process: `--concurrency` threads, each with its own
keep-alive connection (http.client, as the peer harness's), a fresh connection per pass.

- thumbify: `thumbify serve` (API, embedded Redis, workers) on a free port, one server per `--workers` value
  (`default`: serve's own default, shown as plain `cN`; `2`: `w2 cN`) and `--headroom` value (`h1.0 cN`), or
  `--url`. POST /v1/jobs (multipart, the bodies built before the pass), then GET /v1/jobs/{id}?wait=30 until done
  (`--protocols poll`); or one POST with `Prefer: wait=30` (`prefer`, shown as `pw cN`).
- thumbor 7 (its own venv, THUMBOR_VENV, default /tmp/venv-thumbor): the file loader over the corpus folder, no
  storage, no result storage, quality 80; GET /unsafe/fit-in/256x256/<file>. The peer harness's layouts: one
  process (`p1`), `--processes 2` (`fork2`: forks sharing one socket, whose keep-alive connections the kernel may
  all hand to one fork), and two processes on two ports with the connections spread over them (`ports2`).
- pyvips-pool: `Image.thumbnail(file, 256, height=256)` + `jpegsave_buffer(Q=80)`, one spawned process per core,
  libvips concurrency 1, operation cache off; no HTTP at all.

Reported per corpus: images/s (median over rounds), × thumbor's best layout and × pyvips-pool (median of per-round
ratios), and CPU ms per image of each process (/proc/PID/stat before and after each pass), the client's included.
`--latency N`: N single requests one at a time on the idle server (both protocols) and thumbor (p1), p50/p99.
Writes benchmarks/results/e2e.json and e2e.png.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import mimetypes
import multiprocessing
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks import corpus as corpus_mod
from benchmarks.common import (
    CORES_DEFAULT,
    DEFAULT_CORPUS,
    ThumbifyServer,
    bar_plot,
    cpu_s,
    own_cpu_s,
    percentile,
    process_tree,
    stop_process,
    summary,
    table,
    wait_http,
    write_json,
)
from thumbify.redis_conn import free_port

SIZE, QUALITY = 256, 80
OPTIONS = {"sizes": str(SIZE), "format": "jpeg", "quality": str(QUALITY)}  # every job's, as form fields
THUMBOR_VENV = Path(os.environ.get("THUMBOR_VENV", "/tmp/venv-thumbor"))
THUMBOR_PATH = f"/unsafe/fit-in/{SIZE}x{SIZE}"
Address = tuple[str, int]


@dataclass
class Corpus:
    name: str
    root: Path  # thumbor's file loader root: files are fetched by their path under it
    files: list[Path]
    repeat: int = 1
    uploads: dict[Path, tuple[bytes, str]] = field(default_factory=dict)  # multipart body, content type

    @property
    def items(self) -> list[Path]:
        return self.files * self.repeat


@dataclass
class Mode:
    """One tool in one layout: `run(corpus)` makes every thumbnail once and returns the wall seconds."""

    tool: str
    layout: str
    run: Callable[[Corpus], float]
    processes: Callable[[], dict[int, str]]  # its processes, by role, for CPU time
    # What is undone after a pass, once its time and CPU are read (our server's jobs deleted).
    cleanup: Callable[[], None] = lambda: None

    @property
    def name(self) -> str:
        return f"{self.tool} {self.layout}".strip()


# --- HTTP -----------------------------------------------------------------------------------------------------


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.headers, response.read()


def http_pass(items: list, addresses: list[Address], lanes: int, one: Callable) -> float:
    """`one(conn, item)` for every item from `lanes` threads, lane i on its own connection to addresses[i % n]."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for item in items:
        todo.put(item)

    def lane(i: int) -> None:
        conn = http.client.HTTPConnection(*addresses[i % len(addresses)], timeout=120)
        try:
            while True:
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                one(conn, item)
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(lanes) as pool:
        list(pool.map(lane, range(lanes)))  # re-raises a lane's error
    return time.perf_counter() - started


def latencies(items: list, address: Address, count: int, one: Callable) -> list[float]:
    """Milliseconds of `count` requests one at a time (an idle pause between them)."""
    conn = http.client.HTTPConnection(*address, timeout=120)
    out = []
    for i in range(count):
        started = time.perf_counter()
        one(conn, items[i % len(items)])
        out.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    conn.close()
    return out


def multipart(path: Path) -> tuple[bytes, str]:
    """The upload body of one file with the job's options (OPTIONS: fit in 256×256, JPEG q80)."""
    boundary = uuid.uuid4().hex
    form_field = '--{}\r\nContent-Disposition: form-data; name="{}"\r\n\r\n{}\r\n'
    parts = [form_field.format(boundary, k, v).encode() for k, v in OPTIONS.items()]
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        f"Content-Type: {kind}\r\n\r\n".encode()
        + path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# --- the tools ------------------------------------------------------------------------------------------------


class Thumbify:
    """Our server end to end: upload, then wait for the job with the long-poll."""

    def __init__(
        self, url: str, name: str = "thumbify", server: ThumbifyServer | None = None, layout: str = ""
    ) -> None:
        parts = urlsplit(url)
        self.address: Address = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.name, self.server, self.layout = name, server, layout  # layout: how many workers, if not the default
        self.done: list[str] = []

    def one(self, conn: http.client.HTTPConnection, path: Path, corpus: Corpus, prefer_wait: bool = False) -> None:
        body, content_type = corpus.uploads[path]
        headers = {"Content-Type": content_type} | ({"Prefer": "wait=30"} if prefer_wait else {})
        self.finish(conn, path.name, self.post(conn, "/v1/jobs", body, headers, path.name))

    @staticmethod
    def post(conn: http.client.HTTPConnection, target: str, body, headers: dict, name: str) -> bytes:
        """POST (again after Retry-After while the API answers 503: its queue or upload slots full); the answer's
        body, which must be a 201 or 202."""
        for _ in range(100):
            status, answer, data = request(conn, "POST", target, body, headers)
            if status != 503:
                break
            time.sleep(float(answer.get("retry-after", "1")))
        if status not in (201, 202):
            raise RuntimeError(f"{name}: POST {target.split('?')[0]}: {status} {data[:300]!r}")
        return data

    def finish(self, conn: http.client.HTTPConnection, name: str, answer: bytes) -> None:
        """The job in `answer` waited for (GET ?wait=) until it ends; it must be done."""
        job = json.loads(answer)
        while job["status"] not in ("done", "failed"):
            job = json.loads(request(conn, "GET", f"/v1/jobs/{job['id']}?wait=30")[2])
        if job["status"] != "done":
            raise RuntimeError(f"job for {name} failed: {job.get('error')}")
        self.done.append(job["id"])

    def run(self, corpus: Corpus, lanes: int, prefer_wait: bool = False) -> float:
        return http_pass(corpus.items, [self.address], lanes, lambda c, p: self.one(c, p, corpus, prefer_wait))

    def cleanup(self) -> None:
        """Delete the pass's jobs (outside the timing) so that storage does not grow round after round."""
        conn = http.client.HTTPConnection(*self.address, timeout=60)
        while self.done:
            request(conn, "DELETE", f"/v1/jobs/{self.done.pop()}")
        conn.close()

    def processes(self) -> dict[int, str]:
        return self.server.roles() if self.server else {}

    def modes(self, concurrency: list[int], protocols: list[str]) -> list[Mode]:
        """`poll`: POST, then GET ?wait= (shown as `cN`); `prefer`: one POST with `Prefer: wait=30` (`pw cN`)."""
        return [
            Mode(
                self.name,
                f"{self.layout}{'pw ' if p == 'prefer' else ''}c{c}",
                lambda corpus, c=c, p=p: self.run(corpus, c, p == "prefer"),
                self.processes,
                self.cleanup,
            )
            for p in protocols
            for c in concurrency
        ]


THUMBOR_CONF = """LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = {root!r}
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = 'thumbor.result_storages.no_storage'
ALLOW_UNSAFE_URL = True
QUALITY = {quality}
AUTO_WEBP = False
RESPECT_ORIENTATION = True
MAX_AGE = 0
"""


class Thumbor:
    """thumbor instances for the peer harness's layouts: p1 and ports2 share instance a (ports2 adds b); fork2 is
    one `--processes 2`. Idle instances use no CPU while another layout is timed."""

    def __init__(self, root: Path) -> None:
        self.conf = Path(tempfile.mkstemp(prefix="thumbor-", suffix=".conf")[1])
        self.conf.write_text(THUMBOR_CONF.format(root=str(root), quality=QUALITY))
        self.procs: dict[str, tuple[subprocess.Popen, Address]] = {}
        for name, processes in (("a", 1), ("b", 1), ("fork2", 2)):
            self.procs[name] = self._start(processes)

    def _start(self, processes: int) -> tuple[subprocess.Popen, Address]:
        port = free_port()
        argv = [str(THUMBOR_VENV / "bin" / "thumbor"), "--port", str(port), "--ip", "127.0.0.1"]
        argv += ["--conf", str(self.conf), "--processes", str(processes), "--log-level", "error"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
        wait_http(f"http://127.0.0.1:{port}/healthcheck", 60, proc)
        while processes > 1 and len(process_tree(proc.pid)) <= processes:  # every fork up
            time.sleep(0.1)
        return proc, ("127.0.0.1", port)

    LAYOUTS = {"p1": ("a",), "fork2": ("fork2",), "ports2": ("a", "b")}

    @staticmethod
    def one(conn: http.client.HTTPConnection, path: Path, corpus: Corpus) -> None:
        status, _, data = request(conn, "GET", f"{THUMBOR_PATH}/{path.relative_to(corpus.root)}")
        if status != 200 or not data.startswith(b"\xff\xd8"):
            raise RuntimeError(f"thumbor {path.name}: {status} {data[:200]!r}")

    def mode(self, layout: str, lanes: int) -> Mode:
        instances = [self.procs[name] for name in self.LAYOUTS[layout]]
        addresses = [address for _, address in instances]

        def run(corpus: Corpus) -> float:
            return http_pass(corpus.items, addresses, lanes, lambda c, p: self.one(c, p, corpus))

        def processes() -> dict[int, str]:
            return {pid: "thumbor" for proc, _ in instances for pid in process_tree(proc.pid)}

        return Mode("thumbor", f"{layout} c{lanes}", run, processes)

    def modes(self, concurrency: list[int]) -> list[Mode]:
        return [self.mode(layout, c) for layout in self.LAYOUTS for c in concurrency]

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            stop_process(proc)
        self.conf.unlink(missing_ok=True)


def pyvips_thumbnail(path: Path) -> None:
    import pyvips

    pyvips.Image.thumbnail(str(path), SIZE, height=SIZE).jpegsave_buffer(Q=QUALITY)


def _configure_pyvips() -> None:
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)


class PyvipsPool:
    """The bare library loop: one spawned process per core, each one image at a time."""

    def __init__(self, cores: int = CORES_DEFAULT) -> None:
        from concurrent.futures import ProcessPoolExecutor

        before = set(multiprocessing.active_children())
        self.pool = ProcessPoolExecutor(cores, multiprocessing.get_context("spawn"), initializer=_configure_pyvips)
        list(self.pool.map(time.sleep, [0.2] * cores))  # every process started
        self.pids = [p.pid for p in set(multiprocessing.active_children()) - before]

    def run(self, corpus: Corpus) -> float:
        started = time.perf_counter()
        list(self.pool.map(pyvips_thumbnail, corpus.items))
        return time.perf_counter() - started

    def mode(self) -> Mode:
        return Mode("pyvips-pool", f"{len(self.pids)} processes", self.run, lambda: dict.fromkeys(self.pids, "pyvips"))

    def stop(self) -> None:
        self.pool.shutdown()


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the counted passes of one mode on one corpus measured."""

    rates: list[float] = field(default_factory=list)
    images: int = 0
    cpu_s: collections.Counter = field(default_factory=collections.Counter)  # role → CPU seconds


def timed_pass(mode: Mode, corpus: Corpus, tally: Tally | None) -> float:
    """One pass; with a tally, its images/s and each process's CPU time are added to it."""
    roles = mode.processes()
    before = {pid: cpu_s(pid) for pid in roles}
    client_before = own_cpu_s()
    elapsed = mode.run(corpus)
    if tally is not None:
        tally.cpu_s["client (this process)"] += own_cpu_s() - client_before
        for pid, role in roles.items():
            tally.cpu_s[role] += cpu_s(pid) - before[pid]
        tally.images += len(corpus.items)
        tally.rates.append(len(corpus.items) / elapsed)
    mode.cleanup()
    return len(corpus.items) / elapsed


def measure(modes: list[Mode], corpora: list[Corpus], rounds: int) -> dict[str, dict[str, Tally]]:
    """Round 0 warms up; every round runs each corpus through every mode, the order rotating."""
    tallies = {c.name: {m.name: Tally() for m in modes} for c in corpora}
    for r in range(rounds + 1):
        order = modes[r % len(modes) :] + modes[: r % len(modes)]
        for corpus in corpora:
            rates = {m.name: timed_pass(m, corpus, tallies[corpus.name][m.name] if r else None) for m in order}
            label = f"round {r}" if r else "warm-up"
            print(f"{label} {corpus.name}: " + "  ".join(f"{n}={v:.1f}/s" for n, v in rates.items()), file=sys.stderr)
    return tallies


def single_requests(corpus: Corpus, server: Thumbify, thumbor: Thumbor | None, count: int) -> dict:
    """p50/p99 of `count` requests one at a time on the idle server and thumbor (one process)."""
    samples = {"thumbify": latencies(corpus.files, server.address, count, lambda k, p: server.one(k, p, corpus))}
    samples["thumbify pw"] = latencies(corpus.files, server.address, count, lambda k, p: server.one(k, p, corpus, True))
    server.cleanup()
    if thumbor:
        address = thumbor.procs["a"][1]
        samples["thumbor p1"] = latencies(corpus.files, address, count, lambda k, p: Thumbor.one(k, p, corpus))
    out = {}
    for name, ms in samples.items():
        out[name] = {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "all": ms}
        print(
            f"{corpus.name} latency {name}: p50 {out[name]['p50']:.0f} ms, p99 {out[name]['p99']:.0f} ms",
            file=sys.stderr,
        )
    return out


def ratio(values: list[float], base: list[float] | None) -> float | None:
    """Median of per-round ratios."""
    return statistics.median(a / b for a, b in zip(values, base, strict=True)) if base and values else None


def best(tallies: dict[str, Tally], modes: list[Mode], tool: str) -> str | None:
    names = [m.name for m in modes if m.tool == tool]
    return max(names, key=lambda n: statistics.median(tallies[n].rates), default=None)


def corpus_results(tallies: dict[str, Tally], modes: list[Mode]) -> dict:
    thumbor, pool = best(tallies, modes, "thumbor"), best(tallies, modes, "pyvips-pool")
    out = {}
    for m in modes:
        t = tallies[m.name]
        per_image = {role: s / t.images * 1000 for role, s in t.cpu_s.items()}
        out[m.name] = {
            "tool": m.tool,
            "layout": m.layout,
            "per_s": summary(t.rates),
            "rates": t.rates,
            "ratio_to_thumbor_best": ratio(t.rates, tallies[thumbor].rates if thumbor else None),
            "ratio_to_pyvips_pool": ratio(t.rates, tallies[pool].rates if pool else None),
            "cpu_ms_per_image": per_image,
            "best_of_tool": m.name == best(tallies, modes, m.tool),
        }
    return {"thumbor_best": thumbor, "pyvips_pool": pool, "modes": out}


def report(corpus: Corpus, result: dict, rounds: int) -> None:
    rows = []
    for name, r in result["modes"].items():
        cpu = r["cpu_ms_per_image"]
        client = cpu.get("client (this process)", 0.0)
        own = {k: v for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]) if k != "client (this process)" and v}
        rows.append(
            (
                name + (" *" if r["best_of_tool"] else ""),
                r["per_s"]["median"],
                f"{r['per_s']['min']:.1f}–{r['per_s']['max']:.1f}",
                r["ratio_to_thumbor_best"],
                r["ratio_to_pyvips_pool"],
                sum(own.values()),
                ", ".join(f"{k} {v:.1f}" for k, v in own.items()),
                client,
            )
        )
    table(
        f"{corpus.name}: {len(corpus.files)} files × {corpus.repeat} per pass → fit in {SIZE}, JPEG q{QUALITY}; "
        f"median of {rounds} rounds",
        ["tool layout", "images/s", "range", "× thumbor best", "× pyvips-pool", "CPU ms/img", "by process", "client"],
        rows,
        note=f"* best layout of the tool; thumbor best = {result['thumbor_best']}. CPU ms per image from /proc.",
    )


def check_targets(results: dict) -> dict:
    """The issue's targets for the server's best layout (printed, never asserted)."""
    wanted = {"web": [("thumbor", 1.0)], "12mp": [("thumbor", 1.0), ("pyvips_pool", 0.9)]}
    met = {}
    for corpus, result in results.items():
        ours = next((r for r in result["modes"].values() if r["tool"] == "thumbify" and r["best_of_tool"]), None)
        for base, floor in wanted.get(corpus, []) if ours else []:
            value = ours["ratio_to_thumbor_best" if base == "thumbor" else "ratio_to_pyvips_pool"]
            if value is not None:
                met[f"{corpus}: server >= {floor} x {base}"] = {"ratio": value, "met": value >= floor}
                print(
                    f"target {corpus}: server ≥ {floor}× {base}: {value:.2f} → {'MET' if value >= floor else 'NOT MET'}"
                )
    return met


def chart(results: dict, rounds: int):
    labels, values = [], []
    for corpus, result in results.items():
        for name, r in result["modes"].items():
            if r["best_of_tool"]:
                labels.append(f"{corpus}: {name}")
                values.append(r["per_s"]["median"])
    return bar_plot(
        "e2e",
        f"End to end, fit in {SIZE} JPEG q{QUALITY}: best layout per tool, median of {rounds} rounds",
        labels,
        values,
        "images/s",
    )


# --- main -----------------------------------------------------------------------------------------------------


def load_corpora(args) -> list[Corpus]:
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    photos = corpus_mod.make_photos(args.corpus, args.photos, log=log)
    web = corpus_mod.make_sized(args.corpus, args.web, 1024, 768, log=log)
    corpora = [Corpus("12mp", args.corpus, photos), Corpus("web", args.corpus, web, repeat=args.web_repeat)]
    for c in corpora:
        c.uploads = {p: multipart(p) for p in c.files}
    return corpora


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.e2e")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--photos", type=int, default=24, help="12 MP JPEGs (default 24)")
    parser.add_argument("--web", type=int, default=60, help="1024×768 JPEGs (default 60)")
    parser.add_argument("--web-repeat", type=int, default=3, help="passes over the web-size files per pass")
    parser.add_argument("--concurrency", default="2,4", help="requests in flight, each tried (default 2,4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=int, default=20, help="single requests for p50/p99 (default 20)")
    parser.add_argument("--url", help="an existing Thumbify server instead of starting `thumbify serve`")
    parser.add_argument(
        "--workers", default="default,2", help="`thumbify serve --workers`, each a server ('default': its own)"
    )
    parser.add_argument(
        "--headroom", default="default", help="THUMBIFY_RESAMPLE_HEADROOM values, each a server ('default': 1.9)"
    )
    parser.add_argument("--protocols", default="poll,prefer", help="poll (POST + GET ?wait=), prefer (Prefer: wait)")
    parser.add_argument("--env", action="append", default=[], metavar="THUMBIFY_X=Y", help="for `thumbify serve`")
    parser.add_argument("--no-thumbor", action="store_true")
    parser.add_argument("--s3", action="store_true", help="also a server storing in S3 (rclone serve s3)")
    parser.add_argument("--quick", action="store_true", help="4 photos, 12 web images, 1 round, 3 latency samples")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.web, args.rounds, args.latency = 4, 12, 1, 3
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.workers = [None if w == "default" else int(w) for w in args.workers.split(",")]
    args.headroom = [None if h == "default" else h for h in args.headroom.split(",")]
    args.protocols = args.protocols.split(",")
    return args


def start_servers(args, env: dict[str, str], running: list) -> list[Thumbify]:
    if args.url:
        return [Thumbify(args.url)]
    servers = []
    for workers in args.workers:
        for headroom in args.headroom:
            extra = {"THUMBIFY_RESAMPLE_HEADROOM": headroom} if headroom else {}
            server = ThumbifyServer(env | extra, workers=workers)
            running.append(server)
            layout = (f"w{workers} " if workers else "") + (f"h{headroom} " if headroom else "")
            servers.append(Thumbify(server.start().url, server=server, layout=layout))
    if args.s3:
        from tests.support.s3server import RcloneS3  # the tests' S3 server: rclone serve s3 over a folder

        root = Path(tempfile.mkdtemp(prefix="thumbify-bench-s3-"))
        rclone = RcloneS3(root / "root", root / "rclone.log")
        running.append(rclone.start())
        s3_env = {f"THUMBIFY_{k.upper()}": v for k, v in rclone.env("bench/").items()}
        s3 = ThumbifyServer({**env, **s3_env}, workers=args.workers[0])
        running.append(s3)
        servers.append(Thumbify(s3.start().url, name="thumbify-s3", server=s3))
    return servers


def start_thumbor(args, root: Path, running: list, skipped: dict[str, str]) -> Thumbor | None:
    if args.no_thumbor:
        skipped["thumbor"] = "--no-thumbor"
    elif not (THUMBOR_VENV / "bin" / "thumbor").exists():
        skipped["thumbor"] = f"not installed: python3 -m venv {THUMBOR_VENV} && {THUMBOR_VENV}/bin/pip install thumbor"
    else:
        try:
            thumbor = Thumbor(root)
        except Exception as exc:  # noqa: BLE001
            skipped["thumbor"] = f"did not start: {exc}"
            return None
        running.append(thumbor)
        return thumbor
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()  # the figures are only as quiet as the machine
    corpora = load_corpora(args)
    env = dict(item.split("=", 1) for item in args.env)
    skipped: dict[str, str] = {}
    running: list = []
    try:
        servers = start_servers(args, env, running)
        thumbor = start_thumbor(args, args.corpus, running, skipped)
        pool = PyvipsPool()
        running.append(pool)
        modes = [m for s in servers for m in s.modes(args.concurrency, args.protocols)]
        modes += thumbor.modes(args.concurrency) if thumbor else []
        modes.append(pool.mode())
        tallies = measure(modes, corpora, args.rounds)
        latency = {c.name: single_requests(c, servers[0], thumbor, args.latency) for c in corpora}
    finally:
        for thing in reversed(running):
            thing.stop()

    results = {c.name: {**corpus_results(tallies[c.name], modes), "latency_ms": latency[c.name]} for c in corpora}
    for c in corpora:
        report(c, results[c.name], args.rounds)
    targets = check_targets(results)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    png = chart(results, args.rounds)
    path = write_json(
        "e2e",
        {
            "corpora": {
                c.name: {"files": len(c.files), "repeat": c.repeat, "dir": str(c.files[0].parent)} for c in corpora
            },
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "workers": args.workers,
            "env": env,
            "loadavg": {"before": load_before, "after": os.getloadavg()},
            "results": results,
            "targets": targets,
            "skipped": skipped,
            "chart": str(png) if png else None,
        },
        args.out,
    )
    print(f"load average (1, 5, 15 min): {load_before} before, {os.getloadavg()} after, on {CORES_DEFAULT} cores")
    print(f"wrote {path}" + (f" and {png}" if png else "; no chart: matplotlib is missing (pip install -e '.[bench]')"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
