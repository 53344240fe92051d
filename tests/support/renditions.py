"""Rendering as the worker does it, and its output judged by its pixels: a source written to disk as a backend is
handed it (`item`, `render_with`), renditions decoded to numpy and compared (`pixels`, `close`, `psnr`), a float64
Lanczos-3 reference, and the marked and banded sources the orientation and fit tests read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips

from gpu_worker.backends.base import Rendition
from support import images
from thumbify.probe import sniff
from thumbify.spec import Format, ThumbnailSpec

STEM = "pic"


MAGIC = {
    Format.jpeg: lambda b: b[:3] == b"\xff\xd8\xff",
    Format.png: lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    Format.webp: lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    Format.gif: lambda b: b[:6] in (b"GIF87a", b"GIF89a"),
    Format.avif: lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"),
}


def decode(rendition: Rendition) -> pyvips.Image:
    image = pyvips.Image.new_from_buffer(rendition.data, "")
    assert (image.width, image.height) == (rendition.width, rendition.height)
    return image


def pixels(rendition: Rendition) -> np.ndarray:
    """HxWxB uint8."""
    image = decode(rendition)
    assert image.format == "uchar"
    array = image.numpy()
    return array[..., None] if array.ndim == 2 else array


def only(renditions: list[Rendition]) -> Rendition:
    assert len(renditions) == 1, [r.name for r in renditions]
    return renditions[0]


def close(actual, expected, tol: float) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)) <= tol))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of `a` against `b` (`peak`: the largest sample value, 65535 for 16 bits)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(peak * peak / mse))


def lanczos3_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in float64 weights of an antialiased Lanczos-3 downscale (the kernel stretched by the scale),
    pixel centres aligned, each row normalised."""
    scale = n_out / n_in
    centres = (np.arange(n_out) + 0.5) / scale - 0.5
    d = (np.arange(n_in)[None, :] - centres[:, None]) * min(1.0, scale)
    weights = np.sinc(d) * np.sinc(d / 3.0) * (np.abs(d) < 3.0)
    return weights / weights.sum(axis=1, keepdims=True)


def lanczos3_reference(full: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """A float64 Lanczos-3 resample of an HxWxC array, separable, with no shortcut (no box pre-shrink)."""
    h, w, c = full.shape
    rows = lanczos3_matrix(h, out_h) @ full.reshape(h, w * c)  # out_h x (w*c)
    cols = lanczos3_matrix(w, out_w)
    out = np.einsum("xw,hwc->hxc", cols, rows.reshape(out_h, w, c), optimize=True)
    return np.clip(out, 0.0, 255.0)


def quadrants(array: np.ndarray) -> dict[str, np.ndarray]:
    """The colour at the centre of each quadrant of an upright image."""
    h, w = array.shape[:2]
    return {
        "tl": array[h // 4, w // 4, :3],
        "tr": array[h // 4, 3 * w // 4, :3],
        "bl": array[3 * h // 4, w // 4, :3],
        "br": array[3 * h // 4, 3 * w // 4, :3],
    }


def assert_marked_upright(array: np.ndarray, tol: float = 12) -> None:
    q = quadrants(array)
    assert close(q["tl"], images.MARK, tol), q
    for corner in ("tr", "bl", "br"):
        assert close(q[corner], images.GREY, tol), q


OPAQUE = (40, 90, 200)


def bands_image(width: int = 400, height: int = 200) -> pyvips.Image:
    """Red band on the left, green on the right, a blue square in the centre, grey elsewhere."""
    array = np.full((height, width, 3), 128, np.uint8)
    array[:, : width // 8] = (220, 30, 30)
    array[:, -width // 8 :] = (30, 200, 30)
    cy, cx, r = height // 2, width // 2, height // 5
    array[cy - r : cy + r, cx - r : cx + r] = (30, 30, 220)
    return images.from_array(array)


def assert_readable(detail: str, fmt: str) -> None:
    assert fmt in detail
    assert 10 < len(detail) < 300
    assert "\n" not in detail and "Traceback" not in detail


def render_with(backend, tmp_path: Path):
    """render(data, name=..., **spec) -> renditions, exactly as the worker calls `backend` (the `render` fixture)."""
    counter = iter(range(1_000_000))

    def _render(data: bytes, name: str | None = None, **spec) -> list[Rendition]:
        fmt = sniff(data[:32])
        assert fmt is not None, "the test image is not in a format we accept"
        path = tmp_path / (name or f"source-{next(counter)}.{fmt}")
        path.write_bytes(data)
        return backend.render(path, fmt, ThumbnailSpec(**spec), STEM)

    return _render


def item(tmp_path: Path, name: str, data: bytes, **spec) -> tuple[Path, str, ThumbnailSpec, str]:
    """A job item as the worker hands it to a backend: (path written, format, spec, stem)."""
    fmt = sniff(data[:32])
    assert fmt is not None
    path = images.write(tmp_path / name, data)
    return path, fmt, ThumbnailSpec(**spec), Path(name).stem
