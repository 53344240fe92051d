"""`thumbify thumbnail`'s render processes start cheaply: forked from the CLI once it is set up to render, so they
inherit its imports; where the CLI runs threads (a fork could catch one half-way), spawned, and then they import
neither the command line (typer, rich) nor pydantic-settings, even under the console script, whose file a spawned
process runs again as its own `__main__`; the settings the render needs reach them as plain values."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from support.cli import cli
from support.images import make_jpeg
from support.service import PYTHON, ROOT, clean_env

pytestmark = pytest.mark.service  # it runs processes

# The console script pip writes for the project's entry point imports that module and nothing else at the top;
# this one, then, as the CLI does, has the app imported and starts a render pool, and prints what a render process
# has imported once it is ready.
SCRIPT = """\
import sys
from {module} import {attr}


def loaded():
    return sorted(sys.modules)


if __name__ == "__main__":
    import threading

    import thumbify_cli.app
    from thumbify.settings import Settings
    from thumbify_cli import render

    if sys.argv[1] == "threads":
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    with render.pool(1, render.process_settings(Settings())) as pool:
        print(" ".join(pool.submit(loaded).result()))
"""
CLI_ONLY = {"typer", "rich", "thumbify_cli.app", "thumbify_cli.thumbnail", "pydantic_settings", "thumbify.settings"}


def render_process_modules(tmp_path: Path, threads: bool) -> set[str]:
    script = tmp_path / "thumbify"
    module, attr = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["thumbify"].split(":")
    script.write_text(SCRIPT.format(module=module, attr=attr))
    env = clean_env() | {"PYTHONPATH": str(ROOT)}
    argv = [PYTHON, str(script), "threads" if threads else "one"]
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    modules = set(done.stdout.split())
    assert "gpu_worker.backends.vips" in modules  # set up to render (`render.start`)
    return modules


def test_a_spawned_render_process_imports_nothing_of_the_command_line(tmp_path: Path):
    assert not CLI_ONLY & render_process_modules(tmp_path, threads=True)


def test_a_render_process_is_forked_where_the_cli_runs_one_thread(tmp_path: Path):
    assert CLI_ONLY <= render_process_modules(tmp_path, threads=False)


def test_the_render_settings_reach_every_render_process(tmp_path: Path):
    """THUMBIFY_RESAMPLE_HEADROOM as the worker reads it: 1.0 decodes a 640×480 JPEG for 256 px at 1/2, 1.9 whole."""
    files = []
    for i in range(3):  # past IN_PROCESS_FILES: a render process takes some
        files.append(tmp_path / f"in{i}.jpg")
        files[-1].write_bytes(make_jpeg(640, 480))
    made = {}
    for headroom in ("1.0", "1.9"):
        done = cli(
            "thumbnail",
            *map(str, files),
            "-o",
            str(tmp_path / headroom),
            image_processes=2,
            resample_headroom=headroom,
        )
        assert done.returncode == 0, done.stderr
        made[headroom] = [p.read_bytes() for p in sorted((tmp_path / headroom).iterdir())]
    assert len(made["1.0"]) == 3 and all(a != b for a, b in zip(made["1.0"], made["1.9"], strict=True))
