"""Render processes follow the CPU a container may use, not the host's cores (thumbify/cpus.py).

First in a real cgroup on this machine (a child of the cpu controller with a quota, a process moved into it), then
the cgroup v2 and v1 layouts this machine may not have, as folders shaped like /sys/fs/cgroup.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from thumbify.cpus import cgroup_cpu_quota, usable_cpus

CORES = len(os.sched_getaffinity(0))
PRINT_PROCESSES = "from thumbify.settings import Settings; print(Settings().image_process_count())"


def _child_cgroup(quota_cpus: float) -> tuple[Path, Path]:
    """A new cgroup under this machine's cpu controller with `quota_cpus` of quota: (its folder, the file a process
    is moved in by). Skips where cgroups cannot be made (not root, read-only cgroupfs, no cpu controller)."""
    v1 = Path("/sys/fs/cgroup/cpu")
    v2 = Path("/sys/fs/cgroup")
    name = f"thumbify-test-{uuid.uuid4().hex[:8]}"
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            folder = v1 / name
            folder.mkdir()
            (folder / "cpu.cfs_quota_us").write_text(str(int(quota_cpus * 100_000)))
            (folder / "cpu.cfs_period_us").write_text("100000")
        elif "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
            folder = v2 / name
            folder.mkdir()
            (folder / "cpu.max").write_text(f"{int(quota_cpus * 100_000)} 100000")
        else:
            pytest.skip("no cpu controller to make a cgroup under")
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup with a CPU quota here: {exc}")
    return folder, folder / "cgroup.procs"


def _run_in(procs: Path, code: str, **env: str) -> str:
    def join() -> None:
        procs.write_text(str(os.getpid()))

    out = subprocess.run(
        [sys.executable, "-c", code],
        preexec_fn=join,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("THUMBIFY_")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


@pytest.mark.service
@pytest.mark.skipif(CORES < 2, reason="a quota below the cores needs two cores")
@pytest.mark.parametrize(("quota", "expected"), [(1.0, 1), (0.5, 1), (CORES - 0.5, CORES)])
def test_a_process_in_a_cgroup_with_a_cpu_quota_runs_that_many_render_processes(quota, expected):
    folder, procs = _child_cgroup(quota)
    try:
        assert _run_in(procs, PRINT_PROCESSES) == str(expected)
        # A number set by hand wins over the quota.
        assert _run_in(procs, PRINT_PROCESSES, THUMBIFY_IMAGE_PROCESSES="3") == "3"
    finally:
        folder.rmdir()


def test_outside_any_quota_every_core_counts():
    assert usable_cpus() == CORES or cgroup_cpu_quota() is not None


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


V2_SYSTEMD = {
    "proc": "0::/system.slice/thumbify.service\n",
    "cg/cgroup.controllers": "cpu memory",
    "cg/system.slice/cpu.max": "max 100000",
    "cg/system.slice/thumbify.service/cpu.max": "250000 100000",
}


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        pytest.param(V2_SYSTEMD, 2.5, id="v2-systemd-unit"),
        pytest.param(
            {**V2_SYSTEMD, "cg/system.slice/cpu.max": "100000 100000"}, 1.0, id="v2-tighter-on-the-parent-slice"
        ),
        pytest.param({"proc": "0::/\n", "cg/cpu.max": "150000 100000"}, 1.5, id="v2-container-namespace-root"),
        pytest.param(
            {"proc": "0::/kubepods/pod1/ctr\n", "cg/cpu.max": "50000 100000"},
            0.5,
            id="v2-host-path-unseen-inside-the-container",
        ),
        pytest.param({"proc": "0::/\n", "cg/cpu.max": "max 100000"}, None, id="v2-no-quota"),
        pytest.param(
            {
                "proc": "4:cpu,cpuacct:/docker/abc\n0::/\n",
                "cg/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "200000",
                "cg/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
            },
            2.0,
            id="v1-cpu-cpuacct-mount",
        ),
        pytest.param(
            {"proc": "1:cpu:/\n", "cg/cpu/cpu.cfs_quota_us": "-1", "cg/cpu/cpu.cfs_period_us": "100000"},
            None,
            id="v1-no-quota",
        ),
        pytest.param({"proc": "0::/\n", "cg/cpu.max": "garbage"}, None, id="unreadable-cpu-max"),
    ],
)
def test_the_quota_is_read_from_each_cgroup_layout(tmp_path, files, quota):
    _tree(tmp_path, files)
    assert cgroup_cpu_quota(tmp_path / "cg", tmp_path / "proc") == quota


def test_a_quota_is_rounded_up_and_never_below_one(tmp_path):
    _tree(tmp_path, {"proc": "0::/\n", "cg/cpu.max": "10000 100000"})
    assert usable_cpus(tmp_path / "cg", tmp_path / "proc") == 1
    (tmp_path / "cg/cpu.max").write_text(f"{(CORES - 1) * 100_000 + 1} 100000")
    assert usable_cpus(tmp_path / "cg", tmp_path / "proc") == CORES
    (tmp_path / "cg/cpu.max").write_text(f"{(CORES + 4) * 100_000} 100000")
    assert usable_cpus(tmp_path / "cg", tmp_path / "proc") == CORES  # a quota above the cores changes nothing


def test_no_cgroup_file_means_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "cg", tmp_path / "missing") is None
    assert usable_cpus(tmp_path / "cg", tmp_path / "missing") == CORES
