"""`python -m thumbify_cli`: the `thumbify` command."""

from thumbify_cli.app import app

app()
