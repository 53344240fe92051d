"""The render side of `thumbify thumbnail`: what its render processes run, and the CLI's own process for its share.

Each image renders in a process of its own at a time, as in the worker: libvips reports the damage it meets in an
image's last strip only in its process-wide error buffer, which threads decoding side by side would share.

A render process starts as cheaply as it can, since a short run pays for its start-up: it is forked (`pool`), or
where it must be spawned, it imports this module, the vips backend (libvips, the spec's model) and nothing of the
command line (typer, rich) nor of pydantic-settings (the CLI hands it the settings it needs as plain values,
`process_settings`); its `__main__` is light too: the console script and `python -m thumbify_cli` import only
`thumbify_cli.__main__`, which imports the app when it runs.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thumbify.animation import AnimationLimits
    from thumbify.settings import Settings
    from thumbify.spec import ThumbnailSpec

# What a render process needs of the settings: probe's limits, libvips' threads per image, the resample headroom,
# the animation limits.
ProcessSettings = tuple[dict[str, int], int, float, "AnimationLimits"]
# One file's outcome: (source, thumbnail names, None), or ("", "", the error's detail).
Outcome = tuple[str, str, str | None]

# Set once per process by `start`: probe's limits and the backend.
_state: tuple[dict[str, int], object] | None = None


def process_settings(settings: Settings) -> ProcessSettings:
    from thumbify.animation import AnimationLimits
    from thumbify.probe import probe_limits

    return (
        probe_limits(settings),
        settings.vips_concurrency,
        settings.resample_headroom,
        AnimationLimits.from_settings(settings),
    )


def start(settings: ProcessSettings) -> None:
    """A render process's one-time set-up: libvips configured as in the worker, one backend."""
    global _state
    from gpu_worker.backends.vips import VipsBackend, configure_vips

    limits, vips_concurrency, headroom, animation = settings
    configure_vips(vips_concurrency)
    # No libjpeg-turbo path: it saves ~0.3 ms a web-size image and nothing on 12 MP photos, and its NumPy import
    # costs ~70 ms of CPU, which a short run never earns back (24 photos: 1.13× the CPU with spawned render processes,
    # each importing it; benchmarks/README.md, "render_cpu").
    _state = (limits, VipsBackend(headroom, turbo=False, animation=animation))


def pool(processes: int, settings: ProcessSettings) -> ProcessPoolExecutor:
    """`processes` render processes, started now (a no-op task each), before any thread of this process starts.

    Forked where this process runs one thread: a forked process has every import made here already, where a
    spawned one imports again (~150 ms of CPU each, the render of five 12 MP photos); safe, as no other thread can
    be caught half-way (no libvips operation has run either: libvips' would have left threads). Spawned otherwise,
    a fresh interpreter as in the worker, from this light module."""
    method = "fork" if _one_thread() else "spawn"
    executor = ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context(method), initializer=start, initargs=(settings,)
    )
    for _ in range(processes):  # the first submit forks them all; spawned, each submit starts one
        executor.submit(int)
    return executor


def _one_thread() -> bool:
    """Whether this process runs a single thread, native ones included (Linux's /proc); False where it cannot tell."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False


def render_file(path: str, out: str, spec: ThumbnailSpec) -> Outcome:
    """Thumbnail one file into `out`."""
    from thumbify.errors import ThumbifyError
    from thumbify.probe import probe
    from thumbify.spec import safe_stem

    limits, backend = _state
    try:
        info = probe(Path(path), **limits)
        renditions = backend.render(Path(path), info.format, spec, safe_stem(Path(path).name))
        names = []
        for r in renditions:
            (Path(out) / r.name).write_bytes(r.data)
            names.append(r.name)
            if r.facts:  # `--facts`: beside the thumbnails, as the job's `source.facts` shows them
                facts_name = f"thumb_{safe_stem(Path(path).name)}.facts.json"
                (Path(out) / facts_name).write_text(json.dumps(r.facts, indent=2) + "\n")
                names.append(facts_name)
    except ThumbifyError as exc:
        return "", "", exc.detail
    return f"{info.width}x{info.height} {info.format}", ", ".join(names), None
