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
  `finishing.cut_overflow` would cut; progressive JPEGs; a sequential JPEG whose last MCU shows only a few pixels
  (`last_mcu.too_few_shown`: too few to tell after decoding whether it was lost); and broken files (`damage`):
  DALI's decoders fill missing or damaged JPEG data with grey where libvips fails, so the file's structure and a
  sequential JPEG's last bytes are walked before decoding (`damage.file_check`) and its last MCU is checked after
  (`damage.grey_filled`, `last_mcu.LastMcu.lost`); vips then gives the readable `CorruptImage`.
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
from gpu_worker.backends.damage import MAX_MCU, JpegFrame, file_check, grey_filled, jpeg_frame
from gpu_worker.backends.decode import Source
from gpu_worker.backends.finishing import render_sizes
from gpu_worker.backends.last_mcu import LastMcu, too_few_shown
from gpu_worker.backends.plan import intermediate_scale, overflows
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
from thumbify.geometry import Placement
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
    frame: JpegFrame | None  # a sequential JPEG's: its decoded last MCU is checked for the grey of a cut scan
    last_mcu: LastMcu | None = None  # and against its codes, where the walk read them


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

    def refusal(
        self,
        fmt: str,
        header: pyvips.Image,
        data: bytes,
        placements: list[Placement],
        frame: JpegFrame | None = None,
        structure: bool = True,
    ) -> str | None:
        """Why this image should not go through DALI (then the vips backend renders it), or None if it can.
        `header` is the libvips image opened for its header only; `placements` the job's sizes on it; `frame` a
        JPEG's (`jpeg_frame`), read here where not given; `structure`: with the walk over the file's structure
        (`damage.file_check`), which the caller makes itself otherwise."""
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
        if fmt == "jpeg" and (frame := frame or jpeg_frame(data)) is not None:
            if frame.progressive:
                return "a progressive JPEG (a scan cut short decodes blurred: only a strict decoder tells)"
            if too_few_shown(frame):
                return "a last MCU showing too few pixels to tell after decoding whether the scan lost it"
        return file_check(fmt, data)[0] if structure else None

    def _prepare(self, index: int, item: Item) -> DaliSample | Refused:
        ctx = prepare(item, self.timings)
        data = ctx.path.read_bytes()
        frame = jpeg_frame(data) if ctx.fmt == "jpeg" else None
        reason = self.refusal(ctx.fmt, ctx.header, data, ctx.placements, frame, structure=False)
        damage, last_mcu = (None, None) if reason else file_check(ctx.fmt, data)
        if reason or damage:
            return Refused(reason or damage)
        target_w, target_h = self._target(ctx)
        stored_w, stored_h = (target_h, target_w) if ctx.swaps_axes else (target_w, target_h)
        return DaliSample(
            index,
            ctx,
            np.frombuffer(data, np.uint8),
            np.array([stored_h, stored_w], np.float32),
            target_w,
            target_h,
            frame if frame is not None and frame.sequential else None,
            last_mcu,
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
            resized = fn.resize(images, size=size, interp_type=types.INTERP_LANCZOS3, antialias=True)
            # The bottom-right corner as decoded, for `grey_filled` (a few KiB per image to the host).
            corner = fn.crop(
                images, crop=(MAX_MCU, MAX_MCU), crop_pos_x=1.0, crop_pos_y=1.0, out_of_bounds_policy="trim_to_shape"
            )
            return resized, corner

        return graph()

    def _run(self, samples: list[DaliSample]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each sample's resampled pixels and the bottom-right corner of its decoded image, on the host."""
        with self._lock:
            if self._pipe is None:
                self._pipe = self._build()
            try:
                self._pipe.feed_input(_ENCODED, [sample.encoded for sample in samples])
                self._pipe.feed_input(_SIZE, [sample.size_hw for sample in samples])
                with stage(self.timings, "dali-run"):
                    outs = self._pipe.run()
                with stage(self.timings, "copy"):
                    if self.device == "gpu":
                        outs = [out.as_cpu() for out in outs]
                    resized, corners = outs
                    # Copies: the pipeline reuses its output buffers on the next run.
                    return [(np.array(resized[i]), np.array(corners[i])) for i in range(len(samples))]
            except Exception:
                self._pipe = None  # "Current pipeline object is no longer valid": build a new one next time
                raise

    def _resample(self, samples: list[DaliSample]) -> list[tuple[DaliSample, np.ndarray | Refused]]:
        """Each sample with its resampled pixels, or refused where DALI failed on it (a failing batch is split in
        halves until the image that fails alone is found) or decoded a sequential JPEG's last MCU as the grey of a
        scan cut short (`damage.grey_filled`)."""
        try:
            decoded = self._run(samples)
        except Exception as exc:
            if len(samples) == 1:
                message = _dali_message(exc)
                log.warning("DALI cannot decode %s (%s); vips takes it", samples[0].ctx.path.name, message)
                return [(samples[0], Refused(f"DALI failed on it: {message}"))]
            half = len(samples) // 2
            return self._resample(samples[:half]) + self._resample(samples[half:])
        return [
            (sample, _cut_short(sample, pixels, corner))
            for sample, (pixels, corner) in zip(samples, decoded, strict=True)
        ]

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


def _cut_short(sample: DaliSample, pixels: np.ndarray, corner: np.ndarray) -> np.ndarray | Refused:
    """`pixels`, or refused where the decoded corner shows the grey fill of a scan that ended early, or a scan that
    lost exactly its last MCU (`LastMcu.lost`: decoded from the zero bits past the end, unlike its codes)."""
    if sample.frame is not None and grey_filled(corner, sample.frame):
        log.info("%s decodes to grey in its last MCU (a scan cut short?); vips checks it", sample.ctx.path.name)
        return Refused("its last MCU decodes to the grey a decoder fills a scan cut short with")
    if sample.frame is not None and sample.last_mcu is not None and sample.last_mcu.lost(corner, sample.frame):
        log.info("%s decodes its last MCU unlike its codes (a scan cut short?); vips checks it", sample.ctx.path.name)
        return Refused("its last MCU decodes unlike its codes (a scan that lost its last MCU)")
    return pixels


def _dali_message(exc: BaseException) -> str:
    """DALI's errors carry the pipeline definition's traceback: the lines that say what went wrong."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("File ", "return ", "Critical error", "Current pipeline"))]
    return " | ".join(keep or lines)[:300]


__all__ = ["DALI_FORMATS", "DaliBackend", "DaliSample", "dali_unavailable"]
