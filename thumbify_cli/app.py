"""The `thumbify` command, the composition root: it starts the API (`api`) and the workers (`gpu_worker`) and works
on the core (`thumbify`), importing each only inside the commands that need it, so `--help` stays quick."""

from __future__ import annotations

import typer

from thumbify_cli import dlq, ingest, keys, presets, serve, submit, thumbnail, webhooks

app = typer.Typer(
    help="Thumbify: a thumbnail service (API, workers) and a local thumbnailer.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(serve.serve)
app.command()(serve.api)
app.command()(serve.worker)
app.command()(thumbnail.thumbnail)
app.command()(submit.submit)
app.command()(ingest.ingest)
app.command()(presets.presets)
app.add_typer(dlq.app, name="dlq")
app.add_typer(keys.app, name="keys")
app.add_typer(webhooks.app, name="webhooks")
