"""What animated thumbnails weigh against their source, and what they cost: four generated real-world-like
animations (GIF sources, as most animations on the web are), each made into an animated WebP and an animated GIF at
256 and 128 px by the vips backend, as the worker does it.

    python -m benchmarks.animated_size [--rounds 3]

- `photo-pan`: a photo-like picture panned across (every pixel changes every frame; the GIF source is dithered).
- `cartoon`: flat-colour shapes bouncing on a flat background.
- `screen`: a screen-recording-like capture: text-like lines appearing on white, a cursor moving.
- `long`: 150 frames of moving gradient shapes.

Reported: source bytes, thumbnail bytes and their ratio to the source, and the CPU seconds of one render (decode,
every frame resized, encode; `time.process_time`, libvips concurrency 1, median over rounds).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import pyvips

from benchmarks.common import table, write_json
from gpu_worker.backends.vips import VipsBackend
from thumbify.probe import configure_vips
from thumbify.spec import ThumbnailSpec


def _roll(frames: list[pyvips.Image], delay: int) -> bytes:
    roll = pyvips.Image.arrayjoin(frames, across=1).copy()
    roll.set_type(pyvips.GValue.gint_type, "page-height", frames[0].height)
    roll.set_type(pyvips.GValue.array_int_type, "delay", [delay] * len(frames))
    roll.set_type(pyvips.GValue.gint_type, "loop", 0)
    return roll.gifsave_buffer()


def _photo(width: int, height: int, seed: int) -> pyvips.Image:
    """Soft gradients with fine noise: a photo's mix of smooth areas and texture."""
    x, y = pyvips.Image.xyz(width, height).bandsplit()
    base = [(x * (255 / width)), (y * (255 / height)), ((x + y) * (127 / (width + height)) + 64)]
    noise = pyvips.Image.gaussnoise(width, height, sigma=18, mean=0, seed=seed).gaussblur(1.2)
    blobs = pyvips.Image.gaussnoise(width // 16, height // 16, sigma=60, seed=seed + 1).resize(16, kernel="cubic")
    r, g, b = (band + noise + blobs for band in base)
    return r.bandjoin([g, b]).cast("uchar")


def photo_pan() -> bytes:
    picture = _photo(1280, 540, 1)
    return _roll([picture.crop(16 * i, 0, 640, 360) for i in range(40)], 40)


def cartoon() -> bytes:
    frames = []
    for i in range(24):
        frame = (pyvips.Image.black(480, 360, bands=3) + [120, 200, 250]).cast("uchar")
        frame = frame.draw_rect([90, 170, 60], 0, 280, 480, 80, fill=True)
        for k, colour in enumerate(([250, 200, 40], [230, 60, 60], [60, 80, 220])):
            cx = int(80 + 140 * k + 30 * math.sin(i / 24 * 2 * math.pi + k))
            cy = int(200 - 120 * abs(math.sin(i / 24 * math.pi + k)))
            frame = frame.draw_circle(colour, cx, cy, 36, fill=True).draw_circle([20, 20, 20], cx, cy, 36)
        frames.append(frame)
    return _roll(frames, 80)


def screen() -> bytes:
    frames = []
    frame = (pyvips.Image.black(800, 500, bands=3) + 255).cast("uchar")
    frame = frame.draw_rect([40, 44, 52], 0, 0, 800, 36, fill=True).draw_rect(
        [230, 232, 236], 0, 36, 180, 464, fill=True
    )
    for i in range(60):
        row = 56 + 14 * (i % 30)
        length = 120 + (i * 97) % 480
        frame = frame.draw_rect([60, 60, 70], 200, row, length, 6, fill=True)
        cursor = frame.draw_rect([0, 0, 0], 200 + (i * 37) % 560, 60 + (i * 53) % 400, 8, 14, fill=True)
        frames.append(cursor)
    return _roll(frames, 100)


def long() -> bytes:
    frames = []
    background = _photo(400, 300, 3).gaussblur(6)
    for i in range(150):
        angle = i / 150 * 2 * math.pi
        frame = background
        for k in range(4):
            cx = int(200 + 130 * math.cos(angle * (k + 1) + k))
            cy = int(150 + 100 * math.sin(angle * (k + 1) + 2 * k))
            frame = frame.draw_circle([60 * k + 40, 255 - 50 * k, 120], cx, cy, 28, fill=True)
        frames.append(frame)
    return _roll(frames, 33)


ANIMATIONS = {"photo-pan": photo_pan, "cartoon": cartoon, "screen": screen, "long": long}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_vips(1)
    backend = VipsBackend()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in ANIMATIONS.items():
            data = make()
            path = Path(tmp) / f"{name}.gif"
            path.write_bytes(data)
            source = pyvips.Image.new_from_buffer(data, "", n=-1)
            frames = source.get("n-pages")
            for fmt in ("webp", "gif"):
                for size in (256, 128):
                    spec = ThumbnailSpec(sizes=str(size), format=fmt, animated=True)
                    seconds = []
                    for _ in range(args.rounds):
                        started = time.process_time()
                        (thumb,) = backend.render(path, "gif", spec, name)
                        seconds.append(time.process_time() - started)
                    ratio = len(thumb.data) / len(data)
                    rows.append(
                        [
                            f"{name} ({source.width}x{source.get('page-height')}, {frames} fr)",
                            f"{len(data) / 1024:,.0f} KiB",
                            f"{fmt} {thumb.width}x{thumb.height}",
                            f"{len(thumb.data) / 1024:,.1f} KiB",
                            f"{ratio:.2f}",
                            f"{statistics.median(seconds):.2f}",
                        ]
                    )
                    results.append(
                        {
                            "animation": name,
                            "frames": frames,
                            "source_bytes": len(data),
                            "format": fmt,
                            "size": size,
                            "bytes": len(thumb.data),
                            "ratio": ratio,
                            "cpu_s": statistics.median(seconds),
                        }
                    )
    table(
        "animated thumbnails: size against the GIF source, CPU per animation",
        ["animation", "source", "thumbnail", "bytes", "÷ source", "CPU s"],
        rows,
    )
    print(write_json("animated_size", {"results": results}))


if __name__ == "__main__":
    main()
