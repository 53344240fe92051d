"""Processes as Linux shows them in /proc: the tree below a process, a worker's render processes, the processes
a test tagged through their environment, and whether they are gone. Read, never guessed: a pid can be reused, so a
process is named by (pid, start time)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

# Every process a test starts (API, workers, their render processes, redis-servers) can inherit this variable, with
# a value unique to the test, so the test can prove afterwards that none of them is left running.
TAG_VAR = "THUMBIFY_RELIABILITY_TEST_TAG"


class Stat(NamedTuple):
    """The fields of /proc/PID/stat the tests read."""

    state: str  # "R", "S", ... "Z" for a zombie
    ppid: int
    pgrp: int
    started: str  # clock ticks since boot: with the pid, names one process


def stat(pid: int) -> Stat | None:
    """The process's stat, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return Stat(fields[0], int(fields[1]), int(fields[2]), fields[19])


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """The process's resident set size now (VmRSS) or at its peak (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"/proc/{pid}/status has no {field} (a zombie?)")


def reset_peak_rss(pid: int) -> None:
    """Start the process's peak resident set size (VmHWM) over from its size now (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _all() -> dict[int, Stat]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := stat(int(entry))):
            found[int(entry)] = st
    return found


def descendants(root: int) -> dict[int, tuple[str, str]]:
    """Every process below `root` (not `root` itself): pid -> (start time, command line)."""
    children: dict[int, list[int]] = {}
    for pid, st in _all().items():
        children.setdefault(st.ppid, []).append(pid)
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        st = stat(pid)
        if st is None:
            continue
        out[pid] = (st.started, command_line(pid) or "?")
        todo += children.get(pid, [])
    return out


def still_running(procs: dict[int, tuple[str, str]]) -> dict[int, str]:
    """Those of `procs` that still run (the same process: same start time; zombies count as gone)."""
    alive = {}
    for pid, (started, cmd) in procs.items():
        st = stat(pid)
        if st and st.started == started and st.state != "Z":
            alive[pid] = cmd
    return alive


def wait_gone(procs: dict[int, tuple[str, str]], timeout: float = 30.0) -> dict[int, str]:
    """Wait up to `timeout` for `procs` to end; those still running then."""
    deadline = time.monotonic() + timeout
    while (alive := still_running(procs)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def gone(pid: int, started: str) -> bool:
    """The process ran and is now reaped: not running and not a zombie waiting for its parent."""
    st = stat(pid)
    return st is None or st.started != started


def group_members(pgid: int) -> list[int]:
    """The live members (zombies not counted) of process group `pgid`."""
    return [pid for pid, st in _all().items() if st.pgrp == pgid and st.state != "Z"]


def render_children(worker: int) -> list[int]:
    """The live render processes of worker `worker` (its `spawn` children; not its resource tracker)."""
    return [
        pid
        for pid, st in _all().items()
        if st.ppid == worker and st.state != "Z" and "spawn_main" in (command_line(pid) or "")
    ]


def tagged_processes(tag: str) -> list[str]:
    """Live processes (not zombies) carrying `TAG_VAR=tag`, as 'pid cmdline' strings. The test runner's own
    multiprocessing resource tracker (one per process that ever starts a `spawn` child, living as long as that
    process) is not counted: it belongs to pytest, not to the test."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for pid, st in _all().items():
        if pid == os.getpid() or st.state == "Z" or needle not in environ(pid).split(b"\0"):
            continue
        cmd = command_line(pid)
        if cmd is None or ("multiprocessing.resource_tracker" in cmd and st.ppid == os.getpid()):
            continue
        found.append(f"{pid} {cmd}")
    return found
