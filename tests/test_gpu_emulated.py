"""The tiles backend's GPU path (pinned strips, stream copies, the CuPy strip driver, premultiplied alpha, 16-bit)
run on every CI machine: its GPU tests in a pytest process of their own where `import cupy` gives the CPU emulator
(tests/support/emulated_gpu.py, tests/support/cuda_emulator.py). What only a GPU shows (device memory, real
asynchrony) stays with the GPU tests on a GPU machine."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.cuda_emulator import COMPILER
from support.service import PYTHON, ROOT

pytestmark = pytest.mark.service  # it runs pytest in a process of its own

TESTS = Path(__file__).resolve().parent


@pytest.mark.skipif(COMPILER is None, reason="no C++ compiler to emulate the CUDA kernels with")
def test_the_tiles_gpu_path_on_the_emulator(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    argv = [PYTHON, "-m", "pytest", "-p", "support.emulated_gpu", "-p", "no:cacheprovider", "-q", "-rs"]
    # The tiles GPU tests and the contract suite's tiles-gpu cases. Device memory is CuPy's allocator's business,
    # which the emulator does not have: that test stays GPU-only.
    argv += ["tests/test_tiles_backend.py", "tests/test_backend_contract.py"]
    argv += ["-k", "gpu and not memory_stays_bounded", f"--junitxml={report}"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-3000:]
    cases = ET.parse(report).getroot().iter("testcase")
    ran = {(c.get("classname"), c.get("name")): c.find("skipped") for c in cases}
    # Every GPU test ran: none skipped for want of CUDA (a codec this libvips lacks may still skip a contract case).
    no_gpu = [name for name, skip in ran.items() if skip is not None and "GPU" in skip.get("message", "")]
    assert not no_gpu, proc.stdout[-4000:]
    passed = {name for name, skip in ran.items() if skip is None}
    assert sum("test_tiles_backend" in c for c, _ in passed) >= 25, proc.stdout[-4000:]
    assert sum("test_backend_contract" in c for c, _ in passed) >= 80, proc.stdout[-4000:]
