"""What the encoder options cost and save: the encode of one thumbnail alone, per option, on the corpus.

    python -m benchmarks.encoder_options [--corpus DIR] [--photos 4] [--sizes 256,1024] [--rounds 5]

Each corpus image (12 MP photos and the web-size mix) is made into a thumbnail once per size (held in memory), then
encoded by each method in turn, each round; reported: the median over rounds of the mean CPU ms per encode
(`time.process_time`, libvips concurrency 1) and the mean bytes, with both relative to the default before these
options (`jpeg-turbo`: libjpeg-turbo, baseline, standard Huffman tables).
"""

from __future__ import annotations

import statistics
import sys
import time

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import one_core_args, table, write_json
from gpu_worker.backends.finishing import encode
from thumbify.spec import ThumbnailSpec

QUALITY = 80
# name → the spec options of the encode (format jpeg unless given), and whether libjpeg-turbo may take it.
METHODS: dict[str, tuple[dict, bool]] = {
    "jpeg-turbo": ({"optimize_coding": False}, True),
    "jpeg-libvips": ({"optimize_coding": False}, False),
    "jpeg-optimize_coding": ({"optimize_coding": True}, False),
    "jpeg-progressive": ({"progressive": True}, False),
    "png": ({"format": "png"}, False),
    "png-interlaced": ({"format": "png", "progressive": True}, False),
    "webp-effort-4": ({"format": "webp", "effort": 4}, False),
    "webp-effort-6": ({"format": "webp", "effort": 6}, False),
    "avif-effort-2": ({"format": "avif", "effort": 2}, False),
    "avif-effort-5": ({"format": "avif", "effort": 5}, False),
}


def main(argv: list[str] | None = None) -> int:
    args = one_core_args(
        __doc__, argv, photos=4, rounds=5, add=lambda ap: ap.add_argument("--sizes", default="256,1024")
    )
    corpus = corpus_mod.ensure(args.corpus, photos=args.photos)
    files = corpus.photos + corpus.web
    rows, results = [], {}
    for size in (int(s) for s in args.sizes.split(",")):
        thumbs = [pyvips.Image.thumbnail(str(f), size, height=size).copy_memory() for f in files]
        thumbs = [t.flatten() if t.hasalpha() else t for t in thumbs]
        per_method: dict[str, tuple[float, float]] = {}
        for name, (options, turbo) in METHODS.items():
            spec = ThumbnailSpec(sizes=[str(size)], quality=QUALITY, **{"format": "jpeg", **options})
            rounds, sizes = [], []
            for _ in range(args.rounds):
                started = time.process_time()
                sizes = [len(encode(t, spec, turbo)) for t in thumbs]
                rounds.append((time.process_time() - started) / len(thumbs) * 1000)
            per_method[name] = (statistics.median(rounds), statistics.mean(sizes))
        base_ms, base_bytes = per_method["jpeg-turbo"]
        for name, (ms, size_b) in per_method.items():
            rows.append(
                [
                    size,
                    name,
                    f"{ms:.2f}",
                    f"{ms - base_ms:+.2f}",
                    f"{size_b / 1024:.1f}",
                    f"{100 * (size_b / base_bytes - 1):+.1f}%",
                ]
            )
            results[f"{size}/{name}"] = {"cpu_ms": ms, "bytes": size_b}
    table(
        f"Encode of one thumbnail, {len(files)} corpus images, q{QUALITY} (median of {args.rounds} rounds)",
        ["size", "method", "CPU ms", "vs turbo", "KiB", "bytes vs turbo"],
        rows,
    )
    write_json("encoder_options", {"files": len(files), "rounds": args.rounds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
