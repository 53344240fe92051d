"""The arithmetic of a render, apart from any engine (thumbor's `transformer.py`), so every backend plans alike: the
placements of the spec's sizes, the shared intermediate of several sizes, and the overflow policy of `cover`."""

from __future__ import annotations

from thumbify.geometry import Placement, place
from thumbify.spec import ThumbnailSpec

SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the stored image a quarter
# `cover` resamples at most this many pixels (or twice the box) before cropping: see `finishing.cut_overflow`.
OVERFLOW_BUDGET = 8_000_000


def plan(up_w: int, up_h: int, spec: ThumbnailSpec) -> list[Placement]:
    """The placements of the spec's sizes on an upright `up_w`×`up_h` source, in the order the sizes were asked (the
    job lists its thumbnails in this order)."""
    # Several sizes of one fit can land on the same pixels (256 and 256x300 inside a square source): once each.
    return list(dict.fromkeys(place(up_w, up_h, size, spec.fit) for size in spec.sizes))


def intermediate_scale(extent_w: float, extent_h: float, target_w: int, target_h: int, headroom: float) -> float:
    """For several sizes: the factor of one shared reduction of the source to `headroom`× the largest size, each
    size then cut from that; 1.0 (no reduction) when the source is already within a quarter of it."""
    scale = min(1.0, headroom * max(target_w / extent_w, target_h / extent_h))
    return 1.0 if scale >= 0.75 else scale


def overflow_budget(placement: Placement) -> int:
    return max(OVERFLOW_BUDGET, 2 * placement.out_w * placement.out_h)


def overflows(placement: Placement) -> bool:
    """A `cover` of an extreme aspect ratio, which `finishing.cut_overflow` cuts to a band (around the focal point)
    before resampling (the GPU backends refuse it: the band's density would make their intermediate as large as the
    cut avoids)."""
    return placement.crops and placement.resize_w * placement.resize_h > overflow_budget(placement)


__all__ = ["OVERFLOW_BUDGET", "SWAPS_AXES", "intermediate_scale", "overflow_budget", "overflows", "plan"]
