"""Image facts (`facts=true`): placeholders, colours, a perceptual hash and transparency, read off the smallest
rendition's pixels (upright, sRGB, before crop/pad/flatten) reduced to at most `FACTS_PX` a side: the original is
never decoded again. The backends all end in `finishing.render_sizes`, so every backend gives the same facts.

The encoders are numpy ports of the reference algorithms, vectorised (the reference packages loop per pixel in
Python, or need Pillow): tests/test_facts.py checks them against `blurhash-python`, `thumbhash` and `imagehash`.

How alpha counts: `transparent` is any alpha below 255 in the rendition; `thumbhash` encodes alpha itself; the colours
weigh each pixel by its alpha (the dominant colour counts only pixels at least half opaque); `blurhash` and the dHash
see the image composited over white, as a page shows it.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import asdict, dataclass

import numpy as np
import pyvips

FACTS_PX = 64  # the side the facts are read at: plenty for 4x3 blurhash, thumbhash (<=100) and a 9x8 dHash
BLURHASH_COMPONENTS = (4, 3)  # x, y: the blurhash default most clients use
_BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


@dataclass(frozen=True)
class Facts:
    blurhash: str
    thumbhash: str  # base64 of its bytes, as the reference's demo writes it
    dominant_color: str  # "#rrggbb"
    average_color: str  # "#rrggbb"
    dhash: str  # 64-bit difference hash, 16 hex digits, as str(imagehash.dhash(...)) writes it
    transparent: bool

    def as_dict(self) -> dict:
        return asdict(self)


def image_facts(img: pyvips.Image) -> Facts:
    """The facts of `img`: 8-bit sRGB, 3 bands or 4 with alpha, upright."""
    transparent = bool(img.hasalpha() and img[img.bands - 1].min() < 255)
    small = _reduce(img, FACTS_PX)
    px = np.ndarray(buffer=small.write_to_memory(), dtype=np.uint8, shape=(small.height, small.width, small.bands))
    rgb = px[..., :3].astype(np.float64)
    alpha = px[..., 3].astype(np.float64) / 255 if small.bands == 4 else np.ones(rgb.shape[:2])
    over_white = rgb * alpha[..., None] + 255 * (1 - alpha[..., None])
    return Facts(
        blurhash=blurhash(over_white, *BLURHASH_COMPONENTS),
        thumbhash=base64.b64encode(thumbhash(px if small.bands == 4 else _with_alpha(px))).decode(),
        dominant_color=_hex(dominant_color(rgb, alpha)),
        average_color=_hex(average_color(rgb, alpha)),
        dhash=dhash(_gray(over_white)),
        transparent=transparent,
    )


def _reduce(img: pyvips.Image, side: int) -> pyvips.Image:
    from gpu_worker.backends.finishing import resize  # premultiplied Lanczos, as every rendition is resampled

    if img.bands not in (3, 4):
        img = img.colourspace("srgb") if img.bands < 3 else img.extract_band(0, n=4 if img.hasalpha() else 3)
    scale = side / max(img.width, img.height)
    if scale < 1:
        w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        img = resize(img, w / img.width, h / img.height)
        img = img.crop(0, 0, min(w, img.width), min(h, img.height))
    return img.cast("uchar") if img.format != "uchar" else img


def _with_alpha(px: np.ndarray) -> np.ndarray:
    return np.concatenate([px, np.full(px.shape[:2] + (1,), 255, np.uint8)], axis=2)


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in np.clip(np.floor(rgb + 0.5), 0, 255))


# -- colours --------------------------------------------------------------------------------------------------------


def _to_linear(v: np.ndarray) -> np.ndarray:
    v = v / 255
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _to_srgb(v: np.ndarray) -> np.ndarray:
    v = np.clip(v, 0, 1)
    return 255 * np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


def average_color(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The alpha-weighted mean in linear light (what the eye averages; an sRGB mean comes out too dark)."""
    weight = alpha.sum()
    if weight == 0:
        return np.zeros(3)
    return _to_srgb((_to_linear(rgb) * alpha[..., None]).sum(axis=(0, 1)) / weight)


def dominant_color(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The mean colour of the most populous cell of a 16x16x16 grid over sRGB (4 bits a channel), counting pixels at
    least half opaque (all, if none is): the colour most of the picture is, not a mix of its colours as the average.
    Ties go to the lowest cell index, so the answer is deterministic."""
    keep = alpha >= 0.5
    if not keep.any():
        keep = np.ones_like(keep)
    pixels = rgb[keep]
    cells = pixels.astype(np.int64) >> 4
    index = (cells[:, 0] << 8) | (cells[:, 1] << 4) | cells[:, 2]
    top = np.bincount(index, minlength=4096).argmax()
    return pixels[index == top].mean(axis=0)


# -- blurhash (github.com/woltapp/blurhash, C encoder) --------------------------------------------------------------


def _base83(value: int, length: int) -> str:
    return "".join(_BASE83[(value // 83 ** (length - i - 1)) % 83] for i in range(length))


def blurhash(rgb: np.ndarray, nx: int, ny: int) -> str:
    """`rgb` (h, w, 3) sRGB values 0..255 as floats. The reference's basis (cos(pi*i*x/w), no half-pixel offset)."""
    h, w = rgb.shape[:2]
    linear = _to_linear(np.floor(rgb + 0.5))
    cos_x = np.cos(np.pi * np.arange(nx)[:, None] * np.arange(w)[None, :] / w)  # (nx, w)
    cos_y = np.cos(np.pi * np.arange(ny)[:, None] * np.arange(h)[None, :] / h)  # (ny, h)
    factors = np.einsum("jy,ix,yxc->jic", cos_y, cos_x, linear) / (w * h)  # (ny, nx, 3)
    factors[1:] *= 2
    factors[0, 1:] *= 2
    flat = factors.reshape(-1, 3)
    dc, ac = flat[0], flat[1:]
    out = _base83((nx - 1) + (ny - 1) * 9, 1)
    if len(ac):
        quantised_max = int(max(0, min(82, np.floor(np.abs(ac).max() * 166 - 0.5))))
        maximum = (quantised_max + 1) / 166
        out += _base83(quantised_max, 1)
    else:
        maximum = 1.0
        out += _base83(0, 1)
    r, g, b = (int(v) for v in _to_srgb(dc) + 0.5)
    out += _base83((r << 16) + (g << 8) + b, 4)
    quant = np.clip(np.floor(np.sign(ac) * np.sqrt(np.abs(ac / maximum)) * 9 + 9.5), 0, 18).astype(int)
    for qr, qg, qb in quant:
        out += _base83(qr * 19 * 19 + qg * 19 + qb, 2)
    return out


# -- thumbhash (github.com/evanw/thumbhash, the JavaScript encoder) -------------------------------------------------


def _round(x: float) -> int:
    """JavaScript's Math.round (halves up), as the reference encoder rounds."""
    return int(np.floor(x + 0.5))


def _channel(channel: np.ndarray, nx: int, ny: int) -> tuple[float, list[float], float]:
    h, w = channel.shape
    cos_x = np.cos(np.pi / w * np.arange(nx)[:, None] * (np.arange(w)[None, :] + 0.5))
    cos_y = np.cos(np.pi / h * np.arange(ny)[:, None] * (np.arange(h)[None, :] + 0.5))
    f = cos_y @ channel @ cos_x.T / (w * h)  # (ny, nx)
    coefficients = [f[cy, cx] for cy in range(ny) for cx in range(nx) if cx * ny < nx * (ny - cy)]
    dc, ac = coefficients[0], coefficients[1:]
    scale = max((abs(v) for v in ac), default=0.0)
    if scale:
        ac = [0.5 + 0.5 / scale * v for v in ac]
    return float(dc), ac, float(scale)


def thumbhash(rgba: np.ndarray) -> bytes:
    """`rgba` (h, w, 4) uint8, at most 100x100."""
    h, w = rgba.shape[:2]
    alpha = rgba[..., 3].astype(np.float64) / 255
    colour = rgba[..., :3].astype(np.float64) / 255 * alpha[..., None]
    total = alpha.sum()
    average = colour.sum(axis=(0, 1)) / total if total else np.zeros(3)
    has_alpha = total < w * h
    limit = 5 if has_alpha else 7
    lx = max(1, _round(limit * w / max(w, h)))
    ly = max(1, _round(limit * h / max(w, h)))
    mixed = average * (1 - alpha[..., None]) + colour
    r, g, b = mixed[..., 0], mixed[..., 1], mixed[..., 2]
    l_dc, l_ac, l_scale = _channel((r + g + b) / 3, max(3, lx), max(3, ly))
    p_dc, p_ac, p_scale = _channel((r + g) / 2 - b, 3, 3)
    q_dc, q_ac, q_scale = _channel(r - g, 3, 3)
    a_dc, a_ac, a_scale = _channel(alpha, 5, 5) if has_alpha else (1.0, [], 1.0)
    landscape = w > h
    header24 = (
        _round(63 * l_dc)
        | (_round(31.5 + 31.5 * p_dc) << 6)
        | (_round(31.5 + 31.5 * q_dc) << 12)
        | (_round(31 * l_scale) << 18)
        | (int(has_alpha) << 23)
    )
    header16 = (ly if landscape else lx) | (_round(63 * p_scale) << 3) | (_round(63 * q_scale) << 9)
    header16 |= int(landscape) << 15
    out = [header24 & 255, (header24 >> 8) & 255, header24 >> 16, header16 & 255, header16 >> 8]
    if has_alpha:
        out.append(_round(15 * a_dc) | (_round(15 * a_scale) << 4))
    nibbles = [_round(15 * v) for v in [*l_ac, *p_ac, *q_ac, *a_ac]]
    if len(nibbles) % 2:
        nibbles.append(0)
    out += [lo | (hi << 4) for lo, hi in zip(nibbles[::2], nibbles[1::2], strict=True)]
    return bytes(out)


# -- dHash (imagehash.dhash) ----------------------------------------------------------------------------------------


def _gray(rgb: np.ndarray) -> np.ndarray:
    """Pillow's `convert("L")` (ITU-R 601-2 luma, its fixed-point rounding), which imagehash hashes."""
    v = np.floor(rgb + 0.5).astype(np.int64)
    return ((v[..., 0] * 19595 + v[..., 1] * 38470 + v[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def dhash(gray: np.ndarray, size: int = 8) -> str:
    """imagehash's dHash: `gray` reduced to (size+1) x size with Lanczos-3 as Pillow's `resize` weighs it (one float
    pass here, where Pillow rounds to 8 bits between its two), a bit per pixel brighter than its right-hand
    neighbour, row-major, written as imagehash writes a hash (hex, most significant bit first)."""
    h, w = gray.shape
    cells = _lanczos(h, size) @ gray.astype(np.float64) @ _lanczos(w, size + 1).T
    return dhash_bits(np.clip(np.floor(cells + 0.5), 0, 255))


@functools.lru_cache(maxsize=256)
def _lanczos(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of Pillow's Lanczos-3 resample: the kernel stretched by the reduction, each row's window
    clipped to the image and normalised (cached: the facts' image sizes repeat)."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    x = ((np.arange(n_in)[None, :] + 0.5) - centres[:, None]) / stretch
    weights = np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights


def dhash_bits(cells: np.ndarray) -> str:
    """The hash of an already reduced (size+1)-wide grey image."""
    bits = (cells[:, 1:] > cells[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):0{len(bits) // 4}x}"


__all__ = ["FACTS_PX", "Facts", "average_color", "blurhash", "dhash", "dominant_color", "image_facts", "thumbhash"]
