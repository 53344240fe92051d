"""Per-image routing on GPU nodes: which backend renders each image, decided once per image, here (`decide`).

    route(format, (width, height, pages), one_shot_max_pixels):
        more than one page or frame      → vips   (the first frame, streamed, as the vips backend does it; or,
                                                   with `animated=true`, every frame: only vips animates)
        over the one-shot pixel cap      → tiles  (strips through the GPU kernels: GPU memory bounded by a strip)
        not JPEG, PNG or WebP            → vips   (DALI's decoders do not take it here)
        anything else                    → dali   (one pipeline run per batch)

The decision needs only what the API's probe stored in the job (`job.source`: format, width, height, pages), so the
worker makes it before the image reaches any render process: what goes to vips never reaches the GPU process, and
the GPU process renders each image where the worker sent it. After that a GPU backend can only refuse an image
(`base.Refused`): DALI after reading the header and the file's structure (`DaliBackend.refusal`: CMYK, alpha,
16-bit, a grey ICC profile, damage) or after failing on it alone; tiles when it cannot load or fails for any reason
but a corrupt file (CUDA out of memory, a driver error); and both for every image of a batch that fails as a whole.
`RoutedBackend` renders a refused image on vips in this process or, with `defer_vips` (the worker's GPU render
process), answers the refusal, so the worker renders it in its vips render processes and the GPU process goes on
with the next batch. Under load the worker may also render an image routed to DALI on an idle vips process instead
of letting it wait for the GPU (spill: gpu_worker/renderers.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gpu_worker.backends.base import (
    DALI_FORMATS,
    ONE_SHOT_MAX_PIXELS,
    BatchBackend,
    Item,
    OnResult,
    Refused,
    Rendition,
    Result,
    Route,
    SourceSize,
    refer,
    render_alone,
)
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
from thumbify.animation import DEFAULT_LIMITS, AnimationLimits
from thumbify.probe import open_image

log = logging.getLogger(__name__)

DEFAULT_STRIP_ROWS = 256


def source_size(source: dict[str, Any]) -> SourceSize | None:
    """(width, height, pages) from a job's `source` as the API stored it; None if it lacks them."""
    try:
        width, height = int(source["width"]), int(source["height"])
        pages = int(source.get("pages") or 1)
    except (KeyError, TypeError, ValueError):
        return None
    return (width, height, pages) if width > 0 and height > 0 else None


def read_source_size(path: Path, fmt: str) -> SourceSize | None:
    """(width, height, pages) from the file's header; None if it cannot be read (vips says what is wrong)."""
    try:
        header = open_image(path, fmt, access="sequential")
        pages = header.get("n-pages") if header.get_typeof("n-pages") else 1
        return header.width, header.height, pages
    except Exception:
        return None


def route(fmt: str, size: SourceSize, one_shot_max_pixels: int) -> tuple[Route, str]:
    """Which backend takes an image of format `fmt` and size `size`, and why."""
    width, height, pages = size
    if pages > 1:
        return "vips", f"{pages} pages or frames"
    if width * height > one_shot_max_pixels:
        return "tiles", f"{width}x{height} is over the one-shot cap of {one_shot_max_pixels:,} pixels"
    if fmt not in DALI_FORMATS:
        return "vips", f"DALI does not decode {fmt} here"
    return "dali", "a still JPEG, PNG or WebP under the one-shot cap"


def decide(path: Path, fmt: str, size: SourceSize | None, one_shot_max_pixels: int) -> Route:
    """The one routing decision for an image: by its probed `size`, read from its header where missing."""
    size = size or read_source_size(path, fmt)
    if size is None:
        return "vips"
    where, reason = route(fmt, size, one_shot_max_pixels)
    log.debug("%s → %s: %s", path.name, where, reason)
    return where


class RoutedBackend:
    """dali + tiles + vips behind one batch backend: `render_batch` sends each image where it was routed (`decide`,
    unless the caller decided already) and a refused one to vips. Picklable until `start` (it then holds a DALI
    pipeline)."""

    def __init__(
        self,
        device: str = "gpu",
        *,
        name: str | None = None,
        device_id: int = 0,
        one_shot_max_pixels: int = ONE_SHOT_MAX_PIXELS,
        strip_rows: int = DEFAULT_STRIP_ROWS,
        headroom: float = DEFAULT_HEADROOM,
        defer_vips: bool = False,
        timings: dict[str, float] | None = None,
        animation: AnimationLimits = DEFAULT_LIMITS,
        **dali_options: Any,
    ) -> None:
        """`dali_options` go to `DaliBackend` as they are (max_batch, num_threads, hw_decoder_load, ...)."""
        if device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', not {device!r}")
        self.name = name or device
        self.device = device
        self.device_id = device_id
        self.headroom = headroom
        self.timings = timings  # seconds per stage, added up here when given (the benchmarks' hook)
        self.dali_options = {**dali_options, "max_pixels": one_shot_max_pixels, "headroom": headroom}
        self.one_shot_max_pixels = one_shot_max_pixels
        self.strip_rows = strip_rows
        self.defer_vips = defer_vips
        self.vips = VipsBackend(headroom, timings, animation=animation)
        self.routes: Counter[str] = Counter()  # which backend rendered each image, over this backend's life
        self.last_routes: list[str] = []  # the same for the last batch, in its order
        self._dali: Any = None
        self._tiles: Any = None
        self.tiles_missing: str | None = None

    @classmethod
    def from_settings(cls, settings, device: str = "gpu", name: str | None = None, defer_vips: bool = False):
        return cls(
            device,
            name=name,
            device_id=settings.gpu_device_id,
            max_batch=settings.dali_max_batch,
            num_threads=settings.dali_threads,
            hw_decoder_load=settings.dali_hw_decoder_load,
            preallocate_width_hint=settings.dali_prealloc_width,
            preallocate_height_hint=settings.dali_prealloc_height,
            one_shot_max_pixels=settings.one_shot_max_pixels,
            strip_rows=settings.tiles_strip_rows,
            headroom=settings.resample_headroom,
            defer_vips=defer_vips,
            animation=AnimationLimits.from_settings(settings),
        )

    # -- life cycle -----------------------------------------------------------------------------------------------

    @property
    def dali(self):
        if self._dali is None:
            from gpu_worker.backends.dali import DaliBackend

            device_id = self.device_id if self.device == "gpu" else None
            self._dali = DaliBackend(self.device, device_id=device_id, timings=self.timings, **self.dali_options)
        return self._dali

    @property
    def tiles(self):
        """The tiles backend, or None where it cannot load (then it refuses the huge images: vips streams them)."""
        if self._tiles is None and self.tiles_missing is None:
            try:
                from gpu_worker.backends.tiles import TilesBackend

                self._tiles = TilesBackend(
                    self.device,
                    strip_rows=self.strip_rows,
                    headroom=self.headroom,
                    device_id=self.device_id,
                    timings=self.timings,
                )
            except Exception as exc:
                self.tiles_missing = f"{type(exc).__name__}: {exc}"
                log.error("the tiles backend cannot load (%s); vips takes the images past the cap", exc)
        return self._tiles

    def start(self) -> None:
        """Build the DALI pipeline (nvJPEG and the hardware decoder initialise here) and load the tiles backend, so
        that the first batch pays for neither."""
        self.dali.start()
        _ = self.tiles

    def close(self) -> None:
        if self._dali is not None:
            self._dali.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_dali"] = state["_tiles"] = None  # built again where it is unpickled
        return state

    # -- rendering --------------------------------------------------------------------------------------------------

    def render(self, path: Path, fmt: str, spec, stem: str) -> list[Rendition]:
        return render_alone(self, (path, fmt, spec, stem), self.vips)

    def decide(self, item: Item, size: SourceSize | None = None) -> Route:
        return decide(item[0], item[1], size, self.one_shot_max_pixels)

    def render_batch(
        self, items: Sequence[Item], on_result: OnResult | None = None, routes: Sequence[Route] | None = None
    ) -> list[Result]:
        """One result per item, in order (the `BatchBackend` contract); `Refused` only with `defer_vips`."""
        routes = list(routes) if routes is not None else [self.decide(item) for item in items]
        results: list[Result | None] = [None] * len(items)
        rendered_on = list(routes)

        def done(index: int, result: Result) -> None:
            if isinstance(result, Refused):
                rendered_on[index] = "vips"
                result = refer(items[index], result, None if self.defer_vips else self.vips)
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        for where, backend in (("dali", lambda: self.dali), ("tiles", lambda: self.tiles)):
            indices = [i for i, r in enumerate(routes) if r == where]
            if indices:
                self._run(backend(), where, items, indices, done)
        for index, where in enumerate(routes):
            if where == "vips":
                done(index, Refused("routed to vips"))
        self.last_routes = rendered_on
        self.routes.update(rendered_on)
        return results  # type: ignore[return-value]  # every slot is filled above

    def _run(self, backend: BatchBackend | None, where: str, items: Sequence[Item], indices: list[int], done) -> None:
        if backend is None:
            for index in indices:
                done(index, Refused(f"the {where} backend cannot load"))
            return
        answered: set[int] = set()

        def answer(k: int, result: Result) -> None:
            answered.add(indices[k])
            done(indices[k], result)

        try:
            backend.render_batch([items[i] for i in indices], on_result=answer)
        except Exception as exc:  # the pipeline could not be built or run at all (device lost, out of memory)
            log.warning("%s failed on a whole batch of %d (%s); vips takes each image", where, len(indices), exc)
            for index in indices:
                if index not in answered:
                    done(index, Refused(f"{where} failed on its whole batch ({type(exc).__name__})"))


__all__ = ["DEFAULT_STRIP_ROWS", "RoutedBackend", "decide", "read_source_size", "route", "source_size"]
