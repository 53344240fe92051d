"""Per-image routing on GPU nodes: which backend renders each image of a batch.

    route(format, (width, height, pages), one_shot_max_pixels):
        more than one page or frame      → vips   (the first frame, streamed, as the vips backend does it)
        over the one-shot pixel cap      → tiles  (strips through the GPU kernels: GPU memory bounded by a strip)
        not JPEG, PNG or WebP            → vips   (DALI's decoders do not take it here)
        anything else                    → dali   (one pipeline run per batch)

That first cut needs only what the API's probe stored in the job (`job.source`: format, width, height, pages), so
the worker makes it before the image is fetched. DALI makes the second cut itself after reading the header and the
file's structure (`DaliBackend.refusal`: CMYK, alpha, 16-bit, a grey ICC profile, damage) and hands those images to
its fallback, as it does an image that fails inside its pipeline: only that image, never its batch. `RoutedBackend`
gives DALI a fallback that renders on vips in this process or, with `defer_vips` (the worker's GPU render process),
answers `Deferred`, so the worker renders the image in its CPU render processes and the GPU process goes on with
the next batch. A tiles render that fails for any reason but a corrupt file (CUDA out of memory, a driver error)
is retried on vips the same way; a DALI batch that fails as a whole (the pipeline cannot be built) sends every
image in it to vips.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
from thumbify.errors import ThumbifyError
from thumbify.probe import open_image
from thumbify.spec import ThumbnailSpec

log = logging.getLogger(__name__)

Route = Literal["dali", "tiles", "vips"]
Item = tuple[Path, str, ThumbnailSpec, str]  # (source path, sniffed format, spec, stem): as `Backend.render` takes
Hint = tuple[int, int, int]  # (width, height, pages) from the probe
Result = list[Rendition] | Exception
# What DALI's decoders take: `dali.DALI_FORMATS` (a test keeps them equal). Not imported from there: this module is
# on every worker's import path, and the DALI backend needs NumPy, which CPU-only installs do not have.
DALI_FORMATS = frozenset({"jpeg", "png", "webp"})
DEFAULT_ONE_SHOT_MAX_PIXELS = 64_000_000
DEFAULT_STRIP_ROWS = 256


class Deferred(Exception):
    """An item's result when the router leaves it to vips in another process (`defer_vips`): not an error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hint_from_source(source: dict[str, Any]) -> Hint | None:
    """(width, height, pages) from a job's `source` as the API stored it; None if it lacks them."""
    try:
        width, height = int(source["width"]), int(source["height"])
        pages = int(source.get("pages") or 1)
    except (KeyError, TypeError, ValueError):
        return None
    return (width, height, pages) if width > 0 and height > 0 else None


def route(fmt: str, hint: Hint, one_shot_max_pixels: int) -> tuple[Route, str]:
    """Which backend takes an image of format `fmt` and size `hint`, and why."""
    width, height, pages = hint
    if pages > 1:
        return "vips", f"{pages} pages or frames"
    if width * height > one_shot_max_pixels:
        return "tiles", f"{width}x{height} is over the one-shot cap of {one_shot_max_pixels:,} pixels"
    if fmt not in DALI_FORMATS:
        return "vips", f"DALI does not decode {fmt} here"
    return "dali", "a still JPEG, PNG or WebP under the one-shot cap"


class _VipsFallback:
    """DALI's fallback: notes each image it is handed, then renders it on vips or defers it."""

    def __init__(self, vips: VipsBackend, defer: bool) -> None:
        self.vips = vips
        self.defer = defer
        self.paths: list[Path] = []

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        self.paths.append(path)
        if self.defer:
            raise Deferred("DALI refused the image or failed on it")
        return self.vips.render(path, fmt, spec, stem)


class RoutedBackend:
    """dali + tiles + vips behind one backend: `render_batch` sends each image where `route` says, and to vips where
    DALI or tiles cannot render it. Picklable until `start` (it then holds a DALI pipeline)."""

    def __init__(
        self,
        device: str = "gpu",
        *,
        name: str | None = None,
        device_id: int = 0,
        one_shot_max_pixels: int = DEFAULT_ONE_SHOT_MAX_PIXELS,
        strip_rows: int = DEFAULT_STRIP_ROWS,
        headroom: float = DEFAULT_HEADROOM,
        defer_vips: bool = False,
        **dali_options: Any,
    ) -> None:
        """`dali_options` go to `DaliBackend` as they are (max_batch, num_threads, hw_decoder_load, ...)."""
        if device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', not {device!r}")
        self.name = name or device
        self.device = device
        self.device_id = device_id
        self.headroom = headroom
        self.dali_options = {**dali_options, "max_pixels": one_shot_max_pixels, "headroom": headroom}
        self.one_shot_max_pixels = one_shot_max_pixels
        self.strip_rows = strip_rows
        self.defer_vips = defer_vips
        self.vips = VipsBackend(headroom)
        self.routes: Counter[str] = Counter()  # which backend rendered each image, over this backend's life
        self.last_routes: list[str] = []  # the same for the last batch, in its order
        self._fallback = _VipsFallback(self.vips, defer_vips)
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
            defer_vips=defer_vips,
        )

    # -- life cycle -----------------------------------------------------------------------------------------------

    @property
    def dali(self):
        if self._dali is None:
            from gpu_worker.backends.dali import DaliBackend

            device_id = self.device_id if self.device == "gpu" else None
            self._dali = DaliBackend(self.device, device_id=device_id, fallback=self._fallback, **self.dali_options)
        return self._dali

    @property
    def tiles(self):
        """The tiles backend, or None where it cannot load (then vips takes the huge images: it streams too)."""
        if self._tiles is None and self.tiles_missing is None:
            try:
                from gpu_worker.backends.tiles import TilesBackend

                self._tiles = TilesBackend(
                    self.device, strip_rows=self.strip_rows, headroom=self.headroom, device_id=self.device_id
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

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        (result,) = self.render_batch([(path, fmt, spec, stem)])
        if isinstance(result, BaseException):
            raise result
        return result

    def render_batch(
        self,
        items: Sequence[Item],
        hints: Sequence[Hint | None] | None = None,
        on_result: Callable[[int, Result], None] | None = None,
    ) -> list[Result]:
        """One result per item, in order: its renditions, or the exception rendering it raised (`Deferred` for
        one left to vips elsewhere). `hints` are the items' probed sizes (read from the header where missing);
        `on_result(index, result)` is called as each result is known."""
        results: list[Result | None] = [None] * len(items)
        routes = [""] * len(items)

        def done(index: int, result: Result, where: str) -> None:
            results[index], routes[index] = result, where
            if on_result is not None:
                on_result(index, result)

        groups: dict[str, list[int]] = {"dali": [], "tiles": [], "vips": []}
        for index, item in enumerate(items):
            groups[self.choose(item, hints[index] if hints else None)].append(index)
        if groups["dali"]:
            self._run_dali(items, groups["dali"], done)
        for index in groups["tiles"]:
            self._run_tiles(items[index], index, done)
        for index in groups["vips"]:
            done(index, self._on_vips(items[index]), "vips")
        self.last_routes = routes
        self.routes.update(routes)
        return results  # type: ignore[return-value]  # every slot is filled above

    def choose(self, item: Item, hint: Hint | None = None) -> Route:
        path, fmt, _, _ = item
        if hint is None:
            try:
                header = open_image(path, fmt, access="sequential")
                pages = header.get("n-pages") if header.get_typeof("n-pages") else 1
                hint = (header.width, header.height, pages)
            except Exception:  # unreadable: vips says what is wrong with it
                return "vips"
        where, reason = route(fmt, hint, self.one_shot_max_pixels)
        if where == "tiles" and self.tiles is None:
            where, reason = "vips", f"{reason}, and the tiles backend cannot load"
        log.debug("%s → %s: %s", path.name, where, reason)
        return where

    def _run_dali(self, items: Sequence[Item], indices: list[int], done: Callable[[int, Result, str], None]) -> None:
        self._fallback.paths.clear()
        try:
            out = self.dali.render_batch([items[i] for i in indices])
        except Exception as exc:  # the pipeline could not be built or run at all (device lost, out of memory)
            log.warning("DALI failed on a whole batch of %d (%s); vips takes each image", len(indices), exc)
            for index in indices:
                done(index, self._on_vips(items[index]), "vips")
            return
        handed = set(self._fallback.paths)
        for index, result in zip(indices, out, strict=True):
            done(index, result, "vips" if items[index][0] in handed else "dali")

    def _run_tiles(self, item: Item, index: int, done: Callable[[int, Result, str], None]) -> None:
        result: Result
        try:
            result = self.tiles.render(*item)  # `choose` sent it here: the backend is loaded
        except ThumbifyError as exc:  # a corrupt file: vips would say the same
            result = exc
        except Exception as exc:  # out of GPU memory, a driver error: not the image's fault
            log.warning("tiles failed on %s (%s: %s); vips takes it", item[0].name, type(exc).__name__, exc)
            done(index, self._on_vips(item), "vips")
            return
        done(index, result, "tiles")

    def _on_vips(self, item: Item) -> Result:
        if self.defer_vips:
            return Deferred("routed to vips")
        try:
            return self.vips.render(*item)
        except Exception as exc:
            return exc


__all__ = [
    "DALI_FORMATS",
    "Deferred",
    "Hint",
    "RoutedBackend",
    "hint_from_source",
    "route",
]
