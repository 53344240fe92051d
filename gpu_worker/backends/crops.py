"""Where `cover` crops: libvips' own `smartcrop` for centre, attention and entropy; for `focal` (the client's point)
and `faces` (the detector's), the window of the box whose centre is nearest that point, clamped to the image."""

from __future__ import annotations

import pyvips

from thumbify.spec import Crop, ThumbnailSpec

# EXIF orientation → (upright x runs against the decoded axis, upright y does); 5..8 also swap the axes
# (`plan.SWAPS_AXES`). tests/test_crops.py checks this against libvips' `autorot`.
REVERSED = {1: (False, False), 2: (True, False), 3: (True, True), 4: (False, True)}
REVERSED |= {5: (False, False), 6: (True, False), 7: (True, True), 8: (False, True)}


def focal_point(spec: ThumbnailSpec) -> tuple[float, float]:
    """The point the crop keeps nearest its centre, as fractions of the upright source (the centre but for focal)."""
    if spec.crop is Crop.focal:
        return spec.fx, spec.fy
    return 0.5, 0.5


def window_start(length: int, window: int, centre: float) -> int:
    """The first pixel of `window` pixels of `length` whose middle is nearest `centre` (a fraction of `length`)."""
    return min(max(round(centre * length - window / 2), 0), length - window)


def decoded_rect(orientation: int, rect: tuple[int, int, int, int], upright: tuple[int, int]) -> tuple[int, ...]:
    """`rect` (left, top, width, height) of the upright image of size `upright`, in the decoded (stored) image."""
    left, top, width, height = rect
    flip_x, flip_y = REVERSED.get(orientation, (False, False))
    if flip_x:
        left = upright[0] - left - width
    if flip_y:
        top = upright[1] - top - height
    return (top, left, height, width) if orientation >= 5 else (left, top, width, height)


def crop(img: pyvips.Image, spec: ThumbnailSpec, width: int, height: int, point: tuple[float, float]) -> pyvips.Image:
    """`img` (upright, resized) cropped to `width`×`height` as `spec.crop` says; `point` is the focal point within
    `img` (`cut_overflow` may have cut it out of a larger source). `faces` with no face found crops as `attention`."""
    if spec.crop is Crop.faces:
        from gpu_worker.backends.faces import faces_centre

        point = faces_centre(img)
        if point is None:
            return img.smartcrop(width, height, interesting="attention")
    elif spec.crop is not Crop.focal:
        return img.smartcrop(width, height, interesting=spec.crop.value)
    left = window_start(img.width, width, point[0])
    top = window_start(img.height, height, point[1])
    # Offsets as smartcrop leaves them (negated): an animation's later frames are cut where its first was.
    return img.crop(left, top, width, height).copy(xoffset=-left, yoffset=-top)


__all__ = ["crop", "decoded_rect", "focal_point", "window_start"]
