"""What the CLI tells a person: `thumbify thumbnail` counts successes and failures in its closing line and lists
failures first in a table that folds; --help shows plain metavars; commands that need the running service say how
to point at it; lines are not cut at 80 columns when the output is a file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import pyvips
from support import images
from support.cli import cli
from support.images import make_jpeg, truncated_jpeg

from thumbify.redis_conn import free_port

pytestmark = pytest.mark.service  # it runs the CLI


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("mixed")
    good = [folder / f"good{i:02}.jpg" for i in range(24)]
    bad = [folder / f"bad{i}.jpg" for i in range(3)]
    for path in good:
        path.write_bytes(make_jpeg(48, 32))
    for path, data in zip(
        bad, (b"not an image at all", b"%PDF-1.4\n%%EOF\n", truncated_jpeg(640, 480, 0.3)), strict=True
    ):
        path.write_bytes(data)
    return bad + good


def test_thumbnail_counts_both_outcomes_lists_failures_first_and_folds(mixed_files: list[Path], tmp_path: Path):
    done = cli("thumbnail", *map(str, mixed_files), "-o", str(tmp_path / "out"), image_processes=2)
    assert done.returncode == 1, done.stderr
    assert re.search(r"24 succeeded, 3 failed \(27 file\(s\) in [\d.]+s\)", done.stderr), done.stderr
    rows = [line for line in done.stdout.splitlines() if ".jpg" in line]
    first_ok = next(i for i, line in enumerate(rows) if " ok " in line or line.rstrip().endswith("ok │"))
    assert all("bad" in line for line in rows[:first_ok]) and first_ok >= 3, done.stdout
    assert not any("bad" in line for line in rows[first_ok:]), done.stdout
    assert "… 8 more succeeded (--all lists them)" in done.stdout, done.stdout
    assert len(list((tmp_path / "out").iterdir())) == 24

    every = cli("thumbnail", "--all", *map(str, mixed_files), "-o", str(tmp_path / "all"), image_processes=2)
    assert every.returncode == 1 and "more succeeded" not in every.stdout
    assert sum(1 for line in every.stdout.splitlines() if "good" in line) == 24


def test_damaged_files_never_fail_the_good_ones_beside_them(tmp_path: Path):
    """Damage libvips meets in an image's last strip is read from its process-wide error buffer: images decoded side
    by side in one process would read each other's. Half the files here are cut short, interleaved with good ones."""
    files = []
    for i in range(12):
        good, bad = tmp_path / f"g{i:02}.jpg", tmp_path / f"t{i:02}.jpg"
        good.write_bytes(make_jpeg(640, 480))
        bad.write_bytes(truncated_jpeg(640, 480, 0.9))
        files += [bad, good]
    for _ in range(3):
        done = cli("thumbnail", *map(str, files), "-o", str(tmp_path / "out"), image_processes=2)
        assert "12 succeeded, 12 failed" in done.stderr, done.stdout + done.stderr


def test_all_good_files_exit_0_with_the_count(mixed_files: list[Path], tmp_path: Path):
    done = cli("thumbnail", *map(str, mixed_files[3:6]), "-o", str(tmp_path), image_processes=1)
    assert done.returncode == 0 and "3 succeeded, 0 failed" in done.stderr, done.stderr


@pytest.mark.parametrize("command", [[], ["thumbnail"], ["serve"], ["keys", "create"], ["dlq", "requeue"]])
def test_help_shows_plain_metavars(command: list[str]):
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    for odd in ("<bool>", "<str>", "<int>", "<path>", "<list[", "{"):
        assert odd not in done.stdout, f"{odd!r} in {' '.join(command)} --help:\n{done.stdout}"


def test_commands_that_need_the_service_say_how_to_point_at_it(tmp_path: Path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "data"
    for env in ({"data_dir": deep}, {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}):
        done = cli("dlq", "list", **env)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        assert "--data-dir DIR" in done.stderr and "THUMBIFY_REDIS_URL" in done.stderr, done.stderr
    # One line, however long: the output is a file here, not an 80-column terminal.
    first = cli("dlq", "list", "--data-dir", str(deep)).stderr.splitlines()[0]
    assert str(deep) in first, first


def test_bad_options_are_told_in_plain_words(mixed_files: list[Path], tmp_path: Path):
    done = cli("thumbnail", str(mixed_files[3]), "--size", "big", "--background", "red", "-o", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "sizes: 'big' is not a size: use a longest side like 256 or a box like 320x200" in said, said
    assert "background: 'red' is not a colour: use #rrggbb or #rrggbbaa" in said, said
    assert "Value error" not in said, said
    # Option names match in any case, as in the API.
    assert cli("thumbnail", str(mixed_files[3]), "--format", "WEBP", "-o", str(tmp_path)).returncode == 0
    assert [p.suffix for p in tmp_path.iterdir()] == [".webp"]


def test_thumbnail_takes_the_encoder_options(mixed_files: list[Path], tmp_path: Path):
    flags = ["--progressive", "--keep", "icc", "--size", "64"]
    assert cli("thumbnail", str(mixed_files[3]), *flags, "-o", str(tmp_path / "jpeg")).returncode == 0
    (out,) = (tmp_path / "jpeg").iterdir()
    data = out.read_bytes()
    assert images.jpeg_sof(data) == 0xC2 and pyvips.Image.new_from_buffer(data, "").get_typeof("icc-profile-data")
    png = cli("thumbnail", str(mixed_files[3]), "--format", "png", "--progressive", "-o", str(tmp_path / "png"))
    assert png.returncode == 0 and images.png_interlace(next((tmp_path / "png").iterdir()).read_bytes()) == 1
    done = cli("thumbnail", str(mixed_files[3]), "--format", "avif", "--effort", "10", "-o", str(tmp_path / "x"))
    assert done.returncode == 2 and "effort: " in done.stdout + done.stderr


def test_thumbnail_facts_go_beside_the_thumbnails(tmp_path: Path):
    """`--facts`: a JSON file per image, as the job's `source.facts`; none without the flag."""
    source = images.write(tmp_path / "clear.png", images.rgba_png(200, 100, (40, 90, 200)))
    done = cli("thumbnail", str(source), "--facts", "--size", "64", "--format", "png", "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    facts = json.loads((tmp_path / "out" / "thumb_clear.facts.json").read_text())
    assert facts["transparent"] is True and facts["dominant_color"] == "#285ac8" and len(facts["dhash"]) == 16
    assert cli("thumbnail", str(source), "--size", "64", "-o", str(tmp_path / "plain")).returncode == 0
    assert [p.suffix for p in (tmp_path / "plain").iterdir()] == [".jpg"]


def test_thumbnail_animated_keeps_the_frames(tmp_path: Path):
    source = images.write(tmp_path / "anim.gif", images.animated("gif", delays=[40, 80, 120], loop=2))
    for out, fmt in (("webp", "webp"), ("gif", "gif")):
        done = cli("thumbnail", str(source), "--animated", "--format", fmt, "--size", "32", "-o", str(tmp_path / out))
        assert done.returncode == 0, done.stdout + done.stderr
        (thumb,) = (tmp_path / out).iterdir()
        image = pyvips.Image.new_from_buffer(thumb.read_bytes(), "", n=-1)
        assert (image.get("n-pages"), image.get("delay"), image.get("loop")) == (3, [40, 80, 120], 2)
    # Without the flag: the first frame, as before.
    assert cli("thumbnail", str(source), "--format", "webp", "-o", str(tmp_path / "still")).returncode == 0
    (still,) = (tmp_path / "still").iterdir()
    assert not pyvips.Image.new_from_buffer(still.read_bytes(), "", n=-1).get_typeof("n-pages")  # one frame


def test_thumbnail_takes_the_focal_point(tmp_path: Path):
    source = images.write(tmp_path / "marker.jpg", images.marker_at(400, 200, 0.8, 0.2, 40).jpegsave_buffer(Q=95))
    flags = ["--size", "100", "--fit", "cover", "--crop", "focal", "--fx", "0.8", "--fy", "0.2", "--format", "png"]
    done = cli("thumbnail", str(source), *flags, "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stdout + done.stderr
    (out,) = (tmp_path / "out").iterdir()
    red = pyvips.Image.new_from_file(str(out)).getpoint(60, 20)
    assert red[0] > 170 and red[1] < 90, red  # the marker, where the focal window puts it
    bad = cli("thumbnail", str(source), "--crop", "focal", "--fx", "1.5", "-o", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "fx: " in bad.stdout + bad.stderr
