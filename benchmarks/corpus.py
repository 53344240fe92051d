"""A deterministic benchmark corpus of photo-like images.

    python -m benchmarks.corpus DIR [--photos 48] [--no-huge] [--quick]

- `DIR/photos/photo_NNN.jpg`: 4000×3000 (12 MP) JPEGs, quality 90, 4:2:0 chroma like a camera's, 2–5 MB each.
  Each is a smooth two-axis gradient, multi-scale (1/f-like) value noise in luminance and chroma, a dozen flat or
  slanted objects with hard edges, region-varying fine texture (foliage, gravel), lens softness and sensor noise.
  Pure noise is avoided on purpose: it is far slower to decode than a photograph and would skew every number.
- `DIR/web/`: a mix of web-size images (JPEG at 85 in several sizes and aspect ratios, one with EXIF orientation 6,
  one PNG, one WebP), made the same way.
- `DIR/jpeg_1024x768/img_NNN.jpg`: uniform web-size JPEGs, quality 88 (`make_sized`; used by `benchmarks.e2e`).
- `DIR/tiff/noise_8192.tif`: 8192×8192 RGB uncompressed TIFF of noise, 201 MB (`make_tiff`; used by
  `benchmarks.direct_upload`).
- `DIR/huge/huge_30000.jpg`: 30000×30000 (900 MP). It is a lazy libvips pipeline (a small photo-like tile enlarged
  10× plus position-seeded noise) written by `jpegsave`, which pulls it strip by strip, so generating it stays
  within a few hundred MB.

Files that exist are kept (delete one to make it again). Same seed, same libvips → same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PHOTO_SIZE = (4000, 3000)
PHOTO_Q = 90
HUGE_SIDE = 30000
# (name, width, height, format, orientation): the web-size mix.
WEB = [
    ("web_1920x1080", 1920, 1080, "jpeg", 1),
    ("web_2048x1365", 2048, 1365, "jpeg", 1),
    ("web_1600x1200", 1600, 1200, "jpeg", 1),
    ("web_1280x853", 1280, 853, "jpeg", 1),
    ("web_1080x1350", 1080, 1350, "jpeg", 1),
    ("web_1024x768", 1024, 768, "jpeg", 1),
    ("web_800x600", 800, 600, "jpeg", 1),
    ("web_640x480", 640, 480, "jpeg", 1),
    ("web_3000x2000", 3000, 2000, "jpeg", 1),
    ("web_1200x1200", 1200, 1200, "jpeg", 1),
    ("web_2400x1600_rot6", 2400, 1600, "jpeg", 6),
    ("web_1000x750", 1000, 750, "png", 1),
    ("web_1200x800", 1200, 800, "webp", 1),
]
EXT = {"jpeg": "jpg", "png": "png", "webp": "webp"}


@dataclass
class Corpus:
    root: Path
    photos: list[Path] = field(default_factory=list)
    web: list[Path] = field(default_factory=list)
    huge: Path | None = None

    @property
    def jpegs(self) -> list[Path]:
        return [p for p in self.photos + self.web if p.suffix == ".jpg"]


def _vips():
    import pyvips

    pyvips.cache_set_max(0)
    return pyvips


def _field(rng: np.random.Generator, w: int, h: int, cell: int):
    """Smooth 1-band value noise with features about `cell` px across (std ≈ 0.77)."""
    pyvips = _vips()
    cell = max(2, int(cell))
    sw, sh = w // cell + 4, h // cell + 4
    small = np.ascontiguousarray(rng.standard_normal((sh, sw)).astype(np.float32))
    img = pyvips.Image.new_from_memory(small.data, sw, sh, 1, "float").resize(cell, kernel="cubic")
    x0, y0 = int(rng.integers(0, cell)), int(rng.integers(0, cell))
    return img.crop(x0 + cell, y0 + cell, w, h)


def _array(img) -> np.ndarray:
    return np.ndarray(buffer=img.write_to_memory(), dtype=np.float32, shape=(img.height, img.width)).copy()


def photo(seed: int, w: int, h: int):
    """A photo-like sRGB uchar pyvips image (in memory)."""
    pyvips = _vips()
    rng = np.random.default_rng(seed)
    k = max(w, h) / 4000  # feature sizes scale with the frame, so a small image looks like a smaller photo
    lum = pyvips.Image.black(w, h).cast("float")
    for cell, amp in ((1200, 38), (400, 24), (120, 14), (40, 8), (12, 5)):
        lum = lum + _field(rng, w, h, cell * k) * amp
    cb = _field(rng, w, h, 900 * k) * 22 + _field(rng, w, h, 250 * k) * 10
    cr = _field(rng, w, h, 900 * k) * 22 + _field(rng, w, h, 250 * k) * 10
    lum_a, cb_a, cr_a = _array(lum), _array(cb), _array(cr)
    y = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    lum_a += 115 + rng.uniform(-60, 60) * y + rng.uniform(-25, 25) * x
    cb_a += rng.uniform(-25, 25) + rng.uniform(-20, 20) * y
    cr_a += rng.uniform(-20, 20)
    # Objects with hard edges: ellipses, rectangles and slanted bands (a roof line, a horizon).
    for _ in range(int(rng.integers(8, 18))):
        rx, ry = rng.uniform(60, 700) * k, rng.uniform(60, 600) * k
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        x0, x1 = int(max(0, cx - rx)), int(min(w, cx + rx))
        y0, y1 = int(max(0, cy - ry)), int(min(h, cy + ry))
        kind = int(rng.integers(0, 3))
        dl, dcb, dcr = rng.uniform(-70, 70), rng.uniform(-25, 25), rng.uniform(-25, 25)
        slant = rng.uniform(-0.6, 0.6)
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        if kind == 0:
            mask = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
        elif kind == 1:
            mask = np.ones((y1 - y0, x1 - x0), bool)
        else:
            mask = (ys - cy) - slant * (xs - cx) > 0
        lum_a[y0:y1, x0:x1] += np.where(mask, np.float32(dl), np.float32(0))
        cb_a[y0:y1, x0:x1] += np.where(mask, np.float32(dcb), np.float32(0))
        cr_a[y0:y1, x0:x1] += np.where(mask, np.float32(dcr), np.float32(0))
    # Fine texture whose strength varies by region: smooth sky here, foliage there.
    strength = np.clip(_array(_field(rng, w, h, 500 * k)) * 0.7 + 0.4, 0, 1.2)
    fine = pyvips.Image.gaussnoise(w, h, sigma=1.0, mean=0, seed=seed & 0x7FFFFFFF).cast("float").gaussblur(0.9)
    lum_a += _array(fine) * 70 * strength
    rgb = np.empty((h, w, 3), np.float32)
    rgb[..., 0] = lum_a + 1.402 * cr_a
    rgb[..., 1] = lum_a - 0.344136 * cb_a - 0.714136 * cr_a
    rgb[..., 2] = lum_a + 1.772 * cb_a
    np.clip(rgb, 0, 255, out=rgb)
    pixels = np.ascontiguousarray(rgb.astype(np.uint8))
    img = pyvips.Image.new_from_memory(pixels.data, w, h, 3, "uchar").copy(interpretation="srgb")
    img = img.gaussblur(0.5)  # lens softness
    img = img + pyvips.Image.gaussnoise(w, h, sigma=1.5, mean=0, seed=(seed + 7) & 0x7FFFFFFF)  # sensor noise
    return img.cast("uchar").copy(interpretation="srgb").copy_memory()


def _save(img, path: Path, fmt: str, quality: int, orientation: int = 1) -> None:
    tmp = path.with_name(f".{path.name}.part")
    if orientation != 1:
        img = img.copy()
        img.set_type(_vips().GValue.gint_type, "orientation", orientation)
    if fmt == "jpeg":
        keep = "exif" if orientation != 1 else "none"
        img.jpegsave(str(tmp), Q=quality, subsample_mode="on", keep=keep, optimize_coding=True)
    elif fmt == "png":
        img.pngsave(str(tmp), compression=6, keep="none")
    else:
        img.webpsave(str(tmp), Q=quality, keep="none")
    os.replace(tmp, path)


def make_photos(root: Path, count: int, log=print) -> list[Path]:
    out = root / "photos"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = out / f"photo_{i:03d}.jpg"
        if not path.exists():
            t = time.perf_counter()
            _save(photo(1000 + i, *PHOTO_SIZE), path, "jpeg", PHOTO_Q)
            log(f"  {path.name}: {path.stat().st_size / 1e6:.2f} MB in {time.perf_counter() - t:.1f}s")
        paths.append(path)
    return paths


def make_web(root: Path, log=print) -> list[Path]:
    out = root / "web"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, w, h, fmt, orientation) in enumerate(WEB):
        path = out / f"{name}.{EXT[fmt]}"
        if not path.exists():
            # Orientation 6 means "rotate 90° clockwise to display": store it sideways, as a phone does.
            sw, sh = (h, w) if orientation in (5, 6, 7, 8) else (w, h)
            img = photo(5000 + i, sw, sh)
            if fmt != "jpeg" and i % 2:
                img = img.bandjoin(255)  # one with an (opaque) alpha channel
            _save(img, path, fmt, 85, orientation)
            log(f"  {path.name}: {path.stat().st_size / 1e3:.0f} kB")
        paths.append(path)
    return paths


def make_sized(root: Path, count: int, width: int = 1024, height: int = 768, log=print) -> list[Path]:
    """`count` distinct photo-like JPEGs of one size (quality 88, 4:2:0) in DIR/jpeg_WxH/: a corpus of uniform
    web-size uploads (the peer harness's 'small' set is 60 × 1024×768)."""
    out = root / f"jpeg_{width}x{height}"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = out / f"img_{i:03d}.jpg"
        if not path.exists():
            _save(photo(7000 + i, width, height), path, "jpeg", 88)
        paths.append(path)
    log(f"  {out.name}: {count} files, {sum(p.stat().st_size for p in paths) / 1e6:.1f} MB")
    return paths


def _made_once(path: Path, save, log) -> Path:
    """`path`, unless it exists: `save(tmp)` writes it under a temporary name that is then renamed."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    tmp = path.with_name(f".{path.name}.part")
    save(tmp)
    os.replace(tmp, path)
    log(f"  {path.name}: {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t:.0f}s")
    return path


def make_huge(root: Path, side: int = HUGE_SIDE, log=print) -> Path:
    """side×side JPEG from a lazy pipeline that `jpegsave` pulls sequentially: memory stays bounded by strips."""

    def save(tmp: Path) -> None:
        pyvips = _vips()
        tile = photo(9000, side // 10, side // 10)
        big = tile.resize(10, kernel="linear")  # smooth structure at the large scale
        grain = pyvips.Image.gaussnoise(side, side, sigma=6.0, mean=0, seed=9001)  # positional: no big buffer
        img = (big + grain).cast("uchar").copy(interpretation="srgb")
        img.jpegsave(str(tmp), Q=85, subsample_mode="on", keep="none")

    return _made_once(root / "huge" / f"huge_{side}.jpg", save, log)


def make_tiff(root: Path, side: int = 8192, log=print) -> Path:
    """side×side RGB uncompressed (stripped) TIFF of seeded noise: 8192 → 201,326,592 bytes of pixels, a "200 MB"
    original just under the default upload limit of 200 MiB (209,715,200 bytes). Written strip by strip."""

    def save(tmp: Path) -> None:
        pyvips = _vips()
        bands = [pyvips.Image.gaussnoise(side, side, sigma=40.0, mean=128, seed=8100 + b) for b in range(3)]
        img = bands[0].bandjoin(bands[1:]).cast("uchar").copy(interpretation="srgb")
        img.tiffsave(str(tmp), compression="none", keep="none")

    return _made_once(root / "tiff" / f"noise_{side}.tif", save, log)


def ensure(root: Path, photos: int = 48, web: bool = True, huge: bool = False, log=print) -> Corpus:
    root = Path(root)
    corpus = Corpus(root)
    corpus.photos = make_photos(root, photos, log)
    if web:
        corpus.web = make_web(root, log)
    if huge:
        corpus.huge = make_huge(root, log=log)
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.corpus")
    parser.add_argument("dir", type=Path, help="where to write the corpus (existing files are kept)")
    parser.add_argument("--photos", type=int, default=48, help="number of 12 MP JPEGs (default 48)")
    parser.add_argument("--no-web", action="store_true", help="skip the web-size mix")
    parser.add_argument("--no-huge", action="store_true", help="skip the 30000×30000 JPEG")
    parser.add_argument("--quick", action="store_true", help="4 photos, the web mix, no huge image")
    args = parser.parse_args(argv)
    count = 4 if args.quick else args.photos
    started = time.perf_counter()
    corpus = ensure(args.dir, count, web=not args.no_web, huge=not (args.no_huge or args.quick))
    files = corpus.photos + corpus.web + ([corpus.huge] if corpus.huge else [])
    total = sum(p.stat().st_size for p in files)
    print(f"{len(files)} files, {total / 1e6:.0f} MB in {args.dir} ({time.perf_counter() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
