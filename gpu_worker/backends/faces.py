"""`crop=faces`: where the faces are, by OpenCV's Haar cascade (`haarcascade_frontalface_default.xml`, shipped in the
`opencv-python-headless` wheel, the `faces` extra). cv2 is imported on the first `crop=faces` only: a render process
that never sees one does not pay its ~0.1 s import and ~160 MB of libraries."""

from __future__ import annotations

import functools

import pyvips

# Detection runs on a grey copy at most this long: faces that matter in a thumbnail are big enough here, and the
# cascade's cost grows with the pixels (benchmarks/README.md, "Face crop").
DETECT_SIDE = 400


@functools.cache
def _cascade():
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("OpenCV's frontal face cascade did not load")
    return cascade


def faces_centre(img: pyvips.Image) -> tuple[float, float] | None:
    """The centre of the box around every face found in `img` (upright, sRGB), as fractions of its width and
    height; None where the cascade finds no face."""
    scale = min(1.0, DETECT_SIDE / max(img.width, img.height))
    grey = img.flatten() if img.hasalpha() else img
    grey = grey.colourspace("b-w")[0]
    if scale < 1.0:
        grey = grey.resize(scale)
    # Scale steps of 1.2 (not OpenCV's 1.1): 0.6 of the cost, the same faces found on the benchmark corpus; the smallest
    # face is the cascade's own 24 px window.
    found = _cascade().detectMultiScale(grey.numpy(), scaleFactor=1.2, minNeighbors=5)
    if len(found) == 0:
        return None
    left = min(x for x, _, _, _ in found)
    top = min(y for _, y, _, _ in found)
    right = max(x + w for x, _, w, _ in found)
    bottom = max(y + h for _, y, _, h in found)
    return float(left + right) / 2 / grey.width, float(top + bottom) / 2 / grey.height


__all__ = ["DETECT_SIDE", "faces_centre"]
