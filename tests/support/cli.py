"""The command line as a user runs it: `python -m thumbify_cli ...` in the repository, with a clean environment."""

from __future__ import annotations

import subprocess

from support.service import PYTHON, ROOT, clean_env


def cli(*argv: str, **env: object) -> subprocess.CompletedProcess:
    """Run `thumbify ARGV...` to the end (`env`: THUMBIFY_* settings); its output is captured as text."""
    return subprocess.run(
        [PYTHON, "-m", "thumbify_cli", *argv],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
