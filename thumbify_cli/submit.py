"""`thumbify submit`: upload files to a running server (one job each, or one batch) and show what became of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from thumbify_cli.common import SizeOpt, console, output
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
from thumbify_cli.remote import (
    DEFAULT_URL,
    FitOpt,
    FormatOpt,
    KeyOpt,
    PresetOpt,
    QualityOpt,
    TimeoutOpt,
    UrlOpt,
    WaitOpt,
    cannot_reach,
    job_options,
)

DIRECT_OVER = 32 * 1024 * 1024  # thumbify_cli.client.DIRECT_THRESHOLD, not imported: `--help` stays light


def submit(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE...", help="Images to upload", exists=True, dir_okay=False)
    ],
    batch: Annotated[bool, typer.Option("--batch", help="Send them as one batch (POST /v1/batches)")] = False,
    wait: WaitOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    preset: PresetOpt = None,
    size: SizeOpt = None,
    format: FormatOpt = None,
    fit: FitOpt = None,
    crop: CropOpt = None,
    fx: FxOpt = None,
    fy: FyOpt = None,
    quality: QualityOpt = None,
    progressive: ProgressiveOpt = None,
    keep: KeepOpt = None,
    optimize_coding: OptimizeCodingOpt = None,
    effort: EffortOpt = None,
    facts: FactsOpt = False,
    animated: AnimatedOpt = None,
    timeout: TimeoutOpt = 600.0,
    direct_over: Annotated[
        int,
        typer.Option(
            metavar="BYTES",
            min=0,
            help="A file over this many bytes goes straight to the server's bucket (POST /v1/uploads), not through "
            "the API; a server without one gets it the usual way. 0: never",
        ),
    ] = DIRECT_OVER,
) -> None:
    """Upload images to a running Thumbify server and print the results table (exit status 1 if any failed)."""
    import httpx

    from thumbify_cli.client import ThumbifyClient

    options = job_options(size, format, fit, quality, preset)
    options |= encoder_options(progressive, keep, optimize_coding, effort, facts, animated)
    options |= crop_options(crop, fx, fy)
    try:
        with ThumbifyClient(url, key, direct_threshold=direct_over) as client:
            rows = _run(client, files, options, batch, wait, time.monotonic() + timeout)
    except httpx.TransportError as exc:
        raise cannot_reach(url, exc) from None
    if _report(rows):
        raise typer.Exit(1)


def _run(client, files: list[Path], options: dict, batch: bool, wait: bool, deadline: float) -> list[dict]:
    """Each file's row: {file (its name, as the server knows it), id, status, thumbnails, error}, as the uploads (and,
    with `wait`, the jobs) end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from thumbify_cli.client import ThumbifyError

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("uploading", total=len(files))
        if batch:
            try:
                rows = _batch_rows(files, client.submit_batch(files, options))
            except ThumbifyError as exc:  # the batch was refused whole
                rows = [_job_row(path.name, exc.problem) for path in files]
            progress.advance(task, len(files))
        else:
            rows = []
            for path in files:
                try:
                    rows.append(_job_row(path.name, client.submit(path, options)))
                except ThumbifyError as exc:
                    rows.append(_job_row(path.name, exc.problem))
                progress.advance(task)
        if wait:
            pending = [row for row in rows if row["status"] not in ("done", "failed", "refused")]
            progress.update(task, description="waiting", total=len(pending), completed=0)
            for row in pending:
                try:
                    row.update(_job_row(row["file"], client.wait(row["id"], deadline)))
                except ThumbifyError as exc:  # deleted meanwhile
                    row.update(status="failed", error=exc.detail)
                progress.advance(task)
    return rows


def _batch_rows(files: list[Path], answer: dict[str, Any]) -> list[dict]:
    rows: list[dict | None] = [None] * len(files)
    for entry in answer["rejected"]:
        rows[entry["index"]] = _job_row(files[entry["index"]].name, entry["problem"])
    accepted = iter(answer["jobs"])
    return [row or _job_row(path.name, next(accepted)) for path, row in zip(files, rows, strict=True)]


def _job_row(file: str, answer: dict[str, Any]) -> dict:
    """A file's row from its job, or from the problem that refused it."""
    if "id" not in answer:
        return {"file": file, "id": "", "status": "refused", "thumbnails": "", "error": answer.get("detail", "")}
    error = (answer.get("error") or {}).get("detail")
    names = ", ".join(t["name"] for t in answer.get("thumbnails", []))
    facts = (answer.get("source") or {}).get("facts")
    if facts:  # `--facts --wait`: what the job learnt of the image, under its thumbnails
        names += "\n" + " ".join(f"{name}={value}" for name, value in facts.items())
    return {"file": file, "id": answer["id"], "status": answer["status"], "thumbnails": names, "error": error}


def _report(rows: list[dict]) -> int:
    """The results table and a closing line; returns how many failed or were refused."""
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for column in ("file", "job", "status", "thumbnails / error"):
        table.add_column(column, overflow="fold")
    bad = 0
    for row in rows:
        failed = row["status"] in ("failed", "refused")
        bad += failed
        what = Text(row["error"] or "", style="red") if failed else row["thumbnails"]
        table.add_row(row["file"], row["id"], row["status"], what)
    output().print(table)
    console.print(f"[{'red' if bad else 'green'}]{len(rows) - bad} ok, {bad} failed or refused[/]")
    return bad
