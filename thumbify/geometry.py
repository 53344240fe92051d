"""Fit and crop arithmetic, apart from any engine (as thumbor's transformer), tested once for all backends."""

from __future__ import annotations

from dataclasses import dataclass

from thumbify.spec import Fit, Size


@dataclass(frozen=True)
class Placement:
    """How one size is made from a source of `src_w`×`src_h` (already upright)."""

    resize_w: int  # the source is resampled to exactly this…
    resize_h: int
    out_w: int  # …then cropped (cover) or padded (contain) to this.
    out_h: int

    @property
    def crops(self) -> bool:
        return self.resize_w > self.out_w or self.resize_h > self.out_h

    @property
    def pads(self) -> bool:
        return self.resize_w < self.out_w or self.resize_h < self.out_h

    @property
    def pad_left(self) -> int:
        return (self.out_w - self.resize_w) // 2

    @property
    def pad_top(self) -> int:
        return (self.out_h - self.resize_h) // 2


def _scaled(side: int, scale: float) -> int:
    return max(1, round(side * scale))


def place(src_w: int, src_h: int, size: Size, fit: Fit) -> Placement:
    box_w, box_h = size.width, size.height
    if fit is Fit.fill:
        return Placement(box_w, box_h, box_w, box_h)
    if fit is Fit.cover:
        scale = max(box_w / src_w, box_h / src_h)
        return Placement(max(box_w, _scaled(src_w, scale)), max(box_h, _scaled(src_h, scale)), box_w, box_h)
    scale = min(box_w / src_w, box_h / src_h)
    if fit is Fit.inside:
        scale = min(scale, 1.0)  # a thumbnail never enlarges its source
        w, h = min(box_w, _scaled(src_w, scale)), min(box_h, _scaled(src_h, scale))
        return Placement(w, h, w, h)
    w, h = min(box_w, _scaled(src_w, scale)), min(box_h, _scaled(src_h, scale))
    return Placement(w, h, box_w, box_h)


# How much of one output pixel a JPEG shrink-on-load may drop at the right and bottom edges: see `load_shrink`.
MAX_EDGE_LOSS = 0.1


def load_shrink(src_w: int, src_h: int, target_w: int, target_h: int, headroom: float, steps=(8, 4, 2)) -> int:
    """The largest decoder shrink (JPEG's DCT scaling: 8, 4, 2) that still leaves `headroom`× the target's pixels
    on each axis, so the final Lanczos-3 step has real detail to work from. 1 when none does.

    libvips decodes a side of n pixels at 1/s into floor(n / s) pixels, dropping the last n mod s source pixels; a
    shrink is only taken when that loses at most `MAX_EDGE_LOSS` of an output pixel (1283 → 128 px at 1/4 would
    drop 0.3 px of the last column and fall from 47 to 39 dB against a full-decode Lanczos-3)."""
    for step in steps:
        if src_w / step < target_w * headroom or src_h / step < target_h * headroom:
            continue
        if (src_w % step) * target_w / src_w <= MAX_EDGE_LOSS and (src_h % step) * target_h / src_h <= MAX_EDGE_LOSS:
            return step
    return 1
