"""The CPU backend: streaming libvips.

One decode per job, shrunk on load where the format allows (JPEG's DCT scaling, WebP's scaled decode), read
sequentially so memory stays flat on huge images; then, per size, the same short list of steps (imgproxy's shape):
resize → upright → sRGB → crop or pad → flatten → encode, with metadata stripped (`finish`, shared by every backend).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyvips

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.finish import (
    Source,
    decode_errors,
    decoded,
    exact_extent,
    intermediate_scale,
    load_shrunk,
    read_header,
    render_sizes,
    resize,
)
from thumbify.spec import ThumbnailSpec

# Each decoded axis keeps at least this many times the target's pixels before the final Lanczos-3 step.
# 1.9 keeps 45+ dB against a full-decode Lanczos-3 reference (benchmarks/shrink_quality.py measures it) while
# letting a 12 MP JPEG → 256 px decode at 1/8, which libvips' own thumbnail only does at a total shrink ≥ 16.
DEFAULT_HEADROOM = 1.9


def configure_vips(concurrency: int) -> None:
    """Process-wide libvips settings for a long-running server: no operation cache (memory that never returns is
    the peers' most common complaint), a bounded thread pool per image, and untrusted loaders blocked."""
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    if concurrency:
        pyvips.vips_lib.vips_concurrency_set(concurrency)
    if hasattr(pyvips, "block_untrusted_set"):
        pyvips.block_untrusted_set(True)


class VipsBackend:
    name = "vips"

    def __init__(self, headroom: float = DEFAULT_HEADROOM) -> None:
        self.headroom = headroom

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        with decode_errors(fmt):
            return self._render(path, fmt, spec, stem)

    def _render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        header = read_header(path, fmt, spec)
        placements = header.placements
        largest_w = max(p.resize_w for p in placements)
        largest_h = max(p.resize_h for p in placements)
        image, shrink = load_shrunk(path, fmt, header.up_w, header.up_h, largest_w, largest_h, self.headroom)
        extent_w, extent_h = exact_extent(image, header, shrink)
        source = Source(image, header.orientation, header.up_w, header.up_h, extent_w, extent_h)
        if len(placements) > 1:
            source = self._shared_intermediate(source, largest_w, largest_h)
        return render_sizes(source, placements, spec, stem)

    # -- decode -------------------------------------------------------------------------------------------------

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


__all__ = ["VipsBackend", "configure_vips"]
