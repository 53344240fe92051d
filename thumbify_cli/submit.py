"""`thumbify submit`: upload files to a running server (one job each, or one batch) and show what became of them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from thumbify_cli.common import console, output

# How long one long-poll asks the server to wait (it answers sooner when the job or batch ends).
POLL_S = 10


def submit(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE...", help="Images to upload", exists=True, dir_okay=False)
    ],
    batch: Annotated[bool, typer.Option("--batch", help="Send them as one batch (POST /v1/batches)")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until every job has ended, and show each")] = False,
    url: Annotated[
        str, typer.Option(metavar="URL", envvar="THUMBIFY_URL", help="The server \\[env THUMBIFY_URL]")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None, typer.Option(metavar="KEY", envvar="THUMBIFY_API_KEY", help="API key \\[env THUMBIFY_API_KEY]")
    ] = None,
    size: Annotated[
        list[str] | None,
        typer.Option("--size", "-s", metavar="SIZE", help="256 (a box) or 320x200; repeatable \\[default: 256]"),
    ] = None,
    format: Annotated[str | None, typer.Option(metavar="FORMAT", help="jpeg, webp, png, avif or auto")] = None,
    fit: Annotated[str | None, typer.Option(metavar="FIT", help="inside, cover, fill or contain")] = None,
    quality: Annotated[int | None, typer.Option(min=1, max=100, help="Encoder quality")] = None,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="How long --wait waits in all")] = 600.0,
) -> None:
    """Upload images to a running Thumbify server and print the results table (exit status 1 if any failed)."""
    import httpx

    options = {"sizes": ",".join(size) if size else None, "format": format, "fit": fit, "quality": quality}
    form = {name: str(value) for name, value in options.items() if value is not None}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120.0) as client:
            rows = _run(client, files, form, batch, wait, time.monotonic() + timeout)
    except httpx.TransportError as exc:
        console.print(f"[red]cannot reach {url}: {exc}[/]\nStart it with `thumbify serve`, or name it with --url.")
        raise typer.Exit(2) from None
    if _report(rows):
        raise typer.Exit(1)


def _run(client, files: list[Path], form: dict[str, str], batch: bool, wait: bool, deadline: float) -> list[dict]:
    """Each file's row: {file (its name, as the server knows it), id, status, thumbnails, error}, as the uploads (and,
    with `wait`, the jobs) end."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("uploading", total=len(files))
        if batch:
            answer = _post(client, "/v1/batches", [("file", p) for p in files], form)
            progress.advance(task, len(files))
            rows = _batch_rows(files, answer)
        else:
            rows = []
            for path in files:
                rows.append(_job_row(path.name, _post(client, "/v1/jobs", [("file", path)], form)))
                progress.advance(task)
        if wait:
            pending = [row for row in rows if row["status"] not in ("done", "failed", "refused")]
            progress.update(task, description="waiting", total=len(pending), completed=0)
            for row in pending:
                job = _until_ended(client, row["id"], deadline)
                row.update(_job_row(row["file"], job))
                progress.advance(task)
    return rows


def _post(client, path: str, files: list[tuple[str, Path]], form: dict[str, str]) -> dict[str, Any]:
    """The server's answer (a problem's body when it refused), with its status."""
    handles = [(name, (p.name, p.open("rb"), "application/octet-stream")) for name, p in files]
    try:
        response = client.post(path, files=handles, data=form)
    finally:
        for _, (_, handle, _) in handles:
            handle.close()
    return response.json() | {"http_status": response.status_code}


def _batch_rows(files: list[Path], answer: dict[str, Any]) -> list[dict]:
    if answer["http_status"] != 202:
        return [_job_row(path.name, answer) for path in files]  # the batch was refused whole
    rows: list[dict | None] = [None] * len(files)
    for entry in answer["rejected"]:
        rows[entry["index"]] = _job_row(files[entry["index"]].name, entry["problem"] | {"http_status": 0})
    accepted = iter(answer["jobs"])
    return [row or _job_row(path.name, next(accepted)) for path, row in zip(files, rows, strict=True)]


def _job_row(file: str, answer: dict[str, Any]) -> dict:
    """A file's row from its job, or from the problem that refused it."""
    if "id" not in answer:
        return {"file": file, "id": "", "status": "refused", "thumbnails": "", "error": answer.get("detail", "")}
    error = (answer.get("error") or {}).get("detail")
    names = ", ".join(t["name"] for t in answer.get("thumbnails", []))
    return {"file": file, "id": answer["id"], "status": answer["status"], "thumbnails": names, "error": error}


def _until_ended(client, job_id: str, deadline: float) -> dict[str, Any]:
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", params={"wait": POLL_S}).json()
        if job.get("status") in ("done", "failed") or "id" not in job:
            break
    return job


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
