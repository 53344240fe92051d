"""`thumbify submit` against the running service (`service`: uvicorn + a worker + redis-server), as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import cli
from support.images import make_jpeg
from support.service import Service

pytestmark = pytest.mark.service  # runs the CLI (a process)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / f"p{i}.jpg" for i in range(3)] + [tmp_path / "notes.jpg"]
    for path in paths[:3]:
        path.write_bytes(make_jpeg(48, 40))
    paths[3].write_text("not an image")
    return paths


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "jobs"])
def test_submit_waits_and_prints_each_files_result(service: Service, photos: list[Path], batch: bool) -> None:
    args = ["--batch"] if batch else []
    done = cli("submit", *map(str, photos), *args, "--wait", "--size", "32", "--url", service.base_url)
    assert done.returncode == 1, done.stderr  # one file refused
    for path in photos[:3]:
        assert path.name in done.stdout and f"thumb_{path.stem}_32x27.jpg" in done.stdout, done.stdout
    assert "refused" in done.stdout
    assert "3 ok, 1 failed or refused" in done.stderr


def test_submit_without_a_server_says_where_it_looked(photos: list[Path]) -> None:
    done = cli("submit", str(photos[0]), "--url", "http://127.0.0.1:9")
    assert done.returncode == 2 and "cannot reach http://127.0.0.1:9" in done.stderr, done.stderr
