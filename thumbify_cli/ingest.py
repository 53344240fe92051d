"""`thumbify ingest s3://BUCKET/PREFIX`: a job for every object under a prefix of the service's own bucket, made
from the object where it lies (`POST /v1/jobs` with `source_key`): nothing is uploaded again, nothing copied or
moved. The objects are listed with this machine's THUMBIFY_S3_* settings; the jobs are asked of the API
(THUMBIFY_URL, THUMBIFY_API_KEY), N at a time. Asking again is cheap: an object that already has its job (same
object, same options, same key) is skipped by the API itself (200 + `Idempotent-Replayed`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

import typer

from thumbify_cli.common import SizeOpt, console, load_settings, output
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

OWN_AREAS = ("originals/", "thumbnails/", ".thumbify-ping")  # Thumbify's own objects, relative to S3_PREFIX
LISTED_REFUSALS = 20  # refusals printed one by one; past them, a count
# Answers every other object would get too: stop at the first (401: no or a wrong key; 501: no bucket).
REFUSED_WHOLE = (401, 501)


@dataclass
class Plan:
    """What the listing gave: the source keys to send (relative to S3_PREFIX), the objects refused before sending
    (bucket key, why), and how many were left out (folder markers and empty objects, Thumbify's own objects)."""

    base: str  # THUMBIFY_S3_PREFIX
    send: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    folders: int = 0
    own: int = 0


@dataclass
class Outcome:
    queued: list[str] = field(default_factory=list)  # job ids
    skipped: list[str] = field(default_factory=list)  # job ids the API already had
    refused: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # with --wait: (job id, why)
    done: int = 0


def ingest(
    source: Annotated[str, typer.Argument(metavar="s3://BUCKET/PREFIX", help="Objects to make thumbnails of")],
    concurrency: Annotated[int, typer.Option(metavar="N", min=1, max=64, help="Requests at once")] = 8,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be sent; send nothing")] = False,
    wait: WaitOpt = False,
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    preset: PresetOpt = None,
    size: SizeOpt = None,
    format: FormatOpt = None,
    fit: FitOpt = None,
    quality: QualityOpt = None,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Queue a job for every object under s3://BUCKET/PREFIX (the service's bucket, THUMBIFY_S3_BUCKET); print how
    many were queued, skipped (already ingested) and refused, with each reason (exit status 1 if any was refused or,
    with --wait, failed)."""
    settings = load_settings()
    bucket, prefix = _parse(source, settings)
    plan = _plan(_list(settings, bucket, prefix), settings.s3_prefix)
    if dry_run:
        _print_dry_run(plan, source)
        bad = bool(plan.refused)
    else:
        outcome = _send(plan, job_options(size, format, fit, quality, preset), url, key, concurrency, wait, timeout)
        _print_outcome(plan, outcome, wait)
        bad = bool(plan.refused or outcome.refused or outcome.failed)
    if bad:
        raise typer.Exit(1)


def _refuse(why: str) -> typer.Exit:
    console.print(f"[red]{why}[/]")
    return typer.Exit(2)


def _parse(source: str, settings) -> tuple[str, str]:
    """(bucket, prefix) of an s3:// URL naming the service's own bucket and a prefix that may hold its sources."""
    scheme, sep, rest = source.partition("://")
    if scheme != "s3" or not sep:
        raise _refuse(f"{source} is not an s3:// URL: name the objects as s3://BUCKET/PREFIX")
    bucket, _, prefix = rest.partition("/")
    if not settings.s3_bucket:
        raise _refuse("THUMBIFY_S3_BUCKET is not set: ingest reads the bucket the service stores in")
    if bucket != settings.s3_bucket:
        raise _refuse(
            f"{source} is not in the service's bucket ({settings.s3_bucket}, THUMBIFY_S3_BUCKET): the API makes jobs "
            "only of objects there"
        )
    base = settings.s3_prefix
    if not (prefix.startswith(base) or base.startswith(prefix)):
        raise _refuse(f"{source} is outside THUMBIFY_S3_PREFIX ({base}): the API reads only keys under it")
    return bucket, prefix


def _list(settings, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """Every object under `prefix` (key, size), with this machine's S3 settings (empty ones: boto's own chain)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region or None,
        aws_access_key_id=settings.s3_access_key_id or None,
        aws_secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
        config=Config(signature_version="s3v4", s3={"addressing_style": settings.s3_addressing_style}),
    )
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [(obj["Key"], obj["Size"]) for page in pages for obj in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as exc:
        raise _refuse(f"cannot list s3://{bucket}/{prefix}: {exc}") from None


def _plan(objects: list[tuple[str, int]], base: str) -> Plan:
    plan = Plan(base)
    for key, size in objects:
        if key.endswith("/") or not size:  # a folder marker (some servers list one without its slash)
            plan.folders += 1
        elif not key.startswith(base):
            plan.refused.append((key, f"outside THUMBIFY_S3_PREFIX ({base}): the API reads only keys under it"))
        elif key[len(base) :].startswith(OWN_AREAS):
            plan.own += 1
        else:
            plan.send.append(key[len(base) :])
    return plan


def _send(plan: Plan, options: dict, url: str, key: str | None, concurrency: int, wait: bool, timeout: float):
    """Ask a job of each source key, `concurrency` at a time, under a progress bar; with `wait`, wait for each."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from thumbify_cli.client import ThumbifyClient, ThumbifyError

    deadline = time.monotonic() + timeout
    outcome = Outcome()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with (
        ThumbifyClient(url, key) as client,
        ThreadPoolExecutor(concurrency) as pool,
        Progress(*columns, console=console, transient=True) as progress,
    ):
        try:
            task = progress.add_task("queueing", total=len(plan.send))
            asked = {pool.submit(client.ingest, source_key, options): source_key for source_key in plan.send}
            for future in as_completed(asked):
                try:
                    job, replayed = future.result()
                    (outcome.skipped if replayed else outcome.queued).append(job["id"])
                except ThumbifyError as exc:
                    if exc.status in REFUSED_WHOLE:
                        pool.shutdown(cancel_futures=True)
                        raise _refuse(f"{url} refused: {exc.detail}") from None
                    outcome.refused.append((plan.base + asked[future], exc.detail))
                progress.advance(task)
            if wait:
                jobs = outcome.queued + outcome.skipped
                progress.update(task, description="waiting", total=len(jobs), completed=0)
                waited = {pool.submit(client.wait, job_id, deadline): job_id for job_id in jobs}
                for future in as_completed(waited):
                    try:
                        job = future.result()
                    except ThumbifyError as exc:  # deleted meanwhile
                        job = {"status": "failed", "error": {"detail": exc.detail}}
                    if job["status"] == "failed":
                        outcome.failed.append((waited[future], (job.get("error") or {}).get("detail", "failed")))
                    outcome.done += job["status"] == "done"
                    progress.advance(task)
        except httpx.TransportError as exc:
            pool.shutdown(cancel_futures=True)
            raise cannot_reach(url, exc) from None
    return outcome


def _print_reasons(what: str, items: list[tuple[str, str]]) -> None:
    out = output()
    for name, why in items[:LISTED_REFUSALS]:
        out.print(f"{what} {name}: {why}", style="red", highlight=False, markup=False)
    if len(items) > LISTED_REFUSALS:
        out.print(f"... and {len(items) - LISTED_REFUSALS} more {what}", style="red")


def _left_out(plan: Plan) -> str:
    parts = [f"{plan.folders} folder markers or empty objects"] * bool(plan.folders)
    parts += [f"{plan.own} of Thumbify's own objects (originals/, thumbnails/)"] * bool(plan.own)
    return f"; left out {' and '.join(parts)}" if parts else ""


def _print_outcome(plan: Plan, outcome: Outcome, wait: bool) -> None:
    refused = plan.refused + outcome.refused
    _print_reasons("refused", refused)
    _print_reasons("failed", outcome.failed)
    line = f"{len(outcome.queued)} queued, {len(outcome.skipped)} skipped (already ingested), {len(refused)} refused"
    if wait:
        line += f"; {outcome.done} done, {len(outcome.failed)} failed"
    output().print(line + _left_out(plan), highlight=False)


def _print_dry_run(plan: Plan, source: str) -> None:
    out = output()
    for source_key in plan.send:
        out.print(source_key, highlight=False, markup=False)
    _print_reasons("refused", plan.refused)
    out.print(
        f"would send {len(plan.send)} from {source}, {len(plan.refused)} refused{_left_out(plan)}; sent nothing",
        highlight=False,
    )
