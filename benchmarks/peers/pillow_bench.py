"""Pillow (or pillow-simd) thumbnails, timed inside the process so interpreter start-up is not counted.

    python pillow_bench.py --files LIST --mode draft|default|nodraft [--threads N] [--size 256] [--quality 80]
                           [--out DIR]

Runs with any Python that has PIL (the project venv's Pillow, or pillow-simd in a venv of its own), so it imports
nothing else. Prints one JSON line: {"count", "seconds", "pil", "mode", "threads"}.

- draft:   `im.draft("RGB", (size, size))` first, as Pillow's docs recommend for JPEG thumbnails (DCT scaling to the
           smallest scale still >= the box: 1/8 for 4000x3000 -> 256), then `thumbnail`.
- default: `thumbnail((size, size))` as it comes: its reducing_gap=2.0 drafts only to >= 2x the box (1/4 here).
- nodraft: `thumbnail((size, size), reducing_gap=None)`: full decode, then the bicubic resample.
With --out, each result is also written losslessly (PNG) and as the JPEG, for quality measurement.
"""

import argparse
import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import PIL
from PIL import Image


def one(path, mode, size, quality, out):
    with Image.open(path) as im:
        if mode == "draft":
            im.draft("RGB", (size, size))
            im.thumbnail((size, size))
        elif mode == "default":
            im.thumbnail((size, size))
        else:
            im.thumbnail((size, size), reducing_gap=None)
        if im.mode != "RGB":
            im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        if out:
            stem = os.path.splitext(os.path.basename(path))[0]
            im.save(os.path.join(out, stem + ".png"))
            with open(os.path.join(out, stem + ".jpg"), "wb") as fh:
                fh.write(buf.getvalue())
        return len(buf.getvalue())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", required=True, help="a text file, one image path a line")
    ap.add_argument("--mode", choices=["draft", "default", "nodraft"], default="draft")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--out")
    args = ap.parse_args()
    files = [line.strip() for line in open(args.files) if line.strip()]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        sizes = list(pool.map(lambda p: one(p, args.mode, args.size, args.quality, args.out), files))
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "count": len(sizes),
                "seconds": seconds,
                "pil": PIL.__version__,
                "mode": args.mode,
                "threads": args.threads,
            }
        )
    )


if __name__ == "__main__":
    main()
