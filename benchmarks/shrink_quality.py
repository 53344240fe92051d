"""How much JPEG shrink-on-load can the CPU backend take? Speed and quality for each load-time headroom.

    python -m benchmarks.shrink_quality [--corpus DIR] [--photos 16] [--rounds 3] [--size 256] [--quick]

`VipsBackend(headroom=h)` decodes a JPEG at the largest DCT scale (1/8, 1/4, 1/2) that still leaves h× the target's
pixels on each axis and drops at most a tenth of an output pixel at the edges, then finishes with Lanczos-3
(thumbify.geometry.load_shrink). For h in 1.0 … 2.5, and for
libvips' own `thumbnail` (which takes 1/8 only at a total shrink ≥ 16), this measures on every JPEG of the corpus
(12 MP photos and the web-size mix):

- quality: PSNR of the output pixels (made losslessly, PNG) against a float64 Lanczos-3 resize of the full decode;
- speed: images/s of the JPEG render in a pool of os.cpu_count() threads (libvips concurrency 1), interleaved
  rounds, median; and the ratio to `thumbnail` in the same round.

It recommends the smallest headroom that holds ≥ 45 dB on every file (and every larger one too, so the choice
doesn't rest on a lucky dip), and says whether gpu_worker.backends.vips.DEFAULT_HEADROOM is that value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import CORES_DEFAULT, DEFAULT_CORPUS, summary, table, write_json
from benchmarks.quality import psnr, read_pixels, reference
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend
from thumbify.geometry import load_shrink, place
from thumbify.probe import probe
from thumbify.spec import Fit, Size, ThumbnailSpec

HEADROOMS = [round(1.0 + 0.1 * i, 1) for i in range(16)]  # 1.0 … 2.5
THRESHOLD_DB = 45.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.shrink_quality")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--photos", type=int, default=16, help="12 MP photos to include (default 16)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=CORES_DEFAULT)
    parser.add_argument("--quick", action="store_true", help="4 photos + web mix, 1 round, 4 headrooms")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    headrooms = HEADROOMS
    if args.quick:
        args.photos, args.rounds = 4, 1
        headrooms = [1.0, 1.5, DEFAULT_HEADROOM, 2.5]
    pyvips.cache_set_max(0)
    pyvips.vips_lib.vips_concurrency_set(1)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    c = corpus_mod.ensure(args.corpus, args.photos, web=True, huge=False, log=log)
    files = c.jpegs
    size = Size(width=args.size, height=args.size)
    jpeg_spec = ThumbnailSpec(sizes=[str(args.size)], format="jpeg", quality=80)
    png_spec = ThumbnailSpec(sizes=[str(args.size)], format="png")
    dims = {}
    for f in files:
        info = probe(f, 10**10)
        p = place(info.width, info.height, size, Fit.inside)
        dims[f] = (info.width, info.height, p.resize_w, p.resize_h)

    variants: dict[str, object] = {f"h={h:.1f}": VipsBackend(headroom=h) for h in headrooms}
    variants["thumbnail"] = None

    def render(name: str, f: Path, spec: ThumbnailSpec) -> bytes:
        backend = variants[name]
        if backend is None:
            img = pyvips.Image.thumbnail(str(f), args.size)
            return img.pngsave_buffer() if spec.format.value == "png" else img.jpegsave_buffer(Q=80)
        return backend.render(f, "jpeg", spec, f.stem)[0].data

    # Quality, once per variant and file.
    log(f"quality: {len(files)} files × {len(variants)} variants …")
    cache = args.corpus / ".reference"
    quality: dict[str, dict[str, float]] = {name: {} for name in variants}
    sizes: dict[str, set[str]] = {name: set() for name in variants}
    for f in files:
        for name in variants:
            pixels = read_pixels(render(name, f, png_spec))
            oh, ow = pixels.shape[:2]
            sizes[name].add(f"{ow}x{oh}")
            # Against a reference of the output's own size: a one-pixel rounding difference is not a quality loss.
            quality[name][f.name] = psnr(pixels, reference(f, ow, oh, cache))

    # Speed: interleaved rounds.
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds + 1):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda f, n=name: render(n, f, jpeg_spec), files))
            if r:
                rates[name].append(len(files) / (time.perf_counter() - started))
        if r:
            log(f"round {r}: " + " ".join(f"{n}={rates[n][-1]:.1f}" for n in names))

    def shrinks(name: str) -> str:
        if name == "thumbnail":
            return "libvips"
        hr = float(name[2:])
        counts: dict[int, int] = {}
        for f in files:
            w, h, rw, rh = dims[f]
            s = load_shrink(w, h, rw, rh, hr)
            counts[s] = counts.get(s, 0) + 1
        return " ".join(f"1/{s}×{n}" for s, n in sorted(counts.items(), reverse=True))

    base = rates["thumbnail"]
    rows, results = [], {}
    for name in names:
        q = list(quality[name].values())
        photo_q = [v for k, v in quality[name].items() if k.startswith("photo_")]
        worst = min(quality[name], key=quality[name].get)
        ratio = statistics.median(a / b for a, b in zip(rates[name], base, strict=True))
        results[name] = {
            "images_per_s": summary(rates[name]),
            "ratio_to_thumbnail": ratio,
            "psnr": quality[name],
            "psnr_summary": summary(q),
            "worst_file": worst,
            "shrinks": shrinks(name),
        }
        rows.append(
            (
                name,
                statistics.median(rates[name]),
                ratio,
                min(q),
                statistics.fmean(q),
                min(photo_q) if photo_q else None,
                worst,
                shrinks(name),
            )
        )
    table(
        f"Shrink-on-load headroom: {len(files)} JPEGs → {args.size} px, {args.threads} threads, "
        f"median of {args.rounds} rounds",
        ["variant", "images/s", "× thumbnail", "PSNR min", "PSNR mean", "PSNR min 12MP", "worst file", "decode"],
        rows,
        note="PSNR (dB) of the lossless output against a float64 Lanczos-3 resize of the full decode.",
    )
    passing = [h for h in headrooms if min(quality[f"h={h:.1f}"].values()) >= THRESHOLD_DB]
    robust = [
        h for h in headrooms if all(min(quality[f"h={x:.1f}"].values()) >= THRESHOLD_DB for x in headrooms if x >= h)
    ]
    recommended = min(robust) if robust else None
    print(f"headrooms holding ≥ {THRESHOLD_DB} dB on every file: {passing}")
    if recommended is None:
        print("no headroom holds the threshold on every file")
    else:
        verdict = "matches" if abs(recommended - DEFAULT_HEADROOM) < 1e-9 else "differs from"
        print(
            f"recommended: headroom {recommended:.1f} (smallest with it and every larger one ≥ {THRESHOLD_DB} dB); "
            f"{verdict} DEFAULT_HEADROOM = {DEFAULT_HEADROOM}"
        )
    path = write_json(
        "shrink_quality",
        {
            "files": [f.name for f in files],
            "size": args.size,
            "threshold_db": THRESHOLD_DB,
            "default_headroom": DEFAULT_HEADROOM,
            "passing": passing,
            "recommended": recommended,
            "variants": results,
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
