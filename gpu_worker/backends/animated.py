"""Animated thumbnails (`animated=true`, thumbify/animation.py): every kept frame of a GIF or WebP through the same
finishing steps as a still (`finishing.finish`), all cropped where the first frame was (so `cover` with `attention`
does not jump from frame to frame), joined into libvips' "toilet roll" (frames stacked, `page-height` each) with the
source's delays and loop count, and encoded as an animated WebP or GIF.

Frames are cut from the decoded roll one at a time rather than resized as one tall image (as libvips' own thumbnail
does): a Lanczos kernel across the roll would bleed each frame's edge rows into the next.
"""

from __future__ import annotations

import pyvips

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.context import RenderContext
from gpu_worker.backends.decode import FAIL_ON, Source, decoded_upright
from gpu_worker.backends.finishing import each_size, encode, finish, rendition
from gpu_worker.backends.metadata import keep_metadata
from thumbify.animation import AnimationLimits, check_animation, kept_frames
from thumbify.geometry import Placement
from thumbify.probe import open_image

DEFAULT_DELAY_MS = 100  # a frame without a delay of its own (libvips' GIF loader's default)


def render_animated(ctx: RenderContext, limits: AnimationLimits) -> list[Rendition]:
    check_animation(ctx.spec, ctx.fmt, ctx.up_w, ctx.up_h, ctx.pages, limits)
    count = kept_frames(ctx.pages, limits)
    roll = open_image(ctx.path, ctx.fmt, n=count, fail_on=FAIL_ON.get(ctx.fmt, "truncated"))
    page_h = roll.get("page-height") if roll.get_typeof("page-height") else roll.height // count
    frames = [roll.crop(0, i * page_h, roll.width, page_h) for i in range(count)]
    delays = list(roll.get("delay"))[:count] if roll.get_typeof("delay") else []
    delays += [DEFAULT_DELAY_MS] * (count - len(delays))
    loop = roll.get("loop") if roll.get_typeof("loop") else 0
    return each_size(ctx, lambda placement, facts: _render(ctx, frames, placement, delays, loop, facts))


def _render(
    ctx: RenderContext, frames: list[pyvips.Image], placement: Placement, delays: list[int], loop: int, facts: bool
) -> Rendition:
    """One size of every frame; `facts` are read off the first frame."""
    finished: list[pyvips.Image] = []
    at: tuple[int, int] | None = None
    found = None
    for frame in frames:
        source = Source(frame, ctx.orientation, ctx.up_w, ctx.up_h, *decoded_upright(frame, ctx.orientation))
        img, read = finish(ctx, source, placement, at, facts=facts and not finished)
        found = found or read
        if placement.crops and at is None:
            at = (-img.xoffset, -img.yoffset)  # where smartcrop cut the first frame (libvips' offsets are negated)
        finished.append(img)
    height = finished[0].height
    roll = pyvips.Image.arrayjoin(finished, across=1).copy()
    roll.set_type(pyvips.GValue.gint_type, "page-height", height)
    roll.set_type(pyvips.GValue.array_int_type, "delay", delays)
    roll.set_type(pyvips.GValue.gint_type, "loop", loop)
    roll = keep_metadata(roll, ctx.header, ctx.spec.keep)
    with ctx.stage("encode"):
        data = encode(roll, ctx.spec)
    return rendition(ctx, roll, height, data, found)


__all__ = ["render_animated"]
