"""The GPU batch backend: NVIDIA DALI.

One pipeline per backend (one per worker process), built once and fed one batch at a time:

    external_source "encoded" (each file's bytes, uint8) ──▶ decoders.image (mixed: nvJPEG, the hardware JPEG
    decoder where the GPU has one; cpu: libjpeg-turbo, libpng, libwebp) ──▶ resize (antialiased Lanczos-3) to a
    per-sample size fed through external_source "size" ──▶ copied to the host

and then, on the host, the same finishing steps as the vips backend (`finish`): upright → sRGB → crop or pad →
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
- What DALI does not take (`refusal`), decided up front from the header and a walk over the file's structure, goes
  to the vips backend: formats other than JPEG, PNG and WebP; animations; alpha (libvips resamples it
  premultiplied); 16-bit samples; CMYK and other colourspaces; grey with an ICC profile; more pixels than
  `max_pixels`; a `cover` whose overflow `finish.cut_overflow` would cut; and broken files: DALI's decoders fill
  missing or damaged JPEG data with grey where libvips fails (seen with the cpu decoders: data cut short before an
  end-of-image marker, a header that overstates the size), and vips then gives the readable `CorruptImage`.
- ICC profiles: DALI ignores them. The host attaches the source's profile to the resampled pixels and converts to
  sRGB as the vips backend does (it too resamples before converting).
- A failing batch: after an error the DALI pipeline is no longer valid, so it is rebuilt and the batch bisected;
  an image that fails alone is rendered by vips. One image never fails its batch.
- Execution: `prefetch_queue_depth=1`, so `run()` consumes exactly the batch just fed with `feed_input` and returns
  its outputs (a deeper queue wants that many batches fed ahead before the first run: DALI issue #2551). Batches
  vary in size up to `max_batch`. One lock serialises feed and run; the host steps run outside it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.finish import SWAPS_AXES, Source, intermediate_scale, overflow_budget, plan, render_sizes
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
from thumbify.geometry import Placement
from thumbify.probe import open_image
from thumbify.spec import ThumbnailSpec

log = logging.getLogger(__name__)

# What `decoders.image` decodes that we send it. TIFF (endless variants), GIF and HEIF go to libvips.
DALI_FORMATS = frozenset({"jpeg", "png", "webp"})
# One-shot decode cap: past it an image is not decoded whole into GPU memory (150 MB at 8-bit RGB); vips takes it.
DEFAULT_MAX_PIXELS = 50_000_000
_ENCODED, _SIZE = "encoded", "size"

Item = tuple[Path, str, ThumbnailSpec, str]  # (source path, sniffed format, spec, stem): as `Backend.render` takes


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
class _Job:
    """One image planned for the DALI pipeline."""

    index: int  # in the batch
    path: Path
    encoded: np.ndarray  # the file's bytes
    size_hw: np.ndarray  # float32 [height, width] DALI resamples the stored (not yet upright) pixels to
    orientation: int
    upright_w: int
    upright_h: int
    target_w: int  # the same size, upright
    target_h: int
    icc: bytes | None
    placements: list[Placement]
    spec: ThumbnailSpec
    stem: str


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
        max_pixels: int = DEFAULT_MAX_PIXELS,
        headroom: float = DEFAULT_HEADROOM,
        fallback: VipsBackend | None = None,
    ) -> None:
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
        self.fallback = fallback or VipsBackend(headroom)
        self._lock = threading.Lock()
        self._pipe = None

    # -- the Backend protocol, and batches ------------------------------------------------------------------------

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        (result,) = self.render_batch([(path, fmt, spec, stem)])
        if isinstance(result, BaseException):
            raise result
        return result

    def render_batch(self, items: Sequence[Item]) -> list[list[Rendition] | Exception]:
        """One result per item, in order: its renditions, or the exception rendering it raised (`CorruptImage` for
        a broken file). Items DALI cannot take, or that fail in it, are rendered by the vips fallback; one item's
        failure never fails the others."""
        results: list[list[Rendition] | Exception | None] = [None] * len(items)
        to_vips: list[int] = []
        jobs: list[_Job] = []
        for index, (path, fmt, spec, stem) in enumerate(items):
            try:
                job = self._plan(index, path, fmt, spec, stem)
            except Exception as exc:  # an unreadable header or file: vips says what is wrong with it
                job = f"the header cannot be read ({type(exc).__name__})"
            if isinstance(job, str):
                log.debug("%s goes to vips: %s", path.name, job)
                to_vips.append(index)
            else:
                jobs.append(job)
        for start in range(0, len(jobs), self.max_batch):
            for job, pixels in self._resample(jobs[start : start + self.max_batch]):
                if pixels is not None:
                    try:
                        results[job.index] = self._finish(job, pixels)
                        continue
                    except Exception as exc:
                        log.warning("finishing %s after DALI failed (%s); vips takes it", job.path.name, exc)
                to_vips.append(job.index)
        for index in sorted(to_vips):
            results[index] = _outcome(self.fallback.render, *items[index])
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
        if any(p.crops and p.resize_w * p.resize_h > overflow_budget(p) for p in placements):
            return "a cover of an extreme aspect ratio"
        return file_damage(fmt, data)

    def _plan(self, index: int, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> _Job | str:
        header = open_image(path, fmt, access="sequential")
        orientation = header.get("orientation") if header.get_typeof("orientation") else 1
        if orientation not in range(1, 9):
            orientation = 1
        swap = orientation in SWAPS_AXES
        up_w, up_h = (header.height, header.width) if swap else (header.width, header.height)
        placements = plan(up_w, up_h, spec)
        data = path.read_bytes()
        reason = self.refusal(fmt, header, data, placements)
        if reason:
            return reason
        target_w, target_h = self._target(up_w, up_h, placements)
        stored_w, stored_h = (target_h, target_w) if swap else (target_w, target_h)
        icc = header.get("icc-profile-data") if header.get_typeof("icc-profile-data") else None
        return _Job(
            index=index,
            path=path,
            encoded=np.frombuffer(data, np.uint8),
            size_hw=np.array([stored_h, stored_w], np.float32),
            orientation=orientation,
            upright_w=up_w,
            upright_h=up_h,
            target_w=target_w,
            target_h=target_h,
            icc=icc,
            placements=placements,
            spec=spec,
            stem=stem,
        )

    def _target(self, up_w: int, up_h: int, placements: list[Placement]) -> tuple[int, int]:
        """What DALI resamples to (upright): the one size itself, or the shared intermediate of several."""
        if len(placements) == 1:
            return placements[0].resize_w, placements[0].resize_h
        largest_w = max(p.resize_w for p in placements)
        largest_h = max(p.resize_h for p in placements)
        scale = intermediate_scale(up_w, up_h, largest_w, largest_h, self.headroom)
        return max(1, round(up_w * scale)), max(1, round(up_h * scale))

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

    def _run(self, jobs: list[_Job]) -> list[np.ndarray]:
        with self._lock:
            if self._pipe is None:
                self._pipe = self._build()
            try:
                self._pipe.feed_input(_ENCODED, [job.encoded for job in jobs])
                self._pipe.feed_input(_SIZE, [job.size_hw for job in jobs])
                (out,) = self._pipe.run()
                if self.device == "gpu":
                    out = out.as_cpu()
                # Copies: the pipeline reuses its output buffers on the next run.
                return [np.array(out[i]) for i in range(len(jobs))]
            except Exception:
                self._pipe = None  # "Current pipeline object is no longer valid": build a new one next time
                raise

    def _resample(self, jobs: list[_Job]) -> list[tuple[_Job, np.ndarray | None]]:
        """Each job with its resampled pixels, or with None where DALI failed on it: a failing batch is split in
        halves until the image that fails alone is found."""
        try:
            return list(zip(jobs, self._run(jobs), strict=True))
        except Exception as exc:
            if len(jobs) == 1:
                log.warning("DALI cannot decode %s (%s); vips takes it", jobs[0].path.name, _dali_message(exc))
                return [(jobs[0], None)]
        half = len(jobs) // 2
        return self._resample(jobs[:half]) + self._resample(jobs[half:])

    # -- on the host ----------------------------------------------------------------------------------------------

    def _finish(self, job: _Job, pixels: np.ndarray) -> list[Rendition]:
        stored_h, stored_w = (int(v) for v in job.size_hw)
        if pixels.shape != (stored_h, stored_w, 3):
            raise RuntimeError(f"DALI gave {pixels.shape}, not {(stored_h, stored_w, 3)}")
        image = pyvips.Image.new_from_array(pixels).copy(interpretation="srgb")
        image.set_type(pyvips.GValue.gint_type, "orientation", job.orientation)
        if job.icc:
            image.set_type(pyvips.GValue.blob_type, "icc-profile-data", job.icc)
        # DALI maps the whole source onto the whole target: the target's size is the source's exact extent.
        source = Source(image, job.orientation, job.upright_w, job.upright_h, job.target_w, job.target_h)
        return render_sizes(source, job.placements, job.spec, job.stem)


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


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)
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
    n = len(data)
    pos, restart = 2, 0
    frame: tuple[int, int, int, int, tuple[int, int]] | None = None  # marker, width, height, components, units
    scans: list[tuple[int, int, int]] = []  # (components, bytes of image data, restart markers)
    while True:
        if pos >= n:
            return "the file ends before its end-of-image marker"
        if data[pos] != 0xFF:
            return f"bytes where a marker should be, at offset {pos}"
        while pos < n and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= n:
            return "the file ends before its end-of-image marker"
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD8 or marker in (0x00, 0x01):
            return f"a stray marker 0xFF{marker:02X} at offset {pos - 2}"
        if pos + 2 > n:
            return "the file ends inside a segment"
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            return f"segment 0xFF{marker:02X} runs past the end of the file"
        body = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xDD and len(body) >= 2:  # DRI
            restart = int.from_bytes(body[:2], "big")
        elif marker in _SOF and len(body) >= 6:
            width, height = int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big")
            frame = (marker, width, height, body[5], _coding_units(body))
        elif marker == 0xDA:  # SOS: entropy-coded image data follows, up to the next marker that is not RSTn
            end, restarts, damage = markers.scan_end(pos, restart)
            if damage:
                return damage
            scans.append((body[0] if body else 0, end - pos, restarts))
            pos = end
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


def _outcome(render: Callable[..., list[Rendition]], *args) -> list[Rendition] | Exception:
    try:
        return render(*args)
    except Exception as exc:
        return exc


def _dali_message(exc: BaseException) -> str:
    """DALI's errors carry the pipeline definition's traceback: the lines that say what went wrong."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("File ", "return ", "Critical error", "Current pipeline"))]
    return " | ".join(keep or lines)[:300]


__all__ = ["DALI_FORMATS", "DEFAULT_MAX_PIXELS", "DaliBackend", "dali_unavailable", "file_damage", "jpeg_damage"]
