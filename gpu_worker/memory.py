"""Keep a long-running libvips process's memory from creeping."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> None:
    """The effect of `MALLOC_ARENA_MAX=2`, applied from inside the process: glibc otherwise gives each image
    thread its own arena, and their freed pages are rarely given back. Done before any image thread starts."""
    os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas))  # for any child process
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "mallopt"):
            libc.mallopt(_M_ARENA_MAX, arenas)
    except OSError:
        pass
