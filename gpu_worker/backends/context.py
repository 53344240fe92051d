"""One image's render, prepared once before any backend decodes it (imgproxy's context): what was asked, the header,
and the plan of every size on the upright source. The backends differ only in how they decode and resample."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pyvips

from gpu_worker.backends.base import Item
from gpu_worker.backends.plan import SWAPS_AXES, overflows, plan
from thumbify.geometry import Placement
from thumbify.probe import open_image
from thumbify.spec import ThumbnailSpec

Timings = dict[str, float]  # stage -> seconds, summed over the renders that were given the dict


@dataclass(frozen=True)
class RenderContext:
    path: Path
    fmt: str
    spec: ThumbnailSpec
    stem: str
    header: pyvips.Image  # opened for its header only: nothing decoded
    orientation: int  # EXIF 1..8 (anything else counts as upright)
    up_w: int  # full-resolution size as displayed
    up_h: int
    placements: list[Placement]
    timings: Timings | None = None  # the benchmarks' hook: seconds per stage, added up here when given
    turbo: bool = False  # plain JPEGs decoded and thumbnails encoded by libjpeg-turbo 3 (`turbo`), else libvips

    @property
    def swaps_axes(self) -> bool:
        return self.orientation in SWAPS_AXES

    @property
    def largest(self) -> tuple[int, int]:
        """The largest resample of any size: what a shared decode must keep enough pixels for."""
        return max(p.resize_w for p in self.placements), max(p.resize_h for p in self.placements)

    @property
    def pages(self) -> int:
        """Frames (GIF, WebP) or pages the header counts; 1 for a still."""
        return int(self.header.get("n-pages")) if self.header.get_typeof("n-pages") else 1

    def overflows(self) -> bool:
        return any(overflows(p) for p in self.placements)

    def stage(self, name: str) -> AbstractContextManager:
        return stage(self.timings, name)


def prepare(item: Item, timings: Timings | None = None, turbo: bool = False) -> RenderContext:
    """The header read (libvips, the format's own loader), the orientation, and the plan of every size."""
    path, fmt, spec, stem = item
    header = open_image(path, fmt, access="sequential")
    orientation = header.get("orientation") if header.get_typeof("orientation") else 1
    if orientation not in range(1, 9):
        orientation = 1
    w, h = header.width, header.height
    up_w, up_h = (h, w) if orientation in SWAPS_AXES else (w, h)
    placements = plan(up_w, up_h, spec)
    return RenderContext(path, fmt, spec, stem, header, orientation, up_w, up_h, placements, timings, turbo)


def stage(timings: Timings | None, name: str) -> AbstractContextManager:
    """Time the block as stage `name` into `timings`, when the caller asked for them (the benchmarks do)."""
    return nullcontext() if timings is None else _Stage(timings, name)


class _Stage:
    __slots__ = ("timings", "name", "started")

    def __init__(self, timings: Timings, name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.started


__all__ = ["RenderContext", "Timings", "prepare", "stage"]
