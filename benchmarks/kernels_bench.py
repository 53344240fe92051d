"""Resampling kernels: NumPy (and CuPy where CUDA is) one-shot vs the strip driver, a few sizes.

    python -m benchmarks.kernels_bench [--cases 4000x3000:256x192,...] [--strip 64] [--filters lanczos3]
                                       [--backends numpy,cupy] [--rounds 3] [--out PATH]

Each case times `kernels.resample` on the whole image ("one-shot") and `kernels.StripResampler` fed `--strip`-row
strips from host memory ("strips"), per backend and filter. Rounds are interleaved (the order rotates each round,
after one uncounted warm-up round) and the median is reported, with input megapixels per second and, for the strip
driver, the most memory it held at once (`peak_bytes`: its buffers and the output; on CuPy, device memory, the
uploaded strip included). CuPy one-shot timings start from an image already on the device; CuPy strip timings
include the host-to-device copy of every strip. Pixels are random: the cost does not depend on them.

Writes benchmarks/results/kernels.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.common import table, write_json
from kernels import StripResampler, cuda_available, resample

DEFAULT_CASES = "4000x3000:256x192,4000x3000:1024x768,1920x1080:256x144"


def _pair(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def parse_cases(text: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    cases = []
    for item in text.split(","):
        src, dst = item.strip().split(":")
        cases.append((_pair(src), _pair(dst)))
    return cases


def _sync(backend: str) -> None:
    if backend == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def make_runs(image: np.ndarray, out: tuple[int, int], backend: str, name: str, strip: int) -> dict[str, Callable]:
    """Label → a function that does the work once and returns the strip driver's peak bytes (or None)."""
    h, w = image.shape[:2]
    out_w, out_h = out
    source = image
    if backend == "cupy":
        import cupy

        source = cupy.asarray(image)

    def one_shot():
        resample(source, out_w, out_h, name, backend=backend)
        _sync(backend)
        return None

    def strips():
        driver = StripResampler(w, h, out_w, out_h, name, backend=backend)
        for y in range(0, h, strip):
            driver.push(image[y : y + strip])
        driver.result()
        _sync(backend)
        return driver.peak_bytes

    return {"one-shot": one_shot, f"strips of {strip}": strips}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated WxH:WxH (input:output)")
    parser.add_argument("--strip", type=int, default=64, help="rows per strip for the strip driver")
    parser.add_argument("--filters", default="lanczos3", help="comma-separated filter names")
    parser.add_argument("--backends", default=None, help="comma-separated; default numpy, and cupy where CUDA is")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds (after one warm-up round)")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/kernels.json)")
    args = parser.parse_args(argv)

    backends = args.backends.split(",") if args.backends else ["numpy"] + (["cupy"] if cuda_available() else [])
    filters = args.filters.split(",")
    note = None if "cupy" in backends else "cupy: skipped (no CUDA device visible to CuPy)"
    rng = np.random.default_rng(0)
    results = []
    rows = []
    for (in_w, in_h), out in parse_cases(args.cases):
        image = rng.integers(0, 256, (in_h, in_w, args.channels), dtype=np.uint8)
        runs = {
            (backend, name, label): fn
            for backend in backends
            for name in filters
            for label, fn in make_runs(image, out, backend, name, args.strip).items()
        }
        times: dict[tuple, list[float]] = {key: [] for key in runs}
        peaks: dict[tuple, int | None] = {}
        keys = list(runs)
        for round_no in range(args.rounds + 1):
            shift = round_no % len(keys)
            for key in keys[shift:] + keys[:shift]:
                t0 = time.perf_counter()
                peaks[key] = runs[key]()
                elapsed = time.perf_counter() - t0
                if round_no:  # round 0 warms up (kernel compilation, caches, weight tables)
                    times[key].append(elapsed)
        megapixels = in_w * in_h / 1e6
        for key in keys:
            backend, name, label = key
            median = statistics.median(times[key])
            peak = peaks[key]
            results.append(
                {
                    "input": [in_w, in_h],
                    "output": list(out),
                    "channels": args.channels,
                    "backend": backend,
                    "filter": name,
                    "mode": label,
                    "seconds": times[key],
                    "median_s": median,
                    "input_mp_per_s": megapixels / median,
                    "peak_bytes": peak,
                    "image_bytes": image.nbytes,
                }
            )
            rows.append(
                [
                    f"{in_w}x{in_h} → {out[0]}x{out[1]}",
                    backend,
                    name,
                    label,
                    f"{median * 1000:.1f}",
                    f"{megapixels / median:.1f}",
                    "" if peak is None else f"{peak / 2**20:.2f}",
                    f"{image.nbytes / 2**20:.1f}",
                ]
            )
    table(
        f"kernels: resample, median of {args.rounds} interleaved rounds",
        ["case", "backend", "filter", "mode", "ms", "input MP/s", "driver peak MiB", "image MiB"],
        rows,
        note=note,
    )
    path = write_json(
        "kernels",
        {"rounds": args.rounds, "strip": args.strip, "backends": backends, "results": results},
        out=args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
