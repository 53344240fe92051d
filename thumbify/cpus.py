"""How many CPUs this process may use: the cores it may run on, capped by its cgroup's CPU quota.

A container started with `docker run --cpus=2`, a pod with a CPU limit or a systemd unit with `CPUQuota=` still sees
every core of the host through `os.sched_getaffinity` (and Python 3.13's `os.process_cpu_count`); only the quota
says it is throttled past two. One render process per host core there means many processes sharing two CPUs' time
and as many copies of libvips' caches in the memory limit. Written here, not taken from `loky.cpu_count`: loky reads
the quota only at the cgroup mount's root, which misses a systemd unit's (and would bring a process-pool library
that nothing else uses).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """The cores this process may run on, capped by the CPU quota rounded up (1.5 CPUs of quota -> 2)."""
    try:
        cores = len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest CPU quota, in CPUs, on this process's cgroup or any cgroup above it (a pod's limit may sit on
    the pod, not the container); None where there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and not controllers:  # cgroup v2: one tree, cpu.max in each cgroup
            quotas += _along(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own tree
            for mount in {cgroup_root / controllers, cgroup_root / "cpu"}:
                quotas += _along(mount, path, _v1_quota)
    return min(quotas, default=None)


def _along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas on `path` and its ancestors inside `mount`. The mount itself is always read: inside a container's
    cgroup namespace the mount is the container's own cgroup, whatever /proc/self/cgroup says."""
    found = []
    folder = mount / path.strip("/")
    while True:
        if folder.is_dir() and (quota := read(folder)) is not None:
            found.append(quota)
        if folder == mount:
            return found
        folder = folder.parent


def _v2_quota(folder: Path) -> float | None:
    """`cpu.max` holds "<quota> <period>" in microseconds, or "max <period>" for none."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(folder: Path) -> float | None:
    """`cpu.cfs_quota_us` is -1 for none."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None
