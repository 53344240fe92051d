"""The rehearsal of benchmarks/gpu_check.sh's `core` stage (scripts/rehearse-gpu-check.sh), so a packing or path
mistake is caught before GPU time is spent: an imitation of the GPU machine's python3 (only what that machine has;
nothing that is packed), the core set packed for it and installed from the part alone, the stage in a fresh process.
Without a GPU here the stage must still pass, with every tiles row reported unavailable and the reason. Needs a
package index or pip's cache (the imitation and the core set are fetched)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.service import PYTHON, ROOT

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rehearsal's folder (the imitation venv, the parts), shared by the tests here."""
    return tmp_path_factory.mktemp("rehearsal")


def _rehearse(work: Path, out: Path, **env: str) -> subprocess.CompletedProcess:
    argv = [str(ROOT / "scripts/rehearse-gpu-check.sh"), "core", str(out), str(work)]
    env = {**os.environ, "PYTHON": PYTHON, **env}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_the_core_stage_runs_from_the_core_set_alone(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _rehearse(work, out)
    assert done.returncode == 0, done.stdout[-6000:]
    summary = (out / "summary.txt").read_text()
    for step in ("install", "imports", "gpu_vs_cpu", "kernels_bench", "pytest"):
        assert any(line.split()[:2] == [step, "ok"] for line in summary.splitlines()), summary
    assert "gpu                    absent" in summary, summary  # said, not hidden
    # What comes back from the device tool: at most 8 files, the logs in one archive.
    assert {p.name for p in out.iterdir()} == {"summary.txt", "facts.txt", "rows.jsonl", "pytest.xml", "logs.tar.gz"}
    with tarfile.open(out / "logs.tar.gz") as logs:
        assert {"logs/install.log", "logs/pytest.log", "logs/gpu_vs_cpu.log"} <= set(logs.getnames())
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert rows[0] == {"gpu": {}, "sizes": "256", "format": "jpeg"}
    backends = [(r["backend"], r["group"]) for r in rows[1:]]
    assert backends == [("tiles", "photos"), ("tiles", "huge"), ("vips", "photos"), ("vips", "huge")]  # GPU first
    for row in rows[1:3]:
        assert row["status"].startswith("unavailable: CuPy is not installed"), row
    for row in rows[3:]:
        assert row["status"] == "ok" and row["images_per_s"] > 0, row


def test_a_stage_names_the_parts_it_lacks_and_stops(work: Path, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "SHA256SUMS").write_text(f"{hashlib.sha256(b'the packed set').hexdigest()}  core.tar\n")
    (parts / "core.tar").write_bytes(b"damaged on the way")
    done = _rehearse(work, tmp_path / "out", GPU_REHEARSAL_PARTS=str(parts))
    assert done.returncode == 2, done.stdout[-4000:]
    assert "the core set is incomplete: missing or damaged core.tar" in done.stdout
    assert "gpu_vs_cpu" not in (tmp_path / "out" / "summary.txt").read_text()  # no minutes spent on it
