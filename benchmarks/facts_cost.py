"""What `facts=true` adds to a job: the render of one image with and without it, on the vips backend.

    python -m benchmarks.facts_cost [--corpus DIR] [--photos 4] [--sizes 256] [--rounds 7]

Each corpus image (12 MP photos, and the web-size mix: JPEG, PNG with alpha, WebP, ...) is rendered as the worker
renders it (`VipsBackend.render`: decode, resize, finish, encode), facts off and on in alternation, each round;
reported: the median over rounds of the mean CPU ms per image (`time.process_time`, libvips concurrency 1), the
difference, and that as % of the render without facts. The facts are read off the smallest size, so they cost the
same whatever the largest size is; the `facts` row times `image_facts` alone on that size's pixels.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import one_core_args, table, write_json
from gpu_worker.backends.facts import image_facts
from gpu_worker.backends.vips import VipsBackend
from thumbify.probe import sniff
from thumbify.spec import ThumbnailSpec


def _cpu_ms(render, items: list[tuple[Path, str]], spec: ThumbnailSpec) -> float:
    started = time.process_time()
    for path, fmt in items:
        render(path, fmt, spec, "bench")
    return (time.process_time() - started) / len(items) * 1000


def main(argv: list[str] | None = None) -> int:
    args = one_core_args(__doc__, argv, photos=4, rounds=7, add=lambda ap: ap.add_argument("--sizes", default="256"))
    corpus = corpus_mod.ensure(args.corpus, photos=args.photos)
    backend = VipsBackend()
    rows, results = [], {}
    for label, files in (("12 MP JPEG", corpus.photos[: args.photos]), ("web-size mix", corpus.web)):
        items = [(f, sniff(f.read_bytes()[:32])) for f in files]
        off = ThumbnailSpec(sizes=args.sizes.split(","))
        on = off.model_copy(update={"facts": True})
        timings: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            timings["off"].append(_cpu_ms(backend.render, items, off))
            timings["on"].append(_cpu_ms(backend.render, items, on))
        # The facts alone, on the pixels they are read from (the smallest size, as `render_one` holds it).
        smallest = min(off.sizes, key=lambda s: s.width * s.height)
        thumbs = [pyvips.Image.thumbnail(str(f), smallest.width, height=smallest.height).copy_memory() for f in files]
        alone = []
        for _ in range(args.rounds):
            started = time.process_time()
            for t in thumbs:
                image_facts(t)
            alone.append((time.process_time() - started) / len(thumbs) * 1000)
        ms_off, ms_on, ms_facts = (statistics.median(v) for v in (timings["off"], timings["on"], alone))
        rows.append(
            [
                label,
                len(files),
                args.sizes,
                f"{ms_off:.1f}",
                f"{ms_on:.1f}",
                f"{ms_on - ms_off:+.2f}",
                f"{100 * (ms_on / ms_off - 1):+.1f}%",
                f"{ms_facts:.2f}",
            ]
        )
        results[label] = {"files": len(files), "off_ms": ms_off, "on_ms": ms_on, "facts_alone_ms": ms_facts}
    table(
        f"Render of one image, facts off vs on, sizes {args.sizes} (CPU ms, median of {args.rounds} rounds)",
        ["images", "n", "sizes", "off", "on", "added", "added %", "facts alone"],
        rows,
    )
    write_json("facts_cost", {"rounds": args.rounds, "sizes": args.sizes, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
