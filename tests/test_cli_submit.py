"""`thumbify submit` against the running service (`service`: uvicorn + a worker + redis-server), as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips
from support import images
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


SENT_OPTIONS = {
    "encoder": (
        ["--progressive", "--keep", "icc", "--no-optimize-coding", "--format", "webp", "--effort", "6"],
        {"progressive": True, "keep": "icc", "optimize_coding": False, "effort": 6},
        ["--format", "webp", "--effort", "9"],
        "effort",
    ),
    "crop": (
        ["--fit", "cover", "--crop", "focal", "--fx", "0.3", "--fy", "0.6"],
        {"fit": "cover", "crop": "focal", "fx": 0.3, "fy": 0.6},
        ["--fx", "0.3"],  # fx without crop=focal
        "fx",
    ),
}


@pytest.mark.parametrize("case", list(SENT_OPTIONS))
def test_submit_sends_the_options(service: Service, photos: list[Path], case: str) -> None:
    flags, expected, bad_flags, bad_field = SENT_OPTIONS[case]
    photo = photos[0].rename(photos[0].with_name(f"{case}-options.jpg"))  # a name no other test's job has
    done = cli("submit", str(photo), "--wait", "--size", "32", *flags, "--url", service.base_url)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = service.client.get("/v1/jobs").json()["items"]
    (job,) = [j for j in jobs if j["source"]["filename"] == photo.name]
    assert {name: job["spec"][name] for name in expected} == expected
    bad = cli("submit", str(photo), *bad_flags, "--url", service.base_url)
    assert bad.returncode == 1 and bad_field in bad.stdout + bad.stderr, bad.stdout + bad.stderr


def test_submit_asks_for_facts_and_shows_them(service: Service, photos: list[Path]) -> None:
    photo = photos[0].rename(photos[0].with_name("facts-flag.jpg"))  # a name no other test's job has
    done = cli("submit", str(photo), "--wait", "--size", "32", "--facts", "--url", service.base_url)
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = service.client.get("/v1/jobs").json()["items"]
    (job,) = [j for j in jobs if j["source"]["filename"] == photo.name]
    assert job["spec"]["facts"] is True and job["source"]["facts"]["dhash"] in done.stdout.replace("\n", "")


def test_submit_sends_animated(service: Service, tmp_path: Path) -> None:
    source = tmp_path / "animated-flag.gif"
    source.write_bytes(images.animated("gif"))
    done = cli(
        "submit", str(source), "--wait", "--size", "32", "--animated", "--format", "auto", "--url", service.base_url
    )
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = service.client.get("/v1/jobs").json()["items"]
    (job,) = [j for j in jobs if j["source"]["filename"] == source.name]
    assert (job["spec"]["animated"], job["spec"]["format"]) == (True, "webp")
    data = service.client.get(job["thumbnails"][0]["url"]).content
    assert pyvips.Image.new_from_buffer(data, "", n=-1).get("n-pages") == 3
