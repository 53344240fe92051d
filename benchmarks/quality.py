"""Quality yardstick: a float64 Lanczos-3 reference from the full-resolution decode, and PSNR against it.

The reference is computed in NumPy, separably, with exact Lanczos-3 weights stretched by the scale factor (a proper
antialiasing filter), pixel centres at (i + 0.5)·scale − 0.5 (libvips' and Pillow's convention) and edges
extended by copying (libvips' convention). It is computed once per file and size and cached as .npy under
`<corpus>/.reference/`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def lanczos3_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 weights: out = W @ in."""
    scale = n_in / n_out
    support = 3.0 * max(scale, 1.0)
    stretch = max(scale, 1.0)
    weights = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale - 0.5
        lo, hi = int(np.floor(centre - support)), int(np.ceil(centre + support))
        taps = np.arange(lo, hi + 1)
        x = (taps - centre) / stretch
        w = np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)
        np.add.at(weights[i], np.clip(taps, 0, n_in - 1), w)
        weights[i] /= weights[i].sum()
    return weights


def decode_full(path: Path) -> np.ndarray:
    """The full-resolution decode, upright, sRGB, as uint8 H×W×C (alpha dropped)."""
    import pyvips

    img = pyvips.Image.new_from_file(str(path)).autorot()
    if img.hasalpha():
        img = img.flatten(background=[255, 255, 255])
    if img.interpretation != "srgb" or img.format != "uchar":
        img = img.colourspace("srgb").cast("uchar")
    return to_array(img)


def to_array(img) -> np.ndarray:
    fmt = {"uchar": np.uint8, "float": np.float32, "double": np.float64, "ushort": np.uint16}[img.format]
    return np.ndarray(buffer=img.write_to_memory(), dtype=fmt, shape=(img.height, img.width, img.bands))


def reference(path: Path, out_w: int, out_h: int, cache: Path | None = None) -> np.ndarray:
    """float64 H×W×3 in 0..255 (unrounded)."""
    path = Path(path)
    if cache is not None:
        st = path.stat()
        tag = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
        cached = cache / f"{path.stem}_{out_w}x{out_h}_{tag}.npy"
        if cached.exists():
            return np.load(cached)
    full = decode_full(path)
    h, w, bands = full.shape
    wv = lanczos3_matrix(h, out_h)
    wh = lanczos3_matrix(w, out_w)
    out = np.empty((out_h, out_w, min(bands, 3)), np.float64)
    for c in range(out.shape[2]):
        plane = full[:, :, c].astype(np.float64)
        out[:, :, c] = (wv @ plane) @ wh.T
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".part.npy")
        np.save(tmp, out)
        tmp.replace(cached)
    return out


def read_pixels(data: bytes | Path) -> np.ndarray:
    """Decode an output (bytes or a file) to uint8 H×W×3."""
    import pyvips

    img = pyvips.Image.new_from_file(str(data)) if isinstance(data, Path) else pyvips.Image.new_from_buffer(data, "")
    if img.hasalpha():
        img = img.flatten(background=[255, 255, 255])
    if img.bands == 1:
        img = img.bandjoin([img, img])
    return to_array(img.cast("uchar"))


def psnr(pixels: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB of 8-bit pixels against the float reference. A one-pixel size mismatch (a resampler's rounding)
    is cropped to the common area; anything larger is an error."""
    h, w = min(pixels.shape[0], ref.shape[0]), min(pixels.shape[1], ref.shape[1])
    if abs(pixels.shape[0] - ref.shape[0]) > 1 or abs(pixels.shape[1] - ref.shape[1]) > 1:
        raise ValueError(f"size {pixels.shape[1]}x{pixels.shape[0]} vs reference {ref.shape[1]}x{ref.shape[0]}")
    diff = pixels[:h, :w, :3].astype(np.float64) - ref[:h, :w, :3]
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
