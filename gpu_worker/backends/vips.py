"""The CPU backend: streaming libvips.

One decode per job, shrunk on load where the format allows (JPEG's DCT scaling, WebP's scaled decode), read
sequentially so memory stays flat on huge images (plain JPEGs of a bounded size by libjpeg-turbo 3 instead, faster,
`turbo.turbo_jpeg`); then, per size, the same short list of steps (imgproxy's shape):
resize → upright → sRGB → crop or pad → flatten → encode, metadata as `keep` asks (`finishing`, shared by every
backend). `animated=true` on an animated GIF or WebP: every frame through those steps (`animated`), here only: the
router sends every image of several frames to this backend.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gpu_worker.backends.animated import render_animated
from gpu_worker.backends.base import Rendition
from gpu_worker.backends.context import Timings, prepare
from gpu_worker.backends.decode import Source, decode_errors, decoded, load_source
from gpu_worker.backends.finishing import render_sizes, resize
from gpu_worker.backends.plan import intermediate_scale
from thumbify.animation import DEFAULT_LIMITS, AnimationLimits, animates
from thumbify.probe import configure_vips
from thumbify.spec import ThumbnailSpec

# Each decoded axis keeps at least this many times the target's pixels before the final Lanczos-3 step
# (`THUMBIFY_RESAMPLE_HEADROOM`). 1.9 keeps 45+ dB against a full-decode Lanczos-3 reference
# (benchmarks/shrink_quality.py measures it) while letting a 12 MP JPEG → 256 px decode at 1/8, which libvips' own
# thumbnail only does at a total shrink ≥ 16.
# The settings' default (a test holds them equal; this module stays free of pydantic for the CLI's render processes).
DEFAULT_HEADROOM = 1.9


class VipsBackend:
    name = "vips"

    def __init__(
        self,
        headroom: float = DEFAULT_HEADROOM,
        timings: Timings | None = None,
        turbo: bool = True,
        animation: AnimationLimits = DEFAULT_LIMITS,
    ) -> None:
        self.headroom = headroom
        self.animation = animation  # `animated=true`: frames kept, output pixels allowed
        self.turbo = turbo  # plain JPEGs decoded and encoded by libjpeg-turbo 3 (`turbo`); False: libvips does all
        self.timings = timings  # seconds per stage, added up here when given (the benchmarks' hook)

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        with decode_errors(fmt):
            ctx = prepare((path, fmt, spec, stem), self.timings, self.turbo)
            if animates(spec, fmt, ctx.pages):
                return render_animated(ctx, self.animation)
            source, _ = load_source(ctx, self.headroom)
            if len(ctx.placements) > 1:
                source = self._shared_intermediate(source, *ctx.largest)
            return render_sizes(ctx, source)

    def _shared_intermediate(self, source: Source, target_w: int, target_h: int) -> Source:
        """For several sizes: one streamed reduction to `headroom`× the largest size, held in memory, so each size
        is cut from it without decoding the source again and memory is bounded by the sizes, not the source."""
        img = source.image
        scale = intermediate_scale(source.extent_w, source.extent_h, target_w, target_h, self.headroom)
        if scale == 1.0:
            return replace(source, image=decoded(img.copy_memory))
        # libvips maps by the factor, so the exact extent scales by it too.
        return replace(
            source,
            image=decoded(resize(img, scale, scale).copy_memory),
            extent_w=source.extent_w * scale,
            extent_h=source.extent_h * scale,
        )


__all__ = ["DEFAULT_HEADROOM", "VipsBackend", "configure_vips"]
