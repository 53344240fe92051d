"""Where a worker's images render: its vips render processes and, on GPU nodes, its GPU render process.

`route.decide` says where an image belongs; `Renderers.render` sends it there, with two exceptions:
- an image the GPU backend refuses (`Refused`) renders on vips;
- spill (`GPU_SPILL`, on by default): while vips processes are idle, they take the newest DALI images waiting for
  the GPU that would not be in its next batch (one is rendering, or more wait than a batch holds). Looked for when
  a DALI image arrives and when a vips render ends, so the node's cores work beside its GPU under load (its
  throughput is about the sum of both) instead of waiting for the odd GIF or refused file, while a lone image still
  goes to the GPU. Only DALI's images spill: those past the one-shot cap stay on tiles (GPU memory bounded by a
  strip).

`benchmarks/gpu_vs_cpu.py`'s `node` rows run this same arrangement.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from gpu_worker.backends.base import Refused, Rendition, Route
from gpu_worker.metrics import RENDERS
from gpu_worker.pool import SPILLED, BatchRenderer, RenderPool
from thumbify.spec import ThumbnailSpec


class Renderers:
    def __init__(self, vips: RenderPool, gpu: BatchRenderer | None = None, spill: bool = True) -> None:
        self.vips = vips
        self.gpu = gpu
        self.spill = spill
        self._vips_counts: Counter[tuple[str, str]] = Counter()
        self._spilling = 0  # images taken back from the GPU whose vips render has not been asked for yet

    @property
    def counts(self) -> Counter[tuple[str, str]]:
        """(backend, why) -> images handed to it, as `thumbify_renders_total` counts them."""
        gpu = Counter({(route, "routed"): n for route, n in self.gpu.routes.items()}) if self.gpu else Counter()
        return self._vips_counts + gpu

    async def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str, where: Route) -> list[Rendition]:
        """The image's renditions from the backend it was routed to (`where`), or from vips (see the module)."""
        why = "routed"
        if self.gpu is not None and where != "vips":
            future = self.gpu.submit(path, fmt, spec, stem, where)
            self._offload()
            try:
                result = await future
            finally:  # also when this job is cancelled meanwhile: the reservation ends with it
                if _spilled(future):
                    self._spilling -= 1
            if not isinstance(result, Refused):
                return result
            why = "spilled" if result is SPILLED else "refused"
        self._vips_counts["vips", why] += 1
        RENDERS.labels("vips", why).inc()
        try:
            return await self.vips.render(path, fmt, spec, stem)
        finally:
            self._offload()

    def _offload(self) -> None:
        """Hand idle vips processes the GPU's spillable images (each one's own `render` call then takes a process)."""
        if self.spill and self.gpu is not None:
            self._spilling += self.gpu.take_spillable(self.vips.idle() - self._spilling)


def jobs_in_flight(processes: int, gpu_batch: int = 0) -> int:
    """Jobs a worker holds: twice its vips render processes, so the next images are fetched while the current ones
    render, and on GPU nodes two GPU batches more (one renders while the next gathers)."""
    return max(2, processes * 2) + 2 * gpu_batch


def _spilled(future: asyncio.Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None and future.result() is SPILLED
