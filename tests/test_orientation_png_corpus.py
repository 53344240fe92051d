"""Generated corpora through every backend this machine has (vips; dali, tiles and the router on cpu; their GPU
variants where CUDA is usable: the `any_backend` fixture):

- JPEGs with each of the 8 EXIF orientations whose pixels show which way is up (`corpus.oriented`): every thumbnail
  comes out upright, at one size, with shrink-on-load and several sizes, and cropped to a square by `cover`;
- PNGs of the PngSuite's categories (`corpus.suite`: every colour type and bit depth, palettes with and without
  tRNS, colour keys, Adam7, gAMA/sRGB/iCCP, odd sizes down to 1x1): each renders at its own size with the colours
  and transparency a viewer shows, and the upload check passes it with the right size and alpha.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import corpus
from support.renditions import close, decode, item, only, pixels

from thumbify.probe import probe

pytestmark = pytest.mark.timeout(300)

ORIENTATIONS = list(range(1, 9))
SUITE = corpus.suite()


# -- EXIF orientation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_the_stored_pixels_are_not_upright_but_the_tag_makes_them_so(orientation: int) -> None:
    import pyvips

    stored = pyvips.Image.new_from_buffer(corpus.oriented(orientation, 96, 64), "")
    assert stored.get("orientation") == orientation
    assert corpus.is_upright(stored.autorot().numpy())
    assert corpus.is_upright(stored.numpy()) == (orientation == 1)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_orientation_comes_out_upright(any_backend, tmp_path: Path, orientation: int) -> None:
    one = any_backend.render(*item(tmp_path, "small.jpg", corpus.oriented(orientation, 320, 160), sizes="160"))
    assert [(r.width, r.height) for r in one] == [(160, 80)]
    # Large enough to be decoded at 1/8 and 1/4, with several sizes cut from one shared decode.
    big = corpus.oriented(orientation, 2400, 1200, quality=85)
    several = any_backend.render(*item(tmp_path, "big.jpg", big, sizes="600,256,100x40", format="png"))
    assert [(r.width, r.height) for r in several] == [(600, 300), (256, 128), (80, 40)]
    for r in one + several:
        assert corpus.is_upright(pixels(r)), (r.name, corpus.quadrant_colours(pixels(r)))


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_orientation_is_upright_before_a_cover_crop(any_backend, tmp_path: Path, orientation: int) -> None:
    # A square cut from the middle of a 2:1 image keeps the inner halves of the two top quadrants.
    out = any_backend.render(
        *item(tmp_path, "src.jpg", corpus.oriented(orientation, 320, 160), sizes="64x64", fit="cover", format="png")
    )
    array = pixels(only(out))
    assert array.shape[:2] == (64, 64)
    assert close(array[12:20, 12:20].reshape(-1, 3).mean(axis=0), corpus.UP_LEFT, 14), orientation
    assert close(array[12:20, 44:52].reshape(-1, 3).mean(axis=0), corpus.UP_RIGHT, 14), orientation
    assert close(array[44:52, 8:56].reshape(-1, 3).mean(axis=0), corpus.GREY, 14), orientation


# -- PNG ------------------------------------------------------------------------------------------------------------


def test_the_suite_covers_the_png_suite_categories() -> None:
    headers = [c.png.chunks[0].data for c in SUITE.values()]
    kinds = {(h[9], h[8]) for h in headers}  # (colour type, depth)
    assert kinds == {(colour, depth) for colour, depths in corpus.DEPTHS.items() for depth in depths}
    assert {h[12] for h in headers} == {0, 1}  # interlaced and not
    chunks = {k for c in SUITE.values() for k in c.png.kinds()}
    assert {b"PLTE", b"tRNS", b"gAMA", b"sRGB", b"iCCP"} <= chunks
    sizes = {(int.from_bytes(h[:4], "big"), int.from_bytes(h[4:8], "big")) for h in headers}
    assert {(1, 1), (1, 33), (33, 1), (7, 5)} <= sizes
    assert any(c.png.kinds().count(b"IDAT") > 1 for c in SUITE.values())


@pytest.mark.parametrize("name", list(SUITE))
def test_the_upload_check_passes_every_valid_png(tmp_path: Path, name: str) -> None:
    case = SUITE[name]
    path = tmp_path / f"{name}.png"
    path.write_bytes(case.png.encode())
    info = probe(path, 10**8)
    assert (info.format, info.width, info.height) == ("png", case.rgba.shape[1], case.rgba.shape[0])
    assert info.has_alpha == case.has_alpha


@pytest.mark.parametrize("name", list(SUITE))
def test_every_valid_png_renders_right(any_backend, tmp_path: Path, name: str) -> None:
    case = SUITE[name]
    h, w = case.rgba.shape[:2]
    # "inside" never enlarges: the thumbnail is the source at its own size, each pixel comparable.
    r = only(any_backend.render(*item(tmp_path, f"{name}.png", case.png.encode(), sizes="4096", format="png")))
    assert (r.width, r.height) == (w, h)
    image = decode(r)
    array = pixels(r)
    assert array.shape[2] == (4 if case.has_alpha else 3), image.interpretation
    want = case.rgba if case.has_alpha else case.rgba[..., :3]
    seen = want[..., 3] > 0 if case.has_alpha else np.ones((h, w), bool)
    # Colour where it shows (a fully transparent pixel's colour is nobody's business); alpha everywhere.
    colour_error = np.abs(array[..., :3].astype(int) - want[..., :3])[seen]
    assert colour_error.size == 0 or colour_error.max() <= 1, (name, colour_error.max())
    if case.has_alpha:
        assert np.abs(array[..., 3].astype(int) - want[..., 3]).max() <= 1, name
