"""What the benchmark scripts share: the corpus location, timing, tables, JSON results, process memory."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
DEFAULT_CORPUS = BENCH / "corpus"
PYTHON = sys.executable
CORES_DEFAULT = os.cpu_count() or 1


def machine() -> dict:
    """What the numbers were measured on, written beside them."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    try:
        import pyvips

        info["libvips"] = ".".join(str(pyvips.version(i)) for i in range(3))
    except Exception:  # noqa: BLE001
        pass
    try:
        info["git"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        pass
    return info


def one_core_args(
    doc: str | None, argv: list[str] | None, photos: int, rounds: int, add: Callable[[argparse.ArgumentParser], None]
) -> argparse.Namespace:
    """The flags of the benchmarks that time renders in this process (`--corpus`, `--photos` 12 MP photos,
    `--rounds`) and the script's own (`add(parser)`), parsed; libvips is held to one thread, so their figures are CPU
    per image."""
    import pyvips

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--photos", type=int, default=photos)
    ap.add_argument("--rounds", type=int, default=rounds)
    add(ap)
    args = ap.parse_args(argv)
    pyvips.concurrency_set(1)
    return args


def write_json(name: str, data: dict, out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "argv": sys.argv, **data}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]], note: str | None = None) -> None:
    """A rich table when rich is there (it is a Thumbify dependency), plain text otherwise."""
    cells = [[_fmt(c) for c in row] for row in rows]
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        t = Table(title=title, caption=note, caption_justify="left")
        for i, col in enumerate(columns):
            t.add_column(col, justify="left" if i == 0 else "right")
        for row in cells:
            t.add_row(*(escape(c) for c in row))  # "worker[t3]" is not markup
        Console(width=max(100, min(180, sum(len(c) for c in columns) * 3))).print(t)
        return
    except ImportError:
        pass
    widths = [max(len(str(c)), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True))))
    if note:
        print(note)


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def summary(values: Sequence[float]) -> dict:
    values = list(values)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with few samples p99 is simply the largest."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM … from /proc/PID/status, in bytes."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0]) * 1024
    return out


def pss_bytes(pid: int) -> int:
    """Proportional set size (shared pages split between the processes sharing them), from smaps_rollup: summed over
    a process tree it is the tree's real footprint, where RSS counts every shared library once per process."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (not its children), from /proc/PID/stat; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """User + system CPU seconds of this process, all its threads (the benchmark's client)."""
    times = os.times()
    return times.user + times.system


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo += [int(c) for c in children.read_text().split()]
            except OSError:
                pass
    return found


def tree_status(pid: int) -> dict[str, int]:
    """`proc_status` summed over `pid` and its descendants (a worker and its render processes)."""
    total: dict[str, int] = {}
    for member in process_tree(pid):
        for key, value in proc_status(member).items():
            total[key] = total.get(key, 0) + value
    return total


class MemorySampler:
    """Samples /proc/PID/status (summed over its process tree with `tree`) in a thread every `interval` seconds and
    keeps the peaks."""

    def __init__(
        self,
        pid: int,
        interval: float = 0.02,
        keys: Sequence[str] = ("RssAnon", "RssFile", "VmRSS"),
        tree: bool = False,
    ) -> None:
        import threading

        self.pid, self.interval, self.keys = pid, interval, tuple(keys)
        self._status = tree_status if tree else proc_status
        self.peak: dict[str, int] = {k: 0 for k in self.keys}
        self.first: dict[str, int] = {}
        self.samples = 0
        self.trace: list[tuple[float, int]] = []  # (t, RssAnon)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    def __enter__(self) -> MemorySampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            status = self._status(self.pid)
            if status:
                self.samples += 1
                if not self.first:
                    self.first = {k: status.get(k, 0) for k in self.keys}
                for k in self.keys:
                    self.peak[k] = max(self.peak[k], status.get(k, 0))
                self.trace.append((time.perf_counter() - self._t0, status.get("RssAnon", 0)))
            if self._stop.wait(self.interval):
                return


def mib(n: float | None) -> float | None:
    return None if n is None else n / (1024 * 1024)


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s ({last})")


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group it leads (it was started with start_new_session), then SIGKILL if needed."""
    import signal

    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()


class ThumbifyServer:
    """`thumbify serve` (API + embedded Redis + workers) on a free port with a temporary data folder."""

    def __init__(
        self, env: dict[str, str] | None = None, workers: int | None = 1, data_dir: Path | None = None
    ) -> None:
        import tempfile

        from thumbify.redis_conn import free_port

        self.port = free_port()
        self._own = data_dir is None
        self.data = Path(data_dir or tempfile.mkdtemp(prefix="thumbify-serve-"))
        self.workers = workers
        self.env = {**os.environ, "THUMBIFY_LOG_LEVEL": "warning", **(env or {})}
        if workers is not None:  # None: `thumbify serve`'s own default
            self.env["THUMBIFY_WORKERS"] = str(workers)
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.data.parent / f"{self.data.name}.log"

    def start(self, timeout: float = 60.0) -> ThumbifyServer:
        argv = [PYTHON, "-m", "thumbify_cli", "serve", "--port", str(self.port), "--data-dir", str(self.data)]
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"{self.url}/readyz", timeout, self.proc)
        return self

    def worker_pids(self) -> list[int]:
        """The `python -m gpu_worker` children of the server."""
        pids = []
        for child in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                try:
                    if b"gpu_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        pids.append(int(pid))
                except OSError:
                    pass
        return pids

    def roles(self) -> dict[int, str]:
        """Every process of the server by what it is (for CPU time per process)."""
        out = {}
        for pid in process_tree(self.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pid == self.proc.pid:
                out[pid] = "api (serve process)"
            elif "redis-server" in cmd:
                out[pid] = "redis"
            elif "gpu_worker" in cmd:
                out[pid] = "worker"
            elif "spawn_main" in cmd:
                out[pid] = "render processes"
            elif "resource_tracker" in cmd:
                out[pid] = "other"
        return out

    def stop(self) -> None:
        import shutil

        stop_process(self.proc, timeout=40)
        if getattr(self, "_log", None):
            self._log.close()
        if self._own:
            shutil.rmtree(self.data, ignore_errors=True)
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> ThumbifyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def bar_plot(
    name: str,
    title: str,
    labels: list[str],
    values: list[float],
    xlabel: str,
    notes: list[str] | None = None,
    log: bool = False,
):
    """A horizontal bar chart to results/<name>.png when matplotlib is installed (the `bench` extra); else None.
    `log`: a logarithmic axis, for values orders of magnitude apart."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(labels) + 1.2))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color="#4878a8")
    ax.set_yticks(y, labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    for yi, v, note in zip(y, values, notes or [""] * len(values), strict=True):
        ax.text(v, yi, f" {v:.1f} {note}", va="center", fontsize=8)
    if log and values:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 2, max(values) * 8)
    else:
        ax.set_xlim(0, max(values) * 1.35 if values else 1)
    fig.tight_layout()
    path = RESULTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
