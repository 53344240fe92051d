"""The huge-image backend: libvips decodes sequential row strips, `kernels` resamples them as they come.

For images over the one-shot pixel cap. One job is one short list of steps:

    the prepared context (`context.prepare`: header, plan) → open for sequential access, shrunk on load where the
    format allows (JPEG's DCT scaling, WebP's scaled decode; the rule and headroom of the vips backend) → read strips in
    order into a small ring of host buffers (page-locked on the GPU) on a reader thread, so libvips decodes strip
    k+1 while strip k is resampled → each strip (premultiplied if it has alpha) to `kernels.StripResampler`, on
    CuPy (device="gpu") or its NumPy twin (device="cpu"), to one small image → the shared finishing steps
    (`finishing.render_sizes`: per size resize → upright → sRGB → crop or pad → flatten → encode) from that image.

What the strip driver resamples to: with one size and an exact decode (no DCT shrink), that size itself, so the
finishing resize is the identity and every output pixel is one Lanczos-3 pass over the source; otherwise the vips
backend's shared intermediate, `headroom`× the largest size (`plan.intermediate_scale`), from which every size is
cut. The source's exact extent rides along as the vips backend's does: a JPEG decoded at 1/s has floor(n / s)
pixels but covers n / s of them, and the driver maps decoded pixels onto output pixels by their ratio, so the
extent scales by exactly that ratio and the finishing resize uses it.

Colour: pixels are resampled as decoded (as the vips backend and DALI do: resample first, convert the small
image), so a CMYK or ICC-tagged source costs one colour transform on the intermediate, not on a gigapixel image; the
intermediate carries the source's interpretation and profile, and `finishing` converts it to sRGB. Only samples the
kernels cannot take (float, 32-bit, signed) are turned into 8-bit sRGB before the strips are read. 16-bit samples
stay 16-bit through the kernels; `finishing` makes them 8-bit at the end.

Alpha: resampled premultiplied (as `finishing.resize` does), so transparent pixels do not bleed their hidden colour
into visible edges. 8-bit RGBA is premultiplied into 16 bits per strip (value·alpha·257/255, alpha·257), so
premultiplying loses nothing; 16-bit is premultiplied in 16 bits. The intermediate is unpremultiplied back to the
source's depth. On the GPU this runs on the device, on the uploaded strip.

Memory, whatever the image size: the strip driver holds O(strip_rows × out_w + vertical taps × out_w + out_w ×
out_h) floats — the strip's horizontal pass, the short tail of rows pending output rows still read, and the output —
and never the image; on the GPU that is the device memory, plus one device copy of the strip. The host holds the
ring of two strip buffers (2 × strip_rows × width × bands × bytes per sample: 2 × 256 × 30000 × 3 B = 46 MB),
libvips' own sequential read-behind, and the small intermediate (bounded by the spec's sizes, not the source).
(libvips maps a JPEG source file into memory to decode it, as it does for the vips backend: the pages read count
in RSS as clean, reclaimable file pages, up to the file's size; anonymous memory stays as above.) A
`cover` of an extreme aspect ratio, which `finishing.cut_overflow` cuts to a band first, is refused (the vips
backend renders it: it streams too): the band's pixel density would make the intermediate as large as the cut avoids.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyvips

from gpu_worker.backends.base import Backend, Item, OnResult, Refused, Rendition, Result, Route, refer
from gpu_worker.backends.context import RenderContext, Timings, prepare, stage
from gpu_worker.backends.decode import Source, decode_errors, decoded, decoded_upright, load_source
from gpu_worker.backends.devices import cupy_unavailable

# `to_srgb`: the shared "to 8-bit sRGB" step, here only for samples the kernels cannot take
from gpu_worker.backends.finishing import render_sizes, to_srgb
from gpu_worker.backends.plan import intermediate_scale
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
from kernels import StripResampler, get_backend
from thumbify.animation import animates
from thumbify.errors import ThumbifyError
from thumbify.spec import ThumbnailSpec

log = logging.getLogger(__name__)

# Rows per strip: large enough that a strip's kernel launches (or NumPy passes) are not dominated by per-call
# overhead, small enough that the ring of two strips stays a few tens of MB on a 30000 px wide image.
DEFAULT_STRIP_ROWS = 256
_KERNEL_FORMATS = {"uchar": np.uint8, "ushort": np.uint16}
_VIPS_FORMATS = {np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort"}


def tiles_unavailable(device: str = "gpu") -> str | None:
    """Why this machine cannot run the tiles backend on `device`, or None if it can ("cpu" always can)."""
    return None if device == "cpu" else cupy_unavailable()


class TilesBackend:
    name = "tiles"

    def __init__(
        self,
        device: str = "gpu",
        *,
        strip_rows: int = DEFAULT_STRIP_ROWS,
        headroom: float = DEFAULT_HEADROOM,
        device_id: int = 0,
        fallback: Backend | None = None,
        timings: Timings | None = None,
    ) -> None:
        """`fallback` renders what this backend refuses (`render`: a vips backend where none is given); without one
        `render_batch` answers `Refused` for it."""
        if device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', not {device!r}")
        if strip_rows < 1:
            raise ValueError("strip_rows must be at least 1")
        self.device = device
        self.strip_rows = strip_rows
        self.headroom = headroom
        self.device_id = device_id
        self.fallback = fallback
        self.timings = timings  # seconds per stage, added up here when given (the benchmarks' hook)
        # The last render's strip driver, for checking the memory bound (`peak_bytes`) in tests and benchmarks.
        self.last_driver: StripResampler | None = None
        self._stream = None  # the CUDA stream every GPU render of this backend uses (`_gpu_stream`)

    # -- the Backend and BatchBackend protocols ---------------------------------------------------------------------

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        result = self._render_or_refuse((path, fmt, spec, stem))
        if isinstance(result, Refused):
            log.debug("%s goes to vips: %s", path.name, result.reason)
            return (self.fallback or VipsBackend(self.headroom, self.timings)).render(path, fmt, spec, stem)
        return result

    def render_batch(
        self, items: Sequence[Item], on_result: OnResult | None = None, routes: Sequence[Route] | None = None
    ) -> list[Result]:
        """One image after another; what fails for any reason but a corrupt file (CUDA out of memory, a driver
        error: not the image's fault) is refused, so vips renders it."""
        results: list[Result] = []
        for index, item in enumerate(items):
            result: Result
            try:
                result = self._render_or_refuse(item)
            except ThumbifyError as exc:  # a corrupt file: vips would say the same
                result = exc
            except Exception as exc:
                log.warning("tiles failed on %s (%s: %s); vips takes it", item[0].name, type(exc).__name__, exc)
                result = Refused(f"the tiles backend failed on it ({type(exc).__name__})")
            result = refer(item, result, self.fallback)
            results.append(result)
            if on_result is not None:
                on_result(index, result)
        return results

    def start(self) -> None:
        pass  # nothing to build ahead: the kernels compile on first use and are cached

    def close(self) -> None:
        pass

    def _render_or_refuse(self, item: Item) -> list[Rendition] | Refused:
        with decode_errors(item[1]):
            ctx = prepare(item, self.timings)
            if ctx.overflows():
                return Refused("a cover of an extreme aspect ratio")
            if animates(ctx.spec, ctx.fmt, ctx.pages):
                return Refused("an animation that animated=true keeps (only vips renders every frame)")
            return self._render(ctx)

    def _render(self, ctx: RenderContext) -> list[Rendition]:
        source, shrink = load_source(ctx, self.headroom)
        image, placements = source.image, ctx.placements
        # What the strip driver makes (upright): see the module's docstring.
        if len(placements) == 1 and shrink == 1:
            target_w, target_h = placements[0].resize_w, placements[0].resize_h
        else:
            scale = intermediate_scale(source.extent_w, source.extent_h, *ctx.largest, self.headroom)
            dec_w, dec_h = decoded_upright(image, ctx.orientation)
            target_w, target_h = max(1, round(dec_w * scale)), max(1, round(dec_h * scale))
        out_w, out_h = (target_h, target_w) if ctx.swaps_axes else (target_w, target_h)  # as stored

        image = _kernel_ready(image)
        if (out_w, out_h) == (image.width, image.height):
            # Already the size wanted (a small source): nothing to resample, and small enough to hold.
            source = replace(source, image=decoded(image.copy_memory))
        else:
            pixels = self._resample(image, out_w, out_h)
            fx, fy = out_w / image.width, out_h / image.height  # the driver maps decoded pixels by this ratio
            if ctx.swaps_axes:
                fx, fy = fy, fx
            small = _to_vips(pixels, image, ctx.orientation)
            source = Source(small, ctx.orientation, ctx.up_w, ctx.up_h, source.extent_w * fx, source.extent_h * fy)
        return render_sizes(ctx, source)

    # -- resample ----------------------------------------------------------------------------------------------

    def _resample(self, image: pyvips.Image, out_w: int, out_h: int) -> np.ndarray:
        """`image` (uchar/ushort, any bands) read in strips and resampled to out_w × out_h: an H×W×C array of
        the image's sample type, unpremultiplied."""
        if self.device == "gpu":
            return self._resample_gpu(image, out_w, out_h)
        alpha = bool(image.hasalpha())
        driver = self.last_driver = StripResampler(image.width, image.height, out_w, out_h, backend="numpy")
        for strip in _strips(image, self.strip_rows, np.empty):
            with stage(self.timings, "resize"):
                driver.push(_premultiply(strip, np) if alpha else strip)
        with stage(self.timings, "resize"):
            out = driver.result()
        return _unpremultiply(out, _sample_type(image)) if alpha else out

    def _resample_gpu(self, image: pyvips.Image, out_w: int, out_h: int) -> np.ndarray:
        import cupy as cp

        alpha = bool(image.hasalpha())
        with cp.cuda.Device(self.device_id):
            stream = self._gpu_stream()
            clock = _GpuClock(self.timings, stream)
            with stream:  # the copies, the premultiply and the driver's kernels all run on this stream, in order
                driver = StripResampler(image.width, image.height, out_w, out_h, backend=get_backend("cupy"))
                self.last_driver = driver
                for host in _strips(image, self.strip_rows, _pinned):
                    with clock("copy"):
                        strip = cp.empty(host.shape, host.dtype)
                        strip.set(host, stream=stream)  # asynchronous: the buffer is page-locked
                    copied = stream.record()
                    with clock("resize"):
                        driver.push(_premultiply(strip, cp) if alpha else strip)
                    # The reader refills this buffer once it is handed back: only after the copy has landed.
                    copied.synchronize()
                with clock("resize"):
                    out = driver.result()
                with clock("copy"):
                    out = out.get(stream=stream)
                stream.synchronize()
            clock.add_up()
        return _unpremultiply(out, _sample_type(image)) if alpha else out

    def _gpu_stream(self):
        """This backend's one CUDA stream, made on first use and kept: a stream per image would defeat CuPy's
        memory pool, which reuses freed device blocks only on the stream that freed them."""
        import cupy as cp

        if self._stream is None:
            self._stream = cp.cuda.Stream(non_blocking=True)
        return self._stream


class _GpuClock:
    """Stage times on the GPU itself, from CUDA events recorded on the stream around each block (when the caller
    asked for timings): a host timer around a kernel launch measures only the queueing."""

    def __init__(self, timings: Timings | None, stream) -> None:
        self.timings, self.stream = timings, stream
        self.spans: list[tuple[str, object, object]] = []

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.timings is None:
            yield
            return
        begin = self.stream.record()
        yield
        self.spans.append((name, begin, self.stream.record()))

    def add_up(self) -> None:
        """After the stream has finished: each span's milliseconds into `timings`, as seconds."""
        import cupy as cp

        for name, begin, end in self.spans:
            self.timings[name] = self.timings.get(name, 0.0) + cp.cuda.get_elapsed_time(begin, end) / 1000
        self.spans.clear()


# -- strips --------------------------------------------------------------------------------------------------------

_DONE = object()


def _strips(image: pyvips.Image, rows: int, alloc: Callable[..., np.ndarray]) -> Iterator[np.ndarray]:
    """`image` top to bottom as [rows, width, bands] arrays in a ring of two buffers made by `alloc(shape, dtype)`
    (page-locked ones for the GPU), filled on a reader thread: libvips decodes the next strip while the caller works
    on this one. A strip is valid until the caller asks for the next.

    The reader is one libvips pipeline that writes the image's raw samples, in order, to a target whose callback
    copies them into the buffers (`rawsave_target`: libvips' own sequential sink, with its thread pool). A pipeline
    per strip (`crop(...).write...`) is not safe on a sequential image: two of them may both ask the loader for a
    region it has already read past ("out of order read"), depending on the loader's chunking and the strip height.
    A full ring holds the reader, and with it the decoder, until the caller hands a buffer back."""
    w, h, bands = image.width, image.height, image.bands
    dtype = np.dtype(_KERNEL_FORMATS[image.format])
    rows = min(rows, h)
    row_bytes = w * bands * dtype.itemsize
    free: queue.Queue = queue.Queue()
    full: queue.Queue = queue.Queue()
    for _ in range(2):
        free.put(alloc((rows, w, bands), dtype))
    state = {"buf": None, "flat": None, "filled": 0, "y": 0, "stopped": False}

    def take() -> bool:
        buf = free.get()
        if buf is None:  # the caller stopped early
            state["stopped"] = True
            return False
        state["buf"], state["flat"], state["filled"] = buf, buf.reshape(-1).view(np.uint8), 0
        return True

    def hand_over() -> None:
        n = min(rows, h - state["y"])
        full.put((state["buf"][:n], state["buf"]))
        state["y"] += n
        state["buf"] = None

    def on_write(chunk) -> int:
        data = np.frombuffer(chunk, np.uint8)
        at = 0
        while at < len(data):
            if state["buf"] is None and not take():
                return -1  # fails the write: libvips stops decoding
            strip_bytes = min(rows, h - state["y"]) * row_bytes
            n = min(len(data) - at, strip_bytes - state["filled"])
            state["flat"][state["filled"] : state["filled"] + n] = data[at : at + n]
            state["filled"] += n
            at += n
            if state["filled"] == strip_bytes:
                hand_over()
        return len(data)

    def read() -> None:
        try:
            target = pyvips.TargetCustom()
            target.on_write(on_write)
            decoded(lambda: image.rawsave_target(target))
            if state["y"] != h:
                raise pyvips.Error("the decoder stopped early", f"{state['y']} of {h} rows decoded")
            full.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
            full.put(None if state["stopped"] else exc)

    reader = threading.Thread(target=read, name="tiles-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = full.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            view, buf = item
            yield view
            free.put(buf)
    finally:
        free.put(None)
        free.put(None)
        reader.join()


def _pinned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A page-locked host array (from CuPy's pinned pool: reused across strips and images)."""
    import cupy as cp

    count = int(np.prod(shape))
    memory = cp.cuda.alloc_pinned_memory(count * np.dtype(dtype).itemsize)
    return np.frombuffer(memory, dtype, count).reshape(shape)


# -- samples -------------------------------------------------------------------------------------------------------


def _kernel_ready(image: pyvips.Image) -> pyvips.Image:
    """`image` as it is where the kernels take its samples (8 or 16 bits unsigned); else 8-bit sRGB."""
    if image.format in _KERNEL_FORMATS:
        return image
    image = to_srgb(image)
    return image if image.format == "uchar" else image.cast("uchar")


def _sample_type(image: pyvips.Image) -> np.dtype:
    return np.dtype(_KERNEL_FORMATS[image.format])


def _premultiply(strip, xp):
    """[rows, w, C] uint8/uint16 with alpha last → uint16, colour × alpha. 8-bit goes to 16 bits
    (v·a·257/255 and a·257, rounded), so nothing is lost; 16-bit stays 16-bit. NumPy or CuPy (`xp`)."""
    a = strip[..., -1:].astype(xp.uint32)
    out = xp.empty(strip.shape, xp.uint16)
    if strip.dtype == xp.uint8:
        out[..., :-1] = (strip[..., :-1].astype(xp.uint32) * a * 257 + 127) // 255
        out[..., -1:] = a * 257
    else:  # 65535 · 65535 + 32767 still fits in 32 bits
        out[..., :-1] = (strip[..., :-1].astype(xp.uint32) * a + 32767) // 65535
        out[..., -1:] = strip[..., -1:]
    return out


def _unpremultiply(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The inverse of `_premultiply` on the resampled image: 16-bit premultiplied → `dtype`, straight alpha."""
    maxval = float(np.iinfo(dtype).max)
    p = pixels.astype(np.float64)
    alpha = p[..., -1:]
    colour = np.divide(p[..., :-1] * maxval, alpha, out=np.zeros_like(p[..., :-1]), where=alpha > 0)
    out = np.concatenate([colour, alpha * (maxval / 65535.0)], axis=-1)
    return np.clip(np.rint(out), 0.0, maxval).astype(dtype)


def _to_vips(pixels: np.ndarray, like: pyvips.Image, orientation: int) -> pyvips.Image:
    """The resampled pixels as a libvips image that `finishing` treats as it treats a decode: the source's
    interpretation, its ICC profile (converted to sRGB there), and its orientation (turned upright there)."""
    h, w, bands = pixels.shape
    pixels = np.ascontiguousarray(pixels)
    image = pyvips.Image.new_from_memory(pixels.data, w, h, bands, _VIPS_FORMATS[pixels.dtype])
    image = image.copy(interpretation=like.interpretation).copy_memory().copy()
    image.set_type(pyvips.GValue.gint_type, "orientation", orientation)
    if like.get_typeof("icc-profile-data"):
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data", like.get("icc-profile-data"))
    return image


__all__ = ["DEFAULT_STRIP_ROWS", "TilesBackend", "tiles_unavailable"]
