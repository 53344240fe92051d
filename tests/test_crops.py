"""The crop arithmetic of `gpu_worker.backends.crops`, checked against libvips' own `autorot`."""

from __future__ import annotations

import numpy as np
import pytest
from support import images

from gpu_worker.backends.crops import decoded_rect, window_start


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoded_rect_is_the_same_pixels_as_the_upright_rect(orientation: int) -> None:
    upright = images.photo_like_image(60, 40, seed=orientation)
    stored = images.with_orientation(upright, orientation)
    rect = (7, 5, 20, 11)  # left, top, width, height of the upright image
    cut = stored.crop(*decoded_rect(orientation, rect, (60, 40)))
    assert np.array_equal(cut.autorot().numpy(), upright.crop(*rect).numpy())


def test_window_start_is_nearest_the_point_and_clamped() -> None:
    assert window_start(200, 100, 0.5) == 50
    assert window_start(200, 100, 0.8) == 100  # clamped: the window ends at the edge
    assert window_start(200, 100, 0.0) == 0
    assert window_start(200, 100, 0.6) == 70
    assert window_start(100, 100, 0.9) == 0  # no room to move
