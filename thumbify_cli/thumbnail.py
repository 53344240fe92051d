"""`thumbify thumbnail`: the service's own image pipeline on local files, no server."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Annotated

import typer

from thumbify_cli.common import SizeOpt, console, load_settings, output
from thumbify_cli.crop_flags import CropOpt, FxOpt, FyOpt, crop_options
from thumbify_cli.encoder_flags import (
    AnimatedOpt,
    EffortOpt,
    FactsOpt,
    KeepOpt,
    OptimizeCodingOpt,
    ProgressiveOpt,
    encoder_options,
)

# The thumbnail table's length before it folds the rest into one line.
FOLD_ROWS = 20
# A file's row: file, source, thumbnails, error (None: it worked).
Row = tuple[str, str, str, str | None]


def thumbnail(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE...", help="Images to thumbnail", exists=True, dir_okay=False)
    ],
    size: SizeOpt = None,
    format: Annotated[str, typer.Option(metavar="FORMAT", help="jpeg, webp, png, avif or gif")] = "jpeg",
    fit: Annotated[str, typer.Option(metavar="FIT", help="inside, cover, fill or contain")] = "inside",
    crop: CropOpt = None,
    fx: FxOpt = None,
    fy: FyOpt = None,
    quality: Annotated[int, typer.Option(min=1, max=100, help="Encoder quality")] = 80,
    background: Annotated[
        str, typer.Option(metavar="COLOUR", help="#rrggbb\\[aa] for contain and JPEG alpha")
    ] = "#ffffff",
    progressive: ProgressiveOpt = None,
    keep: KeepOpt = None,
    optimize_coding: OptimizeCodingOpt = None,
    effort: EffortOpt = None,
    facts: FactsOpt = False,
    animated: AnimatedOpt = None,
    out: Annotated[Path, typer.Option("-o", "--out", metavar="DIR", help="Output folder", file_okay=False)] = Path(
        "thumbnails"
    ),
    all_rows: Annotated[
        bool, typer.Option("--all", help=f"List every file (the table folds past {FOLD_ROWS} rows)")
    ] = False,
) -> None:
    """Thumbnail local files with the service's own pipeline, no server needed."""
    from thumbify_cli import render

    settings = load_settings()
    # This process is one of the `image_process_count` renderers (it would only wait otherwise); a handful of files
    # render here alone, rather than pay for starting render processes. The others start before anything else
    # (forked from this process once it is set up to render: `render.pool`), while this one parses the options.
    helpers = min(settings.image_process_count(), len(files)) - 1 if len(files) > IN_PROCESS_FILES else 0
    with contextlib.ExitStack() as stack:
        process_settings = render.process_settings(settings)
        render.start(process_settings)
        pool = stack.enter_context(render.pool(helpers, process_settings)) if helpers > 0 else None
        extra = encoder_options(progressive, keep, optimize_coding, effort, facts, animated)
        extra |= crop_options(crop, fx, fy)
        spec = _spec(size or ["256"], format, fit, quality, background, extra)
        out.mkdir(parents=True, exist_ok=True)
        rows, elapsed = _render_all(files, str(out), spec, pool, AHEAD * helpers)
    if _report(rows, elapsed, out, all_rows):
        raise typer.Exit(1)


# Up to this many files render in the CLI's own process alone: even forked, a render process costs CPU (2 × 12 MP
# photos: 0.373 vs 0.357 s, benchmarks/README.md "cli_start") for at most one image's time saved.
IN_PROCESS_FILES = 2
# Files handed to each render process ahead (one rendering, one waiting), so none waits on this process's own.
AHEAD = 2


def _spec(sizes: list[str], format: str, fit: str, quality: int, background: str, extra: dict[str, str]):
    """The options as the API's own parser reads them (the same rules and messages); exit 2 naming each bad one."""
    from thumbify.errors import InvalidOptions
    from thumbify.spec import ThumbnailSpec

    options = {"sizes": sizes, "format": [format], "fit": [fit]}
    options |= {"quality": [str(quality)], "background": [background]}
    options |= {name: [value] for name, value in extra.items()}
    try:
        return ThumbnailSpec.from_options(options)[0]
    except InvalidOptions as exc:
        for err in exc.extra.get("errors") or [{"field": "options", "message": exc.detail}]:
            console.print(f"{err['field']}: {err['message']}", style="red", markup=False)
        raise typer.Exit(2) from None


def _render_all(files: list[Path], out: str, spec, pool, ahead: int) -> tuple[list[Row], float]:
    """Every file rendered, by `pool`'s processes (`ahead` files handed to them at a time) and this one alike, one
    file at a time each, from one queue, so they finish together; (file, source, thumbnails, error or None) per
    file, and the seconds it took."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from thumbify_cli import render

    rows: list[Row] = []
    queued = deque(files)
    running: dict[Future, Path] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    started = time.perf_counter()
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("thumbnailing", total=len(files))

        def done(path: Path, outcome: render.Outcome) -> None:
            rows.append((str(path), *outcome))
            progress.advance(task)

        while queued or running:
            while queued and len(running) < ahead:
                path = queued.popleft()
                running[pool.submit(render.render_file, str(path), out, spec)] = path
            if queued:
                path = queued.popleft()
                done(path, render.render_file(str(path), out, spec))
            else:
                wait(running, return_when=FIRST_COMPLETED)
            for future in [f for f in running if f.done()]:
                done(running.pop(future), future.result())
    return rows, time.perf_counter() - started


def _report(rows: list[Row], elapsed: float, out: Path, all_rows: bool) -> int:
    """The table (failures first, folded past FOLD_ROWS unless `all_rows`) and a closing line that counts both
    outcomes; returns how many failed."""
    from rich.table import Table
    from rich.text import Text

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
