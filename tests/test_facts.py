"""The image facts' encoders (gpu_worker/backends/facts.py) against the reference packages (`blurhash-python`, the C
encoder; `thumbhash`, a port of the reference; `imagehash`), and the colours and transparency on images whose answer
is known. Every backend giving the same facts is in test_backend_contract.py; the job's JSON in test_service_facts."""

from __future__ import annotations

import base64

import blurhash as blurhash_ref
import imagehash
import numpy as np
import pytest
import thumbhash as thumbhash_ref
from PIL import Image
from support import images

from gpu_worker.backends import facts as F


def _generated(w: int, h: int, seed: int) -> np.ndarray:
    """A gradient with noise and a bright disc: every coefficient of the hashes is non-trivial."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 / w, y * 255 / h, (x + y) * 128 / (w + h)], -1) + rng.normal(0, 20, (h, w, 3))
    rgb[np.hypot(x - w / 3, y - h / 2) < min(w, h) / 4] = (250, 240, 40)
    return np.clip(rgb, 0, 255).astype(np.uint8)


SHAPES = [(64, 48, 1), (40, 64, 2), (64, 64, 3), (17, 9, 4), (64, 30, 5), (1, 1, 6)]


@pytest.mark.parametrize("w, h, seed", SHAPES)
def test_blurhash_is_the_reference_encoders_string(w: int, h: int, seed: int) -> None:
    rgb = _generated(w, h, seed)
    for components in [(4, 3), (1, 1), (9, 9)]:
        assert F.blurhash(rgb.astype(float), *components) == blurhash_ref.encode(Image.fromarray(rgb), *components)


@pytest.mark.parametrize("w, h, seed", SHAPES)
def test_thumbhash_is_the_reference_encoders_bytes(w: int, h: int, seed: int) -> None:
    """Opaque images: the `thumbhash` package cannot encode alpha (its alpha branch raises)."""
    rgba = F._with_alpha(_generated(w, h, seed))
    assert F.thumbhash(rgba) == bytes(thumbhash_ref.rgba_to_thumb_hash(w, h, list(rgba.flatten())))


def test_thumbhash_with_alpha_decodes_to_the_right_average_and_opacity() -> None:
    """Left half opaque blue, right half transparent: the reference's decoder reads half opacity and the blue back
    (the hidden green of the clear half does not count)."""
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[:, :32] = (40, 90, 200, 255)
    rgba[:, 32:] = (0, 255, 0, 0)
    r, g, b, a = thumbhash_ref.thumb_hash_to_average_rgba(list(F.thumbhash(rgba)))
    assert abs(a - 0.5) < 0.05
    assert np.allclose((r, g, b), np.array((40, 90, 200)) / 255, atol=0.04)
    # Which side is clear is in the alpha channel's coefficients (the package's full decoder is no help: it keeps the
    # first column's cosines for every column).
    assert F.thumbhash(rgba) != F.thumbhash(rgba[:, ::-1])


@pytest.mark.parametrize("w, h, seed", SHAPES[:5])
def test_dhash_is_imagehashs(w: int, h: int, seed: int) -> None:
    """The grey conversion is Pillow's, bit for bit; the bits of a 9x8 grid are imagehash's; the whole hash lands
    within a few bits of imagehash.dhash of the same pixels (Pillow rounds to 8 bits between its two Lanczos passes,
    which flips a bit where two neighbours are a level apart)."""
    rgb = _generated(w, h, seed)
    grey = F._gray(rgb.astype(float))
    assert np.array_equal(grey, np.asarray(Image.fromarray(rgb).convert("L")))
    cells = np.asarray(Image.fromarray(grey).resize((9, 8), Image.LANCZOS))
    assert F.dhash_bits(cells) == str(imagehash.dhash(Image.fromarray(cells)))
    ours = imagehash.hex_to_hash(F.dhash(grey))
    assert len(str(ours)) == 16
    assert ours - imagehash.dhash(Image.fromarray(rgb)) <= 4


def test_dhash_is_mostly_imagehashs_exactly() -> None:
    """Over 40 images (generated, and photo-like), most hashes are imagehash's to the bit, none more than 4 off."""
    arrays = [_generated(64, 48, seed) for seed in range(20)]
    for seed in range(20):
        photo = images.photo_like_image(64, 48, seed=seed)
        arrays.append(np.ndarray(buffer=photo.write_to_memory(), dtype=np.uint8, shape=(48, 64, 3)))
    off = [
        imagehash.hex_to_hash(F.dhash(F._gray(a.astype(float)))) - imagehash.dhash(Image.fromarray(a)) for a in arrays
    ]
    assert max(off) <= 4 and off.count(0) >= 0.75 * len(off), off


def test_dhash_tells_different_images_apart_and_like_ones_not() -> None:
    a, b = _generated(64, 48, 1), _generated(64, 48, 9)[:, ::-1]
    near = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    ha, hb, hn = (imagehash.hex_to_hash(F.dhash(F._gray(x.astype(float)))) for x in (a, b, near))
    assert ha - hn <= 2
    assert ha - hb >= 16


def test_dominant_colour_is_the_largest_area_not_the_mix() -> None:
    """55% blue, 30% red, 15% green, each a little noisy: the dominant colour is the blue, the average a mix."""
    rng = np.random.default_rng(3)
    rgb = np.zeros((40, 100, 3))
    rgb[:, :55] = (30, 60, 200)
    rgb[:, 55:85] = (210, 30, 30)
    rgb[:, 85:] = (20, 200, 40)
    rgb = np.clip(rgb + rng.integers(-3, 4, rgb.shape), 0, 255)
    dominant = F.dominant_color(rgb, np.ones(rgb.shape[:2]))
    assert np.allclose(dominant, (30, 60, 200), atol=1.5)
    average = F.average_color(rgb, np.ones(rgb.shape[:2]))
    assert not np.allclose(average, (30, 60, 200), atol=20)


def test_dominant_colour_ignores_transparent_pixels() -> None:
    rgb = np.zeros((10, 10, 3))
    rgb[:, :3] = (200, 10, 10)  # opaque, 30%
    rgb[:, 3:] = (10, 10, 200)  # transparent, 70%
    alpha = np.zeros((10, 10))
    alpha[:, :3] = 1
    assert np.allclose(F.dominant_color(rgb, alpha), (200, 10, 10))
    assert F._hex(F.average_color(rgb, alpha)) == "#c80a0a"


def test_average_colour_is_in_linear_light() -> None:
    """Half black, half white: linear 0.5 is sRGB 188, not 128."""
    rgb = np.zeros((2, 2, 3))
    rgb[0] = 255
    assert F._hex(F.average_color(rgb, np.ones((2, 2)))) == "#bcbcbc"


def test_image_facts_of_a_transparent_and_an_opaque_rgba_image() -> None:
    half = F.image_facts(images.rgba_image(200, 100, (40, 90, 200)))
    assert half.transparent
    assert half.dominant_color == half.average_color == "#285ac8"  # the hidden green of the clear half never shows
    assert base64.b64decode(half.thumbhash)[2] & 0x80  # the header's alpha bit
    opaque = np.dstack([np.full((100, 200, 3), (40, 90, 200), np.uint8), np.full((100, 200), 255, np.uint8)])
    whole = F.image_facts(images.from_array(opaque, "srgb"))
    assert not whole.transparent
    assert whole.dominant_color == whole.average_color == "#285ac8"
    assert not base64.b64decode(whole.thumbhash)[2] & 0x80
    # Over white, the half-clear image's blurhash is blue on the left and white on the right: not the opaque one's.
    assert half.blurhash != whole.blurhash
    decoded = np.asarray(blurhash_ref.decode(half.blurhash, 32, 16))
    assert decoded[:, -4:].mean() > 200 and decoded[:, :4, 2].mean() > decoded[:, :4, 0].mean() + 80


def test_image_facts_read_a_small_copy() -> None:
    """A large image is reduced to `FACTS_PX` a side first (thumbhash takes at most 100x100)."""
    found = F.image_facts(images.photo_like_image(400, 300, seed=2))
    assert len(found.dhash) == 16 and found.blurhash[0] == F._base83(3 + 2 * 9, 1)
    assert len(base64.b64decode(found.thumbhash)) > 5
    w, h, _ = thumbhash_ref.thumb_hash_to_rgba(list(base64.b64decode(found.thumbhash)))
    assert abs(w / h - 4 / 3) < 0.2
