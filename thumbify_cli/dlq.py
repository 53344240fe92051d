"""`thumbify dlq`: the dead-letter stream of the running service."""

from __future__ import annotations

from typing import Annotated

import typer

from thumbify_cli.common import DataOpt, apply_options, console, load_settings, output, with_redis

app = typer.Typer(help="The dead-letter stream: jobs that used up their attempts.", no_args_is_help=True)


def _with_queue(settings, work):
    """Run `await work(queue)` against the configured Redis."""
    from thumbify.queue import JobQueue

    return with_redis(settings, lambda redis, keys: work(JobQueue(redis, keys)))


@app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="At most this many entries, oldest first")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table")] = False,
    data_dir: DataOpt = None,
) -> None:
    """The dead-letter entries: entry id, job id, reason, when."""
    import json

    apply_options(data_dir=data_dir)
    settings = load_settings()

    async def work(queue):
        return await queue.dead_entries(limit), await queue.redis.xlen(queue.keys.dead), queue.keys.dead

    entries, total, stream = _with_queue(settings, work)
    out = output()
    if as_json:
        for e in entries:
            row = {"entry": e.id, "job": e.job_id, "reason": e.reason, "type": e.error_type, "attempts": e.attempts}
            out.print_json(json.dumps(row | {"when": e.when.isoformat()}), indent=None)
        return
    from rich.table import Table

    table = Table(title=f"{total} dead-letter entr{'y' if total == 1 else 'ies'} ({stream})")
    table.add_column("entry id", no_wrap=True)
    table.add_column("job id", no_wrap=True, min_width=32)
    table.add_column("reason", overflow="fold")
    table.add_column("when (UTC)", no_wrap=True)
    table.add_column("attempts", justify="right")
    for e in entries:
        when = e.when.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(e.id, e.job_id, e.reason or e.error_type, when, str(e.attempts))
    out.print(table)


@app.command("requeue")
def dlq_requeue(
    ids: Annotated[list[str] | None, typer.Argument(help="Entry ids or job ids to requeue")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Requeue every dead-letter entry")] = False,
    data_dir: DataOpt = None,
) -> None:
    """Put dead-lettered jobs back in the queue: each job `queued` again with its attempts reset, a fresh stream
    entry, its dead-letter entry deleted (one atomic step per job)."""
    import re

    apply_options(data_dir=data_dir)
    settings = load_settings()
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
