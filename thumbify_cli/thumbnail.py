"""`thumbify thumbnail`: the service's own image pipeline on local files, no server."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from thumbify_cli.common import console, load_settings, output

# The thumbnail table's length before it folds the rest into one line.
FOLD_ROWS = 20


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
    from thumbify.errors import InvalidOptions
    from thumbify.spec import ThumbnailSpec

    options = {"sizes": size or ["256"], "format": [format], "fit": [fit], "crop": [crop]}
    options |= {"quality": [str(quality)], "background": [background]}
    try:
        spec, _ = ThumbnailSpec.from_options(options)  # the API's own parser: the same rules and messages
    except InvalidOptions as exc:
        for err in exc.extra.get("errors") or [{"field": "options", "message": exc.detail}]:
            console.print(f"{err['field']}: {err['message']}", style="red", markup=False)
        raise typer.Exit(2) from None
    settings = load_settings()
    out.mkdir(parents=True, exist_ok=True)
    # Each image renders in a process of its own at a time, as in the worker: libvips reports the damage it meets in
    # an image's last strip only in its process-wide error buffer, which threads decoding side by side would share.
    # A handful of files render here, in this process, rather than pay for starting render processes.
    processes = min(settings.image_process_count(), len(files))
    spec_json = spec.model_dump_json()
    pool = (
        ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_renderer,
            initargs=(spec_json,),
        )
        if processes > 1 and len(files) > IN_PROCESS_FILES
        else None
    )
    if pool is None:
        _start_renderer(spec_json)
    rows: list[tuple[str, str, str, str | None]] = []  # file, source, thumbnails, error (None: it worked)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console) as progress, pool or contextlib.nullcontext():
        task = progress.add_task("thumbnailing", total=len(files))
        if pool is None:
            outcomes = ((f, _render_file(str(f), str(out))) for f in files)
        else:
            futures = {pool.submit(_render_file, str(f), str(out)): f for f in files}
            outcomes = ((futures[f], f.result()) for f in as_completed(futures))
        for path, (source, names, error) in outcomes:
            rows.append((str(path), source, names, error))
            progress.advance(task)
    failed = _report(rows, time.perf_counter() - started, out, all_rows)
    if failed:
        raise typer.Exit(1)


# Up to this many files render in the CLI's own process (starting render processes costs more than it saves).
IN_PROCESS_FILES = 2
# Set once per render process (and in the CLI's own for a handful of files): the settings, the spec, the backend.
_renderer: tuple | None = None


def _start_renderer(spec_json: str) -> None:
    """A render process's one-time set-up: the settings read and libvips configured as in the worker, the spec
    parsed, one backend."""
    global _renderer
    from gpu_worker.backends.vips import VipsBackend, configure_vips
    from thumbify.spec import ThumbnailSpec

    settings = load_settings()
    configure_vips(settings.vips_concurrency)
    # No libjpeg-turbo path: it saves ~0.3 ms a web-size image and nothing on 12 MP photos, and its NumPy import
    # costs ~70 ms in each render process (24 photos: 1.13× the CPU; benchmarks/README.md, "render_cpu").
    _renderer = (settings, ThumbnailSpec.model_validate_json(spec_json), VipsBackend(turbo=False))


def _render_file(path: str, out: str) -> tuple[str, str, str | None]:
    """Thumbnail one file into `out`: (source, thumbnail names, None) or ("", "", the error's detail)."""
    from thumbify.errors import ThumbifyError
    from thumbify.probe import probe_for
    from thumbify.spec import safe_stem

    settings, spec, backend = _renderer
    try:
        info = probe_for(Path(path), settings)
        renditions = backend.render(Path(path), info.format, spec, safe_stem(Path(path).name))
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
    output().print(table)
    style = "red" if failures else "green"
    console.print(
        f"[{style}]{len(ok)} succeeded, {len(failures)} failed[/] ({len(rows)} file(s) in {elapsed:.2f}s) → {out}"
    )
    return len(failures)
