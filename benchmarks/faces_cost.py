"""What `crop=faces` costs: a whole `cover` render (decode, resize, crop, encode) per crop, on the vips backend.

    python -m benchmarks.faces_cost [--corpus DIR] [--photos 2] [--size 256] [--rounds 3]

Each corpus image (12 MP photos, the web-size mix, and a 1600x1067 JPEG with a drawn face the cascade finds) is
rendered into a `--size` box with `fit=cover` once per crop, each round; reported: the median over rounds of the mean
CPU ms per render (`time.process_time`, libvips concurrency 1) and the difference from `centre`, and separately the
detector alone (`faces.faces_centre` on the resized thumbnail) and the one-time cost of importing cv2 and loading
the cascade (paid by a render process on its first `crop=faces`).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import one_core_args, table, write_json
from gpu_worker.backends import faces
from gpu_worker.backends.vips import VipsBackend
from thumbify.probe import sniff
from thumbify.spec import ThumbnailSpec

CROPS: dict[str, dict] = {
    "centre": {"crop": "centre"},
    "focal": {"crop": "focal", "fx": 0.3, "fy": 0.3},
    "attention": {"crop": "attention"},
    "faces": {"crop": "faces"},
}


def face_photo(root: Path) -> Path:
    """A web-size JPEG with one face (tests' drawn face) on a photo-like background."""
    import numpy as np

    from tests.support import images

    path = root / "face_1600x1067.jpg"
    if not path.exists():
        array = images.photo_like_image(1600, 1067, seed=5).numpy().copy()
        array[300:620, 900:1220] = images.drawn_face(320)
        images.from_array(np.asarray(array, np.uint8)).jpegsave(str(path), Q=90)
    return path


def main(argv: list[str] | None = None) -> int:
    args = one_core_args(
        __doc__, argv, photos=2, rounds=3, add=lambda ap: ap.add_argument("--size", type=int, default=256)
    )
    started = time.perf_counter()
    faces._cascade()
    load_ms = (time.perf_counter() - started) * 1000
    corpus = corpus_mod.ensure(args.corpus, photos=args.photos)
    groups = {"12 MP": corpus.photos, "web": [*corpus.web, face_photo(args.corpus)]}
    backend = VipsBackend()
    rows, results = [], {"cascade_load_ms": load_ms}
    for group, files in groups.items():
        per_crop: dict[str, float] = {}
        for name, options in CROPS.items():
            spec = ThumbnailSpec(sizes=[str(args.size)], fit="cover", **options)
            rounds = []
            for _ in range(args.rounds):
                started = time.process_time()
                for f in files:
                    backend.render(f, sniff(f.read_bytes()[:32]), spec, "bench")
                rounds.append((time.process_time() - started) / len(files) * 1000)
            per_crop[name] = statistics.median(rounds)
        thumbs = [pyvips.Image.thumbnail(str(f), args.size * 2, height=args.size * 2).copy_memory() for f in files]
        started = time.process_time()
        found = [faces.faces_centre(t) is not None for t in thumbs]
        detect_ms = (time.process_time() - started) / len(thumbs) * 1000
        for name, ms in per_crop.items():
            rows.append([group, len(files), name, f"{ms:.1f}", f"{ms - per_crop['centre']:+.1f}"])
            results[f"{group}/{name}"] = {"cpu_ms": ms}
        rows.append([group, len(files), "detector alone", f"{detect_ms:.1f}", f"faces found in {sum(found)}"])
        results[f"{group}/detector"] = {"cpu_ms": detect_ms, "found": sum(found)}
    table(
        f"cover into {args.size}: CPU ms per render by crop (median of {args.rounds} rounds); cascade load "
        f"{load_ms:.0f} ms once per process",
        ["images", "n", "crop", "CPU ms", "vs centre"],
        rows,
    )
    write_json("faces_cost", {"size": args.size, "rounds": args.rounds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
