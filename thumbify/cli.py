"""The `thumbify` command. It is the composition root: it starts the API (`api`) and workers (`gpu_worker`),
importing them only inside the commands, so the core never depends on either."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="Thumbify: a thumbnail service (API, workers) and a local thumbnailer.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

HostOpt = Annotated[str | None, typer.Option(help="Address to bind [env THUMBIFY_HOST; default 127.0.0.1]")]
PortOpt = Annotated[int | None, typer.Option(help="Port [env THUMBIFY_PORT; default 8000]")]
DataOpt = Annotated[Path | None, typer.Option(help="Data folder [env THUMBIFY_DATA_DIR; default ./data]")]


def _apply(**values: object) -> None:
    """Command-line options become THUMBIFY_* variables, so this process and its children read one source."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"THUMBIFY_{name.upper()}"] = str(value)


def _settings():
    from thumbify.settings import Settings

    return Settings()


def _run_api(settings) -> None:
    import uvicorn

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
        proxy_headers=False,
    )


@app.command()
def serve(
    workers: Annotated[int | None, typer.Option(help="Worker processes [env THUMBIFY_WORKERS; default 1]")] = None,
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """All in one: an embedded Redis (unless THUMBIFY_REDIS_URL is set), N workers and the API."""
    from thumbify.redis_conn import EmbeddedRedis

    if data_dir is not None:
        data_dir = data_dir.resolve()
    _apply(workers=workers, host=host, port=port, data_dir=data_dir)
    settings = _settings()
    data = settings.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    _apply(data_dir=data)
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(data / "redis").start()
        _apply(redis_url=embedded.url)
        console.print(f"[green]embedded redis[/] {embedded.url} (AOF under {data / 'redis'})")
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    supervisor = _Supervisor([sys.executable, "-m", "gpu_worker"], env, settings.workers)
    supervisor.start()
    console.print(
        f"[green]{settings.workers} worker(s)[/]; API on http://{settings.host}:{settings.port} "
        f"(docs at /docs); data in {data}"
    )
    # uvicorn re-raises SIGTERM after its graceful shutdown; with the default action that would kill this process
    # before the cleanup below, so SIGTERM becomes an exception here instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _run_api(_settings())
    finally:
        supervisor.stop()
        if embedded:
            embedded.stop()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class _Supervisor:
    """Keeps N worker processes running; restarts one that dies, stops them all with SIGTERM on exit."""

    def __init__(self, argv: list[str], env: dict[str, str], count: int) -> None:
        self.argv, self.env, self.count = argv, env, count
        self.procs: list[subprocess.Popen] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]
        self._thread.start()

    def _spawn(self) -> subprocess.Popen:
        from thumbify.process import die_with_parent

        return subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stopping.is_set():
                    console.print(f"[yellow]worker {proc.pid} exited ({proc.returncode}); restarting[/]")
                    self.procs[i] = self._spawn()

    def stop(self, grace: float = 30.0) -> None:
        self._stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@app.command()
def api(host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None) -> None:
    """The API alone (THUMBIFY_REDIS_URL must point at Redis)."""
    _apply(host=host, port=port, data_dir=data_dir)
    _run_api(_settings())


@app.command()
def worker(data_dir: DataOpt = None) -> None:
    """One worker process (THUMBIFY_REDIS_URL must point at Redis)."""
    _apply(data_dir=data_dir)
    from gpu_worker.__main__ import main

    main()


@app.command()
def thumbnail(
    files: Annotated[list[Path], typer.Argument(help="Images to thumbnail", exists=True, dir_okay=False)],
    size: Annotated[list[str], typer.Option("--size", "-s", help="A size (256 or 320x200); repeatable")] = None,
    format: Annotated[str, typer.Option(help="jpeg, webp, png or avif")] = "jpeg",
    fit: Annotated[str, typer.Option(help="inside, cover, fill or contain")] = "inside",
    crop: Annotated[str, typer.Option(help="For cover: centre, attention or entropy")] = "centre",
    quality: Annotated[int, typer.Option(help="1..100")] = 80,
    background: Annotated[str, typer.Option(help="#rrggbb[aa] for contain and JPEG alpha")] = "#ffffff",
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder", file_okay=False)] = Path("thumbnails"),
) -> None:
    """Thumbnail local files with the service's own pipeline, no server needed."""
    from pydantic import ValidationError

    from gpu_worker.backends.vips import VipsBackend, configure_vips
    from thumbify.errors import ThumbifyError
    from thumbify.probe import probe
    from thumbify.spec import ThumbnailSpec, safe_stem

    try:
        spec = ThumbnailSpec(
            sizes=size or ["256"], format=format, fit=fit, crop=crop, quality=quality, background=background
        )
    except ValidationError as exc:
        for err in exc.errors():
            console.print(f"[red]{'.'.join(map(str, err['loc']))}: {err['msg']}[/]")
        raise typer.Exit(2) from None
    settings = _settings()
    configure_vips(settings.vips_concurrency)
    backend = VipsBackend()
    out.mkdir(parents=True, exist_ok=True)

    def one(path: Path):
        info = probe(path, settings.max_pixels)
        renditions = backend.render(path, info.format, spec, safe_stem(path.name))
        for r in renditions:
            (out / r.name).write_bytes(r.data)
        return info, renditions

    rows, failures = [], 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console) as progress, ThreadPoolExecutor(settings.image_threads()) as pool:
        task = progress.add_task("thumbnailing", total=len(files))
        futures = {pool.submit(one, f): f for f in files}
        for future in as_completed(futures):
            path = futures[future]
            try:
                info, renditions = future.result()
                rows.append(
                    (
                        path.name,
                        f"{info.width}x{info.height} {info.format}",
                        ", ".join(r.name for r in renditions),
                        "ok",
                    )
                )
            except ThumbifyError as exc:
                failures += 1
                rows.append((path.name, "", "", f"[red]{exc.detail}[/]"))
            progress.advance(task)
    elapsed = time.perf_counter() - started
    table = Table(title=f"{len(files)} file(s) in {elapsed:.2f}s → {out}")
    for column in ("file", "source", "thumbnails", "result"):
        table.add_column(column)
    for row in sorted(rows):
        table.add_row(*row)
    Console().print(table)
    if failures:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
