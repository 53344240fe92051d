"""Fit arithmetic (`place`) and the JPEG shrink-on-load choice (`load_shrink`), apart from any engine."""

from __future__ import annotations

import itertools

import pytest

from thumbify.geometry import MAX_EDGE_LOSS, Placement, load_shrink, place
from thumbify.spec import Fit, Size

SOURCES = [
    (4000, 3000),  # landscape photo
    (3000, 4000),  # portrait photo
    (1000, 1000),  # square
    (1920, 1080),
    (1080, 1920),
    (100, 50),  # smaller than most boxes
    (50, 100),
    (1, 1),
    (7, 3),
    (30000, 1),  # extreme aspect ratios
    (1, 30000),
    (65535, 3),
    (2, 65535),
    (4097, 4095),
]
BOXES = [(256, 256), (320, 200), (200, 320), (8, 8), (4096, 4096), (4096, 8), (8, 4096), (1000, 999)]
CASES = list(itertools.product(SOURCES, BOXES))


def size(w: int, h: int) -> Size:
    return Size(width=w, height=h)


def aspect_close(w: int, h: int, src_w: int, src_h: int) -> bool:
    """`w`x`h` has the aspect of `src_w`x`src_h` up to rounding each side to a whole pixel (at least 1)."""
    # w/h ≈ src_w/src_h  ⇔  w*src_h ≈ h*src_w, within the error one pixel of rounding on either side can make.
    return abs(w * src_h - h * src_w) <= 0.5 * (src_h + src_w) + 1e-9 or min(w, h) == 1


# -- inside -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src, box", CASES)
def test_inside_fits_the_box_keeps_aspect_and_never_enlarges(src, box) -> None:
    p = place(*src, size(*box), Fit.inside)
    assert (p.resize_w, p.resize_h) == (p.out_w, p.out_h)
    assert not p.crops and not p.pads
    assert 1 <= p.out_w <= min(box[0], src[0])
    assert 1 <= p.out_h <= min(box[1], src[1])
    assert aspect_close(p.out_w, p.out_h, *src)
    if src[0] <= box[0] and src[1] <= box[1]:
        assert (p.out_w, p.out_h) == src  # a thumbnail never enlarges its source
    else:
        assert p.out_w == box[0] or p.out_h == box[1]  # it touches the box


@pytest.mark.parametrize(
    "src, box, out",
    [
        ((4000, 3000), (256, 256), (256, 192)),
        ((3000, 4000), (256, 256), (192, 256)),
        ((1920, 1080), (320, 200), (320, 180)),
        ((1080, 1920), (320, 300), (169, 300)),
        ((100, 50), (256, 256), (100, 50)),
        ((256, 256), (256, 256), (256, 256)),
        ((257, 256), (256, 256), (256, 255)),
        ((30000, 1), (256, 256), (256, 1)),
        ((1, 30000), (256, 256), (1, 256)),
        ((30000, 100), (256, 256), (256, 1)),
    ],
)
def test_inside_examples(src, box, out) -> None:
    p = place(*src, size(*box), Fit.inside)
    assert (p.out_w, p.out_h) == out


# -- cover ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src, box", CASES)
def test_cover_gives_the_exact_box_and_crops_only_the_overflow(src, box) -> None:
    p = place(*src, size(*box), Fit.cover)
    assert (p.out_w, p.out_h) == box
    assert p.resize_w >= box[0] and p.resize_h >= box[1]  # the box is filled: nothing to pad
    assert not p.pads
    # One axis fits the box exactly; only the other overflows (and is cropped).
    assert p.resize_w == box[0] or p.resize_h == box[1]
    assert p.crops == (p.resize_w > box[0] or p.resize_h > box[1])
    assert aspect_close(p.resize_w, p.resize_h, *src) or p.resize_w == box[0] or p.resize_h == box[1]


@pytest.mark.parametrize(
    "src, box, resize",
    [
        ((4000, 3000), (256, 256), (341, 256)),
        ((3000, 4000), (256, 256), (256, 341)),
        ((1920, 1080), (320, 320), (569, 320)),
        ((100, 50), (256, 256), (512, 256)),  # cover enlarges: the box must be filled
        ((1000, 1000), (320, 200), (320, 320)),
    ],
)
def test_cover_examples(src, box, resize) -> None:
    p = place(*src, size(*box), Fit.cover)
    assert (p.resize_w, p.resize_h) == resize
    assert (p.out_w, p.out_h) == box
    assert p.crops


def test_cover_same_aspect_does_not_crop() -> None:
    p = place(4000, 2500, size(320, 200), Fit.cover)
    assert p == Placement(320, 200, 320, 200)
    assert not p.crops and not p.pads


# -- fill -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src, box", CASES)
def test_fill_stretches_to_the_exact_box(src, box) -> None:
    p = place(*src, size(*box), Fit.fill)
    assert p == Placement(box[0], box[1], box[0], box[1])
    assert not p.crops and not p.pads


# -- contain ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("src, box", CASES)
def test_contain_fits_inside_and_pads_to_the_exact_box(src, box) -> None:
    p = place(*src, size(*box), Fit.contain)
    assert (p.out_w, p.out_h) == box
    assert 1 <= p.resize_w <= box[0] and 1 <= p.resize_h <= box[1]
    assert not p.crops
    assert p.pads == ((p.resize_w, p.resize_h) != box)
    assert p.resize_w == box[0] or p.resize_h == box[1]  # scaled (up or down) until it touches the box
    assert aspect_close(p.resize_w, p.resize_h, *src)
    # Centred: the padding on the two sides differs by at most one pixel.
    assert 0 <= p.pad_left and p.pad_left + p.resize_w <= box[0]
    assert 0 <= p.pad_top and p.pad_top + p.resize_h <= box[1]
    assert abs((box[0] - p.resize_w - p.pad_left) - p.pad_left) <= 1
    assert abs((box[1] - p.resize_h - p.pad_top) - p.pad_top) <= 1


@pytest.mark.parametrize(
    "src, box, resize, pad",
    [
        ((4000, 3000), (256, 256), (256, 192), (0, 32)),
        ((3000, 4000), (256, 256), (192, 256), (32, 0)),
        ((100, 50), (256, 256), (256, 128), (0, 64)),  # contain scales up to touch the box
        ((1, 30000), (256, 256), (1, 256), (127, 0)),
        ((1000, 1000), (320, 200), (200, 200), (60, 0)),
    ],
)
def test_contain_examples(src, box, resize, pad) -> None:
    p = place(*src, size(*box), Fit.contain)
    assert (p.resize_w, p.resize_h) == resize
    assert (p.pad_left, p.pad_top) == pad


# -- every fit ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit", list(Fit))
@pytest.mark.parametrize("src, box", CASES)
def test_no_side_is_ever_zero(fit: Fit, src, box) -> None:
    p = place(*src, size(*box), fit)
    assert min(p.resize_w, p.resize_h, p.out_w, p.out_h) >= 1
    assert all(isinstance(v, int) for v in (p.resize_w, p.resize_h, p.out_w, p.out_h))


@pytest.mark.parametrize("fit", [Fit.inside, Fit.contain, Fit.fill])
def test_output_never_exceeds_the_box(fit: Fit) -> None:
    for src, box in CASES:
        p = place(*src, size(*box), fit)
        assert p.out_w <= box[0] and p.out_h <= box[1], (src, box)
        assert p.resize_w <= box[0] and p.resize_h <= box[1], (src, box)


def test_placements_are_hashable_values() -> None:
    # The backend makes a set of them to render each distinct output once.
    a = place(100, 50, size(256, 256), Fit.inside)
    b = place(100, 50, size(300, 200), Fit.inside)
    assert a == b and len({a, b}) == 1


# -- load_shrink ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, target, headroom, shrink",
    [
        ((4000, 3000), (256, 192), 1.9, 8),  # 500x375 ≥ 1.9 × 256x192
        ((4000, 3000), (256, 192), 2.0, 4),  # 500 < 512: one step less
        ((4000, 3000), (512, 384), 1.9, 4),
        ((4000, 3000), (1024, 768), 1.9, 2),
        ((4000, 3000), (2048, 1536), 1.9, 1),
        ((4000, 3000), (4000, 3000), 1.0, 1),
        ((1000, 750), (256, 192), 1.9, 2),
        ((640, 480), (256, 192), 1.9, 1),
        ((100, 50), (100, 50), 1.9, 1),
        ((30000, 30000), (256, 256), 1.9, 8),
        ((30000, 1), (256, 1), 1.9, 1),  # the short side has nothing to spare
        ((4000, 3000), (256, 1000), 1.9, 1),  # each axis must keep its headroom, not just one
        ((4000, 3000), (1000, 192), 1.9, 2),
        # libvips drops the last n mod s source pixels: only where that is under a tenth of an output pixel.
        ((1283, 851), (128, 85), 1.9, 2),  # 1/4 would drop 0.3 px of the last column
        ((1280, 853), (128, 85), 1.9, 4),  # 1/8 would drop 0.5 px of the last row; 1/4 drops 0.1
        ((4097, 4095), (256, 256), 1.9, 2),
    ],
)
def test_load_shrink(src, target, headroom, shrink) -> None:
    assert load_shrink(*src, *target, headroom) == shrink


@pytest.mark.parametrize("src, target", [((w, h), (tw, th)) for (w, h), (tw, th) in CASES])
def test_load_shrink_always_keeps_the_headroom(src, target) -> None:
    headroom = 1.9
    shrink = load_shrink(*src, *target, headroom)
    assert shrink in (1, 2, 4, 8)
    if shrink > 1:
        assert src[0] / shrink >= target[0] * headroom
        assert src[1] / shrink >= target[1] * headroom
        assert (src[0] % shrink) * target[0] / src[0] <= MAX_EDGE_LOSS
        assert (src[1] % shrink) * target[1] / src[1] <= MAX_EDGE_LOSS
    for bigger in (s for s in (2, 4, 8) if s > shrink):  # and it is the largest step that does
        assert (
            src[0] / bigger < target[0] * headroom
            or src[1] / bigger < target[1] * headroom
            or (src[0] % bigger) * target[0] / src[0] > MAX_EDGE_LOSS
            or (src[1] % bigger) * target[1] / src[1] > MAX_EDGE_LOSS
        )


def test_load_shrink_custom_steps() -> None:
    assert load_shrink(4000, 3000, 256, 192, 1.9, steps=(4, 2)) == 4
    assert load_shrink(4000, 3000, 256, 192, 1.9, steps=()) == 1
