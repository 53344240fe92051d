"""The `thumbify` command. It is the composition root: it starts the API (`api`) and workers (`gpu_worker`),
importing them only inside the commands, so the core never depends on either."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    help="Thumbify: a thumbnail service (API, workers) and a local thumbnailer.",
    no_args_is_help=True,
    add_completion=False,
)
# Messages go to stderr, results (tables, JSON) to stdout. Lines are never wrapped for a file or a pipe: rich would
# cut them at 80 columns where there is no terminal to ask.
console = Console(stderr=True, soft_wrap=True)


def _output() -> Console:
    """stdout for results; wide when it is not a terminal, so tables in a log or a pipe are not folded at 80."""
    out = Console()
    return out if out.is_terminal else Console(width=200)


HostOpt = Annotated[
    str | None, typer.Option(metavar="ADDRESS", help="Address to bind \\[env THUMBIFY_HOST; default 127.0.0.1]")
]
PortOpt = Annotated[int | None, typer.Option(metavar="PORT", help="Port \\[env THUMBIFY_PORT; default 8000]")]
DataOpt = Annotated[
    Path | None, typer.Option(metavar="DIR", help="Data folder \\[env THUMBIFY_DATA_DIR; default ./data]")
]


def _apply(**values: object) -> None:
    """Command-line options become THUMBIFY_* variables, so this process and its children read one source."""
    for name, value in values.items():
        if value is not None:
            os.environ[f"THUMBIFY_{name.upper()}"] = str(value)


def _settings():
    from thumbify.settings import Settings

    return Settings()


def _api_server(settings):
    """The API as a uvicorn server; the app is built (from THUMBIFY_* variables) when it starts."""
    import uvicorn

    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        server_header=False,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


def _run_api(settings) -> None:
    _api_server(settings).run()


@app.command()
def serve(
    workers: Annotated[int | None, typer.Option(help="Worker processes [env THUMBIFY_WORKERS; default 1]")] = None,
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """All in one: an embedded Redis (unless THUMBIFY_REDIS_URL is set), N workers and the API, each restarted if it
    dies; the data folder is locked against a second `serve`."""
    if data_dir is not None:
        data_dir = data_dir.resolve()
    _apply(workers=workers, host=host, port=port, data_dir=data_dir)
    settings = _settings()
    from api.auth import refuse_open_bind
    from thumbify.keys import KeyRing
    from thumbify.supervise import serve as serve_all

    refuse_open_bind(settings, KeyRing.load(settings.api_keys_file, settings.api_keys))
    code = serve_all(settings, _api_server(settings))
    if code:
        raise typer.Exit(code)


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


# The thumbnail table's length before it folds the rest into one line.
FOLD_ROWS = 20


@app.command()
def thumbnail(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE...", help="Images to thumbnail", exists=True, dir_okay=False)
    ],
    size: Annotated[
        list[str],
        typer.Option("--size", "-s", metavar="SIZE", help="256 (a box) or 320x200; repeatable \\[default: 256]"),
    ] = None,
    format: Annotated[str, typer.Option(metavar="FORMAT", help="jpeg, webp, png or avif")] = "jpeg",
    fit: Annotated[str, typer.Option(metavar="FIT", help="inside, cover, fill or contain")] = "inside",
    crop: Annotated[str, typer.Option(metavar="CROP", help="For cover: centre, attention or entropy")] = "centre",
    quality: Annotated[int, typer.Option(min=1, max=100, help="Encoder quality")] = 80,
    background: Annotated[
        str, typer.Option(metavar="COLOUR", help="#rrggbb\\[aa] for contain and JPEG alpha")
    ] = "#ffffff",
    out: Annotated[Path, typer.Option("-o", "--out", metavar="DIR", help="Output folder", file_okay=False)] = Path(
        "thumbnails"
    ),
    all_rows: Annotated[
        bool, typer.Option("--all", help=f"List every file (the table folds past {FOLD_ROWS} rows)")
    ] = False,
) -> None:
    """Thumbnail local files with the service's own pipeline, no server needed."""
    from pydantic import ValidationError

    from thumbify.errors import message_of
    from thumbify.spec import ThumbnailSpec

    try:
        spec = ThumbnailSpec(
            sizes=size or ["256"], format=format, fit=fit, crop=crop, quality=quality, background=background
        )
    except ValidationError as exc:
        for err in exc.errors():
            console.print(f"{'.'.join(map(str, err['loc']))}: {message_of(err)}", style="red", markup=False)
        raise typer.Exit(2) from None
    settings = _settings()
    out.mkdir(parents=True, exist_ok=True)
    # Each image renders in a process of its own at a time, as in the worker: libvips reports the damage it meets in
    # an image's last strip only in its process-wide error buffer, which threads decoding side by side would share.
    # A handful of files render here, in this process, rather than pay for starting render processes.
    processes = min(settings.image_process_count(), len(files))
    pool = (
        ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_renderer,
            initargs=(settings.vips_concurrency,),
        )
        if processes > 1 and len(files) > IN_PROCESS_FILES
        else None
    )
    if pool is None:
        _start_renderer(settings.vips_concurrency)
    spec_json = spec.model_dump_json()
    rows: list[tuple[str, str, str, str | None]] = []  # file, source, thumbnails, error (None: it worked)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console) as progress, pool or contextlib.nullcontext():
        task = progress.add_task("thumbnailing", total=len(files))
        if pool is None:
            outcomes = ((f, _render_file(str(f), spec_json, str(out))) for f in files)
        else:
            futures = {pool.submit(_render_file, str(f), spec_json, str(out)): f for f in files}
            outcomes = ((futures[f], f.result()) for f in as_completed(futures))
        for path, (source, names, error) in outcomes:
            rows.append((str(path), source, names, error))
            progress.advance(task)
    failed = _report(rows, time.perf_counter() - started, out, all_rows)
    if failed:
        raise typer.Exit(1)


# Up to this many files render in the CLI's own process (starting render processes costs more than it saves).
IN_PROCESS_FILES = 2
_renderer = None


def _start_renderer(vips_concurrency: int) -> None:
    """A render process's (or the CLI's own) one-time set-up: libvips configured as in the worker, one backend."""
    global _renderer
    from gpu_worker.backends.vips import VipsBackend, configure_vips

    configure_vips(vips_concurrency)
    _renderer = VipsBackend()


def _render_file(path: str, spec_json: str, out: str) -> tuple[str, str, str | None]:
    """Thumbnail one file into `out`: (source, thumbnail names, None) or ("", "", the error's detail)."""
    from thumbify.errors import ThumbifyError
    from thumbify.probe import probe_for
    from thumbify.spec import ThumbnailSpec, safe_stem

    try:
        info = probe_for(Path(path), _settings())
        renditions = _renderer.render(
            Path(path), info.format, ThumbnailSpec.model_validate_json(spec_json), safe_stem(Path(path).name)
        )
        for r in renditions:
            (Path(out) / r.name).write_bytes(r.data)
    except ThumbifyError as exc:
        return "", "", exc.detail
    return f"{info.width}x{info.height} {info.format}", ", ".join(r.name for r in renditions), None


def _report(rows: list[tuple[str, str, str, str | None]], elapsed: float, out: Path, all_rows: bool) -> int:
    """The table (failures first, folded past FOLD_ROWS unless `all_rows`) and a closing line that counts both
    outcomes; returns how many failed."""
    failures = sorted(r for r in rows if r[3] is not None)
    ok = sorted(r for r in rows if r[3] is None)
    ordered = failures + ok
    shown = ordered if all_rows or len(ordered) <= FOLD_ROWS else ordered[: FOLD_ROWS - 1]
    table = Table()
    for column in ("file", "source", "thumbnails", "result"):
        table.add_column(column, overflow="fold")
    for name, source, thumbs, error in shown:
        table.add_row(name, source, thumbs, "ok" if error is None else Text(error, style="red"))
    if hidden := ordered[len(shown) :]:
        bad = sum(1 for r in hidden if r[3] is not None)
        what = f"{len(hidden) - bad} more succeeded" + (f", {bad} more failed" if bad else "")
        table.add_row(Text(f"… {what} (--all lists them)", style="dim"), "", "", "")
    _output().print(table)
    style = "red" if failures else "green"
    console.print(
        f"[{style}]{len(ok)} succeeded, {len(failures)} failed[/] ({len(rows)} file(s) in {elapsed:.2f}s) → {out}"
    )
    return len(failures)


# -- the dead-letter stream ---------------------------------------------------------------------------------------

dlq = typer.Typer(help="The dead-letter stream: jobs that used up their attempts.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")


def _redis_url(settings) -> str:
    """THUMBIFY_REDIS_URL, else the embedded Redis of `thumbify serve` on this data folder."""
    if settings.redis_url:
        return settings.redis_url
    from thumbify.redis_conn import EmbeddedRedis

    embedded = EmbeddedRedis(settings.data_dir / "redis")
    if embedded.socket.exists():
        return embedded.url
    _no_service(
        f"THUMBIFY_REDIS_URL is not set and no `thumbify serve` runs on the data folder {settings.data_dir.resolve()}"
    )


def _no_service(why: str) -> None:
    """Stop, telling the user how to point this command at the running service."""
    console.print(
        f"[red]{why}.[/]\nPoint at the running service with [bold]--data-dir DIR[/] (the folder `thumbify serve` "
        "was given; default ./data) or [bold]THUMBIFY_REDIS_URL[/]=redis://HOST:6379/0 (and THUMBIFY_KEY_PREFIX, "
        "if it is not `thumbify`)."
    )
    raise typer.Exit(2)


def _with_queue(settings, work):
    """Run `await work(queue)` against the configured Redis."""
    import asyncio

    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from thumbify.queue import JobQueue
    from thumbify.redis_conn import connect

    url = _redis_url(settings)

    async def run():
        redis = connect(url)
        try:
            return await work(JobQueue(redis, settings.key_prefix))
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        _no_service(f"Redis at {url} does not answer ({exc})")


@dlq.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="At most this many entries, oldest first")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table")] = False,
    data_dir: DataOpt = None,
) -> None:
    """The dead-letter entries: entry id, job id, reason, when."""
    import json

    _apply(data_dir=data_dir)
    settings = _settings()

    async def work(queue):
        return await queue.dead_entries(limit), await queue.redis.xlen(queue.dead)

    entries, total = _with_queue(settings, work)
    out = _output()
    if as_json:
        for e in entries:
            row = {"entry": e.id, "job": e.job_id, "reason": e.reason, "type": e.error_type, "attempts": e.attempts}
            out.print_json(json.dumps(row | {"when": e.when.isoformat()}), indent=None)
        return
    table = Table(title=f"{total} dead-letter entr{'y' if total == 1 else 'ies'} ({settings.key_prefix}:dead)")
    table.add_column("entry id", no_wrap=True)
    table.add_column("job id", no_wrap=True, min_width=32)
    table.add_column("reason", overflow="fold")
    table.add_column("when (UTC)", no_wrap=True)
    table.add_column("attempts", justify="right")
    for e in entries:
        when = e.when.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(e.id, e.job_id, e.reason or e.error_type, when, str(e.attempts))
    out.print(table)


@dlq.command("requeue")
def dlq_requeue(
    ids: Annotated[list[str] | None, typer.Argument(help="Entry ids or job ids to requeue")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Requeue every dead-letter entry")] = False,
    data_dir: DataOpt = None,
) -> None:
    """Put dead-lettered jobs back in the queue: each job `queued` again with its attempts reset, a fresh stream
    entry, its dead-letter entry deleted (one atomic step per job)."""
    import re

    _apply(data_dir=data_dir)
    settings = _settings()
    if bool(ids) == all_:
        console.print("[red]give entry or job ids, or --all[/]")
        raise typer.Exit(2)

    async def work(queue):
        entries = await queue.dead_entries(count=1_000_000)
        if all_:
            targets = [e.id for e in entries]
        else:
            targets, by_job = [], {}
            for e in entries:
                by_job.setdefault(e.job_id, []).append(e.id)
            for given in ids:
                targets += by_job.get(given, []) if re.fullmatch(r"[0-9a-f]{32}", given) else [given]
                if re.fullmatch(r"[0-9a-f]{32}", given) and given not in by_job:
                    console.print(f"[yellow]{given}: no dead-letter entry for this job[/]")
        return [(entry_id, *await queue.requeue_dead(entry_id)) for entry_id in targets]

    results = _with_queue(settings, work)
    words = {1: "requeued", 0: "not failed any more; entry removed", -1: "no such entry", -2: "job gone; entry removed"}
    for entry_id, code, job_id in results:
        colour = {1: "green", -1: "red"}.get(code, "yellow")
        console.print(f"[{colour}]{entry_id}[/] {job_id or '-'}: {words[code]}")
    requeued = sum(1 for _, code, _ in results if code == 1)
    console.print(f"{requeued} job(s) requeued")
    if any(code == -1 for _, code, _ in results):
        raise typer.Exit(1)


keys = typer.Typer(help="API keys: each job belongs to the key that created it.", no_args_is_help=True)
app.add_typer(keys, name="keys")


KeysFileOpt = Annotated[
    Path | None,
    typer.Option("--file", metavar="FILE", help="Keys file \\[env THUMBIFY_API_KEYS_FILE; default DATA_DIR/keys.json]"),
]


def _keys_path(file: Path | None, data_dir: Path | None) -> Path:
    """The file the servers of this data folder read (the same rule as theirs: thumbify.keys.keys_file)."""
    _apply(data_dir=data_dir)
    settings = _settings()
    return file or settings.api_keys_file or settings.data_dir / "keys.json"


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The key's name: the owner of the jobs it creates")],
    scope: Annotated[
        list[str] | None,
        typer.Option(metavar="SCOPE", help="submit, read or admin; repeat for several \\[default: submit and read]"),
    ] = None,
    file: KeysFileOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Make a key, store its hash in the keys file, print the key once (it is not stored anywhere)."""
    from thumbify.keys import add_to_file, new_key

    path = _keys_path(file, data_dir)
    try:
        token, key = new_key(name, scope or ["submit", "read"])
        add_to_file(path, key)
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    console.print(
        f"key [bold]{name}[/] ({', '.join(sorted(key.scopes))}) added to {path}; it is shown only now. "
        "Servers on this data folder read that file (running ones within seconds): every request now needs a key."
    )
    print(token)


@keys.command("list")
def keys_list(
    as_json: Annotated[
        bool, typer.Option("--json", metavar="", help="One JSON object per line instead of a table")
    ] = False,
    file: KeysFileOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """The keys in the keys file: name, id, scopes, created (never a secret: only hashes are stored)."""
    import json

    from thumbify.keys import read_file

    path = _keys_path(file, data_dir)
    try:
        entries = read_file(path)
    except (OSError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    if as_json:
        for k in entries:
            print(json.dumps({"name": k.name, "id": k.id, "scopes": sorted(k.scopes), "created": k.created or None}))
        return
    if not path.exists():
        console.print(f"no keys file at {path}: authentication is off (create a key with `thumbify keys create`)")
        return
    table = Table(title=f"{len(entries)} key(s) in {path}")
    for column in ("name", "id", "scopes", "created (UTC)"):
        table.add_column(column, no_wrap=True)
    for k in entries:
        table.add_row(k.name, k.id, ", ".join(sorted(k.scopes)), k.created or "-")
    _output().print(table)


@keys.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(metavar="NAME_OR_ID", help="The key's name or its 8-hex id")],
    file: KeysFileOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """Remove a key from the keys file; running servers refuse it within seconds, no restart needed."""
    from thumbify.keys import remove_from_file

    path = _keys_path(file, data_dir)
    try:
        gone = remove_from_file(path, key)
    except (OSError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"key [bold]{gone.name}[/] ({gone.id}) revoked: removed from {path}")


if __name__ == "__main__":
    app()
