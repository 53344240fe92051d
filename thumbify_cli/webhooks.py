"""`thumbify webhooks`: completion webhooks of the running service that are not delivered, and redelivery."""

from __future__ import annotations

from typing import Annotated

import typer

from thumbify_cli.common import DataOpt, apply_options, console, load_settings, output, with_redis

app = typer.Typer(help="Completion webhooks: those not delivered, and sending one again.", no_args_is_help=True)


@app.command("list")
def webhooks_list(
    limit: Annotated[int, typer.Option(help="At most this many jobs")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of a table")] = False,
    data_dir: DataOpt = None,
) -> None:
    """Jobs whose webhook is not delivered: failed for good, or still pending (due, or waiting for a retry)."""
    import json

    from rich.table import Table  # here, not at import: every command loads this module

    from thumbify.jobs import JobStore
    from thumbify.outbox import Outbox

    apply_options(data_dir=data_dir)
    settings = load_settings()

    async def work(redis, keys):
        outbox = Outbox(redis, keys)
        ids = await outbox.open_job_ids(limit)
        jobs = await JobStore(redis, keys).get_many(ids)
        await outbox.forget(sorted(set(ids) - {j.id for j in jobs}))
        return [j for j in jobs if j.callback]

    jobs = with_redis(settings, work)
    rows = []
    for j in jobs:
        attempts = j.callback["attempts"]
        last = attempts[-1] if attempts else {}
        answer = last.get("status") or last.get("error") or "-"
        rows.append({"job": j.id, "state": j.callback["state"], "url": j.callback["url"], "attempts": len(attempts)})
        rows[-1] |= {"last_at": last.get("at"), "last": answer if attempts else None}
    out = output()
    if as_json:
        for row in rows:
            out.print_json(json.dumps(row), indent=None)
        return
    table = Table(title=f"{len(rows)} webhook(s) not delivered")
    for column in ("job id", "state", "url", "attempts", "last attempt (UTC)", "last answer"):
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = (row["job"], row["state"], row["url"], row["attempts"], row["last_at"] or "-", row["last"])
        table.add_row(*map(str, cells))
    out.print(table)


@app.command("redeliver")
def webhooks_redeliver(
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB_ID...", help="Finished jobs whose webhook to send")],
    data_dir: DataOpt = None,
) -> None:
    """Send finished jobs' webhooks again (pending, a new retry window from now; the same webhook-id, so a
    receiver that has it already drops it)."""
    from thumbify.outbox import Outbox

    apply_options(data_dir=data_dir)
    settings = load_settings()

    async def work(redis, keys):
        outbox = Outbox(redis, keys)
        return [(job_id, await outbox.redeliver(job_id)) for job_id in job_ids]

    words = {1: "queued for delivery", 0: "has not ended yet", -1: "has no callback", -2: "no such job"}
    results = with_redis(settings, work)
    for job_id, code in results:
        console.print(f"[{'green' if code == 1 else 'red'}]{job_id}[/]: {words[code]}")
    if any(code != 1 for _, code in results):
        raise typer.Exit(1)
