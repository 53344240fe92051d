"""Animated thumbnails (`animated=true`): which sources animate, how many frames are kept, and the cap on the
pixels an animation may render to. Free of pydantic: the render processes import it (`gpu_worker/backends/vips.py`).

- Frames past `max_frames` are dropped: the thumbnail is the first `max_frames` frames with their own delays (a
  preview of a long animation, rather than a refusal of an image every still thumbnail takes).
- `max_pixels` bounds the output over all frames and sizes (each frame is held decoded while the animation is
  encoded): past it the job is refused, at the API from the probed size, else by the worker (`AnimationTooLarge`).
"""

from __future__ import annotations

from dataclasses import dataclass

from thumbify.errors import AnimationTooLarge
from thumbify.geometry import place
from thumbify.spec import ANIMATED_FORMATS, ThumbnailSpec

ANIMATED_SOURCES = frozenset({"gif", "webp"})  # the decoders that give frames with delays and a loop count
# The settings' defaults (a test holds them equal). 200 frames: 10 s at 20 fps, the length most GIFs stay under.
# 40,000,000 pixels: 200 frames of 447x447, or 150 of 512x512; held as 8-bit RGBA that is 160 MB per render
# process at worst, and about 4 s of WebP encoding at effort 4 on one core (benchmarks/README.md, "Animated").
DEFAULT_MAX_FRAMES = 200
DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True)
class AnimationLimits:
    max_frames: int = DEFAULT_MAX_FRAMES
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_settings(cls, settings) -> AnimationLimits:
        return cls(settings.animation_max_frames, settings.animation_max_pixels)


def animates(spec: ThumbnailSpec, fmt: str, pages: int) -> bool:
    """Whether this source's thumbnails are animated: asked for, a GIF or WebP of several frames, and an output
    format that animates (any other takes the first frame, as a still source with `animated=true` renders as today)."""
    return spec.animated and pages > 1 and fmt in ANIMATED_SOURCES and spec.format in ANIMATED_FORMATS


DEFAULT_LIMITS = AnimationLimits()


def kept_frames(pages: int, limits: AnimationLimits) -> int:
    return min(pages, limits.max_frames)


def output_pixels(spec: ThumbnailSpec, width: int, height: int, frames: int) -> int:
    """Pixels of every frame of every size of an upright `width`×`height` animation."""
    sizes = {place(width, height, size, spec.fit) for size in spec.sizes}
    return frames * sum(p.out_w * p.out_h for p in sizes)


def check_animation(
    spec: ThumbnailSpec, fmt: str, width: int, height: int, pages: int, limits: AnimationLimits
) -> None:
    """AnimationTooLarge when the animation these options ask for is over the pixel cap."""
    if not animates(spec, fmt, pages):
        return
    frames = kept_frames(pages, limits)
    total = output_pixels(spec, width, height, frames)
    if total > limits.max_pixels:
        raise AnimationTooLarge(
            f"animated=true: {frames:,} frames at {', '.join(map(str, spec.sizes))} make {total:,} output pixels; "
            f"the limit is {limits.max_pixels:,} (fewer or smaller sizes, or animated=false for the first frame)",
            pixels=total,
            limit=limits.max_pixels,
        )


__all__ = [
    "ANIMATED_SOURCES",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_PIXELS",
    "AnimationLimits",
    "animates",
    "check_animation",
    "kept_frames",
    "output_pixels",
]
