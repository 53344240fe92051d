"""The GPU batch backend: NVIDIA DALI.

One pipeline per backend (one per worker process), built once and fed one batch at a time:

    external_source "encoded" (each file's bytes, uint8) ──▶ decoders.image (mixed: nvJPEG, the hardware JPEG
    decoder where the GPU has one; cpu: libjpeg-turbo, libpng, libwebp) ──▶ resize (antialiased Lanczos-3) to a
    per-sample size fed through external_source "size" ──▶ copied to the host

and then, on the host, the same finishing steps as the vips backend (`finishing`): upright → sRGB → crop or pad →
flatten → encode (libvips). The same graph builds with `cpu` operators and `device_id=None`, which is how the tests
run it without a GPU.

Choices, and why:
- Orientation: the decoder's `adjust_orientation` is off. DALI resamples the stored pixels (to the target with its
  axes swapped for EXIF orientations 5-8) and the host turns the small result upright with the orientation libvips
  read from the header: the very step, and the same reading of the tag, as the vips backend, so the two cannot
  disagree on which files are rotated.
- Several sizes: one decode. DALI resamples each image once: straight to the size when the job has one, or to
  `headroom`× the largest size (the vips backend's shared intermediate) when it has several; every size is then
  cut from that small image on the host. A fixed graph with one resize per possible size would resample every
  sample MAX_SIZES times.
- What DALI does not take (`refusal`), decided up front from the prepared context (`context.prepare`: the header,
  the plan) and a walk over the file's structure, is refused (`base.Refused`: the vips backend renders it):
  formats other than JPEG, PNG and WebP; animations; alpha (libvips resamples it premultiplied); 16-bit samples;
  CMYK and other colourspaces; grey with an ICC profile; more pixels than `max_pixels`; a `cover` whose overflow
  `finishing.cut_overflow` would cut; and broken files: DALI's decoders fill missing or damaged JPEG data with grey
  where libvips fails (seen with the cpu decoders: data cut short before an end-of-image marker, a header that
  overstates the size), and vips then gives the readable `CorruptImage`.
- ICC profiles: DALI ignores them. The host attaches the source's profile to the resampled pixels and converts to
  sRGB as the vips backend does (it too resamples before converting).
- A failing batch: after an error the DALI pipeline is no longer valid, so it is rebuilt and the batch bisected;
  an image that fails alone is refused, so vips renders it. One image never fails its batch.
- Execution: `prefetch_queue_depth=1`, so `run()` consumes exactly the batch just fed with `feed_input` and returns
  its outputs (a deeper queue wants that many batches fed ahead before the first run: DALI issue #2551). Batches
  vary in size up to `max_batch`. One lock serialises feed and run; the host steps run outside it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from gpu_worker.backends.base import (
    DALI_FORMATS,
    ONE_SHOT_MAX_PIXELS,
    Backend,
    Item,
    OnResult,
    Refused,
    Rendition,
    Result,
    Route,
    refer,
    render_alone,
)
from gpu_worker.backends.context import RenderContext, Timings, prepare, stage
from gpu_worker.backends.decode import Source
from gpu_worker.backends.finishing import render_sizes
from gpu_worker.backends.plan import intermediate_scale, overflows
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
from thumbify.geometry import Placement
from thumbify.probe import JPEG_SOF, JPEG_STANDALONE, JpegDamage, jpeg_segments
from thumbify.spec import ThumbnailSpec

log = logging.getLogger(__name__)

_ENCODED, _SIZE = "encoded", "size"


def dali_unavailable(device: str = "gpu") -> str | None:
    """Why this machine cannot run the DALI backend on `device` ("gpu" or "cpu"), or None if it can."""
    try:
        from nvidia.dali import backend
    except ImportError as exc:
        return f"nvidia.dali is not installed ({exc})"
    if device == "gpu":
        try:
            count = backend.GetCUDADeviceCount()
        except Exception as exc:  # no driver: DALI says so in its own words
            return f"CUDA is not usable: {exc}"
        if count < 1:
            return "no CUDA device"
    return None


@dataclass(frozen=True)
class DaliSample:
    """One image of a batch, prepared for the DALI pipeline: its bytes and the size DALI resamples it to."""

    index: int  # in the batch
    ctx: RenderContext
    encoded: np.ndarray  # the file's bytes
    size_hw: np.ndarray  # float32 [height, width] DALI resamples the stored (not yet upright) pixels to
    target_w: int  # the same size, upright
    target_h: int


class DaliBackend:
    name = "dali"

    def __init__(
        self,
        device: str = "gpu",
        *,
        device_id: int | None = 0,
        max_batch: int = 16,
        num_threads: int = 4,
        hw_decoder_load: float = 0.65,
        preallocate_width_hint: int = 0,
        preallocate_height_hint: int = 0,
        device_memory_padding: int = 16 << 20,
        host_memory_padding: int = 8 << 20,
        max_pixels: int = ONE_SHOT_MAX_PIXELS,
        headroom: float = DEFAULT_HEADROOM,
        fallback: Backend | None = None,
        timings: Timings | None = None,
    ) -> None:
        """`fallback` renders what DALI refuses or fails on (`render`: a vips backend where none is given); without
        one `render_batch` answers `Refused` for it."""
        if device not in ("gpu", "cpu"):
            raise ValueError(f"device must be 'gpu' or 'cpu', not {device!r}")
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.device = device
        self.device_id = device_id if device == "gpu" else None
        self.max_batch = max_batch
        self.num_threads = num_threads
        # Only the mixed (GPU) decoder takes these.
        self.decoder_options = {
            "hw_decoder_load": hw_decoder_load,
            "preallocate_width_hint": preallocate_width_hint,
            "preallocate_height_hint": preallocate_height_hint,
            "device_memory_padding": device_memory_padding,
            "host_memory_padding": host_memory_padding,
            # nvJPEG's own chroma upsampling differs from libjpeg-turbo's (which libvips and the cpu decoder use).
            "jpeg_fancy_upsampling": True,
        }
        self.max_pixels = max_pixels
        self.headroom = headroom
        self.fallback = fallback
        self.timings = timings  # seconds per stage, added up here when given (the benchmarks' hook)
        self._lock = threading.Lock()
        self._pipe = None

    # -- the Backend protocol, and batches ------------------------------------------------------------------------

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        fallback = self.fallback or VipsBackend(self.headroom, self.timings)
        return render_alone(self, (path, fmt, spec, stem), fallback)

    def render_batch(
        self, items: Sequence[Item], on_result: OnResult | None = None, routes: Sequence[Route] | None = None
    ) -> list[Result]:
        """One result per item, in order (the `BatchBackend` contract). What DALI does not take (`refusal`), or
        fails on alone, is refused: rendered by the fallback where there is one."""
        results: list[Result | None] = [None] * len(items)

        def done(index: int, result: Result) -> None:
            results[index] = result = refer(items[index], result, self.fallback)
            if on_result is not None:
                on_result(index, result)

        samples: list[DaliSample] = []
        for index, item in enumerate(items):
            try:
                sample = self._prepare(index, item)
            except Exception as exc:  # an unreadable header or file: vips says what is wrong with it
                sample = Refused(f"the header cannot be read ({type(exc).__name__})")
            if isinstance(sample, Refused):
                log.debug("%s goes to vips: %s", item[0].name, sample.reason)
                done(index, sample)
            else:
                samples.append(sample)
        for start in range(0, len(samples), self.max_batch):
            for sample, pixels in self._resample(samples[start : start + self.max_batch]):
                done(sample.index, self._finish(sample, pixels))
        return results  # type: ignore[return-value]  # every slot is filled above

    def start(self) -> None:
        """Build the pipeline now, so the first batch does not pay for it (nvJPEG and the hardware decoder
        initialise here)."""
        with self._lock:
            if self._pipe is None:
                self._pipe = self._build()

    def close(self) -> None:
        with self._lock:
            self._pipe = None

    # -- what DALI takes ------------------------------------------------------------------------------------------

    def refusal(self, fmt: str, header: pyvips.Image, data: bytes, placements: list[Placement]) -> str | None:
        """Why this image should not go through DALI (then the vips backend renders it), or None if it can.
        `header` is the libvips image opened for its header only; `placements` the job's sizes on it."""
        if fmt not in DALI_FORMATS:
            return f"DALI does not decode {fmt} here"
        if fmt == "webp" and data[12:16] == b"VP8X" and len(data) > 20 and data[20] & 0x02:
            return "an animated WebP"  # (stills in the extended format, with EXIF or ICC chunks, decode fine)
        if header.get_typeof("n-pages") and header.get("n-pages") > 1:
            return "more than one page or frame"
        if header.hasalpha():
            return "an alpha channel (resampled premultiplied by libvips)"
        if header.format != "uchar":
            return f"{header.format} samples, not 8-bit"
        if (header.bands, header.interpretation) not in ((3, "srgb"), (1, "b-w")):
            return f"{header.bands} bands of {header.interpretation}"
        if header.bands == 1 and header.get_typeof("icc-profile-data"):
            return "a grey ICC profile (DALI decodes to RGB)"
        if header.width * header.height > self.max_pixels:
            return f"{header.width}x{header.height} is over the one-shot cap of {self.max_pixels:,} pixels"
        if any(overflows(p) for p in placements):
            return "a cover of an extreme aspect ratio"
        return file_damage(fmt, data)

    def _prepare(self, index: int, item: Item) -> DaliSample | Refused:
        ctx = prepare(item, self.timings)
        data = ctx.path.read_bytes()
        reason = self.refusal(ctx.fmt, ctx.header, data, ctx.placements)
        if reason:
            return Refused(reason)
        target_w, target_h = self._target(ctx)
        stored_w, stored_h = (target_h, target_w) if ctx.swaps_axes else (target_w, target_h)
        return DaliSample(
            index, ctx, np.frombuffer(data, np.uint8), np.array([stored_h, stored_w], np.float32), target_w, target_h
        )

    def _target(self, ctx: RenderContext) -> tuple[int, int]:
        """What DALI resamples to (upright): the one size itself, or the shared intermediate of several."""
        if len(ctx.placements) == 1:
            return ctx.placements[0].resize_w, ctx.placements[0].resize_h
        scale = intermediate_scale(ctx.up_w, ctx.up_h, *ctx.largest, self.headroom)
        return max(1, round(ctx.up_w * scale)), max(1, round(ctx.up_h * scale))

    # -- the pipeline ---------------------------------------------------------------------------------------------

    def _build(self):
        pipe = self.define()
        pipe.build()
        return pipe

    def define(self):
        """The pipeline, defined but not built: DALI checks every operator's arguments here, with or without a
        GPU; `build` is where it initialises the decoders on the device."""
        from nvidia.dali import fn, pipeline_def, types

        gpu = self.device == "gpu"
        options = {"output_type": types.RGB, "adjust_orientation": False}
        if gpu:
            options.update(self.decoder_options)

        @pipeline_def(
            batch_size=self.max_batch,
            num_threads=self.num_threads,
            device_id=self.device_id,
            prefetch_queue_depth=1,
            exec_dynamic=True,
        )
        def graph():
            # no_copy: the arrays stay referenced until `run` has returned, which is when the iteration is done.
            encoded = fn.external_source(name=_ENCODED, dtype=types.UINT8, ndim=1, no_copy=True)
            size = fn.external_source(name=_SIZE, dtype=types.FLOAT, ndim=1)  # [h, w]: the tensor's axis order
            images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", **options)
            return fn.resize(images, size=size, interp_type=types.INTERP_LANCZOS3, antialias=True)

        return graph()

    def _run(self, samples: list[DaliSample]) -> list[np.ndarray]:
        with self._lock:
            if self._pipe is None:
                self._pipe = self._build()
            try:
                self._pipe.feed_input(_ENCODED, [sample.encoded for sample in samples])
                self._pipe.feed_input(_SIZE, [sample.size_hw for sample in samples])
                with stage(self.timings, "dali-run"):
                    (out,) = self._pipe.run()
                with stage(self.timings, "copy"):
                    if self.device == "gpu":
                        out = out.as_cpu()
                    # Copies: the pipeline reuses its output buffers on the next run.
                    return [np.array(out[i]) for i in range(len(samples))]
            except Exception:
                self._pipe = None  # "Current pipeline object is no longer valid": build a new one next time
                raise

    def _resample(self, samples: list[DaliSample]) -> list[tuple[DaliSample, np.ndarray | Refused]]:
        """Each sample with its resampled pixels, or refused where DALI failed on it: a failing batch is split in
        halves until the image that fails alone is found."""
        try:
            return list(zip(samples, self._run(samples), strict=True))
        except Exception as exc:
            if len(samples) == 1:
                message = _dali_message(exc)
                log.warning("DALI cannot decode %s (%s); vips takes it", samples[0].ctx.path.name, message)
                return [(samples[0], Refused(f"DALI failed on it: {message}"))]
        half = len(samples) // 2
        return self._resample(samples[:half]) + self._resample(samples[half:])

    # -- on the host ----------------------------------------------------------------------------------------------

    def _finish(self, sample: DaliSample, pixels: np.ndarray | Refused) -> Result:
        if isinstance(pixels, Refused):
            return pixels
        ctx = sample.ctx
        try:
            stored_h, stored_w = (int(v) for v in sample.size_hw)
            if pixels.shape != (stored_h, stored_w, 3):
                raise RuntimeError(f"DALI gave {pixels.shape}, not {(stored_h, stored_w, 3)}")
            image = pyvips.Image.new_from_array(pixels).copy(interpretation="srgb")
            image.set_type(pyvips.GValue.gint_type, "orientation", ctx.orientation)
            if ctx.header.get_typeof("icc-profile-data"):
                image.set_type(pyvips.GValue.blob_type, "icc-profile-data", ctx.header.get("icc-profile-data"))
            # DALI maps the whole source onto the whole target: the target's size is the source's exact extent.
            source = Source(image, ctx.orientation, ctx.up_w, ctx.up_h, sample.target_w, sample.target_h)
            return render_sizes(ctx, source)
        except Exception as exc:
            log.warning("finishing %s after DALI failed (%s); vips takes it", ctx.path.name, exc)
            return Refused(f"finishing after DALI failed ({type(exc).__name__})")


# -- file structure ---------------------------------------------------------------------------------------------------


def file_damage(fmt: str, data: bytes) -> str | None:
    """What is wrong with the structure of this file, or None: the damage DALI's decoders would paper over."""
    if fmt == "jpeg":
        return jpeg_damage(data)
    if fmt == "png" and data.rfind(b"IEND", max(0, len(data) - 1024)) < 0:
        return "the PNG ends before its IEND chunk"
    if fmt == "webp" and len(data) < int.from_bytes(data[4:8], "little") + 8:
        return "the WebP is shorter than its RIFF header says"
    return None


_HUFFMAN_SEQUENTIAL = frozenset({0xC0, 0xC1})


def jpeg_damage(data: bytes) -> str | None:
    """A cheap walk over a JPEG's markers (nothing is decoded) for the damage libvips refuses and DALI's decoders
    fill with grey: a file that ends before its end-of-image marker, a segment that runs past the end, a marker that
    may not stand where it does (a restart marker where no restart interval was declared, or out of sequence), and,
    for a baseline image coded in one scan, image data too short to hold the blocks its header declares (every
    8x8 block takes at least 2 bits: a DC code and an end-of-block code) or with fewer restart markers than its
    restart interval needs (an encoder writes one between every two intervals: a scan cut short, even with its
    end-of-image marker put back, has lost some)."""
    if data[:2] != b"\xff\xd8":
        return "it does not start with a JPEG start-of-image marker"
    markers = _Markers(data)
    restart = 0
    frame: tuple[int, int, int, int, tuple[int, int]] | None = None  # marker, width, height, components, units
    scans: list[tuple[int, int, int]] = []  # (components, bytes of image data, restart markers)
    components = 0  # of the scan being walked

    def scan_end(start: int) -> int:
        end, restarts, damage = markers.scan_end(start, restart)
        if damage:
            raise JpegDamage(damage)
        scans.append((components, end - start, restarts))
        return end

    try:
        for marker, at, end in jpeg_segments(data, scan_end):
            body = data[at:end]
            if marker in JPEG_STANDALONE:
                return f"a stray marker 0xFF{marker:02X} at offset {at}"
            if marker == 0xDD and len(body) >= 2:  # DRI
                restart = int.from_bytes(body[:2], "big")
            elif marker in JPEG_SOF and len(body) >= 6:
                width, height = int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big")
                frame = (marker, width, height, body[5], _coding_units(body))
            elif marker == 0xDA:  # SOS: the walk reads its image data with `scan_end`
                components = body[0] if body else 0
    except JpegDamage as exc:
        return str(exc)
    if frame and frame[0] in _HUFFMAN_SEQUENTIAL and len(scans) == 1 and scans[0][0] == frame[3]:
        (mcus, blocks), (_, size, restarts) = frame[4], scans[0]
        if size * 4 < blocks:
            return f"its image data ({size} bytes) is too short for the {frame[1]}x{frame[2]} it declares"
        if restart and restarts < math.ceil(mcus / restart) - 1:
            return f"its image data ends after {restarts + 1} of the {math.ceil(mcus / restart)} restart intervals"
    return None


def _coding_units(sof: bytes) -> tuple[int, int]:
    """(MCUs, 8x8 blocks) of an image coded in one scan, as the decoder counts them; (0, 0) where the height is
    left to a DNL marker (nothing to check)."""
    height, width, count = int.from_bytes(sof[1:3], "big"), int.from_bytes(sof[3:5], "big"), sof[5]
    factors = [(sof[7 + 3 * i] >> 4, sof[7 + 3 * i] & 15) for i in range(count) if 8 + 3 * i < len(sof)]
    if not factors or not height or not width:
        return 0, 0
    if len(factors) == 1:  # not interleaved: an MCU is one block
        blocks = math.ceil(width / 8) * math.ceil(height / 8)
        return blocks, blocks
    h_max = max(h for h, _ in factors) or 1
    v_max = max(v for _, v in factors) or 1
    mcus = math.ceil(width / (8 * h_max)) * math.ceil(height / (8 * v_max))
    return mcus, mcus * sum(h * v for h, v in factors)


class _Markers:
    """Every real marker in the file (0xFF followed by neither a stuffed 0x00 nor a fill 0xFF), found once, so that
    each scan's end is a lookup however many scans a progressive JPEG has."""

    def __init__(self, data: bytes) -> None:
        buf = np.frombuffer(data, np.uint8)
        ff = np.flatnonzero(buf[:-1] == 0xFF)
        after = buf[ff + 1]
        real = (after != 0x00) & (after != 0xFF)
        self.offsets, self.codes = ff[real], after[real]
        self.stops = np.flatnonzero((self.codes < 0xD0) | (self.codes > 0xD7))  # markers that are not RSTn

    def scan_end(self, start: int, restart: int) -> tuple[int, int, str | None]:
        """Where the image data starting at `start` ends (the offset of its next marker that is not a restart
        marker) and how many restart markers it holds, or why it is damaged."""
        first = int(np.searchsorted(self.offsets, start))
        at = int(np.searchsorted(self.stops, first))
        if at == len(self.stops):
            return 0, 0, "the file ends in the middle of its image data"
        stop = int(self.stops[at])
        restarts = self.codes[first:stop]
        if len(restarts):
            if not restart:
                return 0, 0, "a restart marker in image data that declares no restart interval"
            if not np.array_equal(restarts, 0xD0 + np.arange(len(restarts)) % 8):
                return 0, 0, "restart markers out of sequence"
        return int(self.offsets[stop]), len(restarts), None


def _dali_message(exc: BaseException) -> str:
    """DALI's errors carry the pipeline definition's traceback: the lines that say what went wrong."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("File ", "return ", "Critical error", "Current pipeline"))]
    return " | ".join(keep or lines)[:300]


__all__ = ["DALI_FORMATS", "DaliBackend", "DaliSample", "dali_unavailable", "file_damage", "jpeg_damage"]
