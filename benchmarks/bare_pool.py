"""The yardstick of `benchmarks.cli_start`: bare pyvips in a pool, as a whole process of its own.

    python benchmarks/bare_pool.py -o DIR FILE...

One spawned process per core (this process's affinity), libvips concurrency 1 in each, every file through
`pyvips.Image.thumbnail(file, 256, height=256)` + `jpegsave_buffer(Q=80)` and written to DIR. Nothing else: no
checks, no table. The parent imports the standard library only; pyvips is imported in the render processes.
Run as a file, not with -m, so no package `__init__` is imported either.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _start() -> None:
    import pyvips

    pyvips.cache_set_max(0)
    pyvips.vips_lib.vips_concurrency_set(1)


def _thumbnail(path: str, out: str) -> None:
    import pyvips

    data = pyvips.Image.thumbnail(path, 256, height=256).jpegsave_buffer(Q=80)
    (Path(out) / f"thumb_{Path(path).stem}.jpg").write_bytes(data)


def main(argv: list[str]) -> int:
    out, files = argv[1], argv[2:]  # -o DIR FILE...
    Path(out).mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(cores, multiprocessing.get_context("spawn"), initializer=_start) as pool:
        for done in [pool.submit(_thumbnail, f, out) for f in files]:
            done.result()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
