"""CPU time of one render, by decoder: Thumbify's `VipsBackend.render` end to end beside its parts and the peers'
ways, in one process, so the figure is the work itself and not the machine's load.

    python -m benchmarks.render_cpu [--corpus DIR] [--web 60 | --photos 24] [--rounds 5] [--size 256]

Images/s on a shared 2-core machine swing by 2× between rounds; the CPU seconds a render costs its own thread
(`time.process_time`, libvips concurrency 1) hardly move. Every file goes through every method in turn, each round,
and the median over rounds of the mean per file is reported. Methods (fit inside `--size`, JPEG q80):

  thumbify          `VipsBackend.render`: plain JPEGs decoded by libjpeg-turbo 3 (`decode.turbo_jpeg`)
  thumbify-libvips  the same with `turbo=False`: every JPEG decoded and encoded by libvips
  pyvips-thumbnail  `Image.thumbnail` + `jpegsave_buffer`: bare libvips
  pillow-thumbor    Pillow as thumbor uses it: `draft` to the box (the DCT scale nearest above it), LANCZOS, save
  decode-turbo      libjpeg-turbo's decode at thumbify's shrink, nothing else (simplejpeg)
  decode-libvips    libvips' decode at the same shrink, nothing else
  encode-turbo      the encode of the thumbnail alone (`turbo.turbo_encode`, libjpeg-turbo 3)
  encode-libvips    the same by libvips' `jpegsave_buffer` (what `finishing.encode` called before)

Quality (PSNR of a lossless output against the float64 Lanczos-3 reference, `benchmarks/quality.py`) for the
render methods on the first `--quality-files` files, and the DCT scale each decodes at.
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics
import sys
import time
from pathlib import Path

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import DEFAULT_CORPUS, table, write_json
from benchmarks.quality import psnr, read_pixels, reference
from gpu_worker.backends.turbo import turbo_encode
from gpu_worker.backends.vips import DEFAULT_HEADROOM, VipsBackend, configure_vips
from thumbify.geometry import load_shrink
from thumbify.spec import ThumbnailSpec

QUALITY = 80


class Methods:
    def __init__(self, size: int) -> None:
        self.size = size
        self.jpeg = ThumbnailSpec(sizes=[str(size)], format="jpeg", quality=QUALITY)
        self.png = ThumbnailSpec(sizes=[str(size)], format="png")
        self.turbo, self.libvips = VipsBackend(turbo=True), VipsBackend(turbo=False)

    def renders(self) -> dict:
        return {
            "thumbify": lambda f, png: self.render(self.turbo, f, png),
            "thumbify-libvips": lambda f, png: self.render(self.libvips, f, png),
            "pyvips-thumbnail": self.thumbnail,
            "pillow-thumbor": self.pillow,
        }

    def parts(self) -> dict:
        return {
            "decode-turbo": self.decode_turbo,
            "decode-libvips": self.decode_libvips,
            "encode-turbo": lambda f, png=False: turbo_encode(self.thumb(f), QUALITY),
            "encode-libvips": lambda f, png=False: self.thumb(f).jpegsave_buffer(
                Q=QUALITY, keep="none", optimize_coding=False
            ),
        }

    @functools.cache  # noqa: B019 (one Methods per run)
    def thumb(self, f: Path) -> pyvips.Image:
        return pyvips.Image.thumbnail(str(f), self.size, height=self.size).copy_memory()

    def render(self, backend: VipsBackend, f: Path, png: bool) -> bytes:
        return backend.render(f, "jpeg", self.png if png else self.jpeg, f.stem)[0].data

    def thumbnail(self, f: Path, png: bool) -> bytes:
        img = pyvips.Image.thumbnail(str(f), self.size, height=self.size)
        return img.pngsave_buffer() if png else img.jpegsave_buffer(Q=QUALITY, keep="none")

    def pillow(self, f: Path, png: bool) -> bytes:
        from PIL import Image

        with Image.open(f) as im:
            w, h = im.size
            scale = min(self.size / w, self.size / h)
            box = (max(1, round(w * scale)), max(1, round(h * scale)))
            im.draft("RGB", box)
            out = im.convert("RGB").resize(box, Image.LANCZOS)
        buf = io.BytesIO()
        out.save(buf, "PNG" if png else "JPEG", quality=QUALITY)
        return buf.getvalue()

    def pillow_scale(self, f: Path) -> int:
        from PIL import Image

        with Image.open(f) as im:
            w, h = im.size
            scale = min(self.size / w, self.size / h)
            im.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
            return round(w / im.size[0])

    def shrink(self, f: Path) -> int:
        w, h = self._dims(f)
        scale = min(self.size / w, self.size / h)
        return load_shrink(w, h, round(w * scale), round(h * scale), DEFAULT_HEADROOM)

    def decode_turbo(self, f: Path, png: bool = False) -> None:
        import simplejpeg

        s = self.shrink(f)
        w, h = self._dims(f)
        simplejpeg.decode_jpeg(f.read_bytes(), "RGB", min_width=-(-w // s), min_height=-(-h // s))

    def decode_libvips(self, f: Path, png: bool = False) -> None:
        pyvips.Image.jpegload(str(f), shrink=self.shrink(f), access="sequential").copy_memory()

    @staticmethod
    def _dims(f: Path) -> tuple[int, int]:
        img = pyvips.Image.new_from_file(str(f))
        return img.width, img.height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.render_cpu")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--web", type=int, default=60, help="N × 1024×768 JPEGs (default 60; 0: the photos)")
    parser.add_argument("--photos", type=int, default=24, help="12 MP photos when --web 0 (default 24)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--quality-files", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    configure_vips(1)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.web:
        files, what = corpus_mod.make_sized(args.corpus, args.web, log=log), "1024×768"
    else:
        files, what = corpus_mod.make_photos(args.corpus, args.photos, log=log), "12 MP"
    m = Methods(args.size)
    methods = m.renders() | m.parts()
    ms: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.rounds + 1):
        spent = dict.fromkeys(methods, 0.0)
        for f in files:
            for name, fn in methods.items():
                started = time.process_time()
                fn(f, False)
                spent[name] += time.process_time() - started
        if r:  # the first round warms up
            for name in methods:
                ms[name].append(1000 * spent[name] / len(files))
            log(f"round {r}: " + "  ".join(f"{n}={v[-1]:.2f}" for n, v in ms.items()))

    cache = args.corpus / ".reference"
    quality: dict[str, list[float]] = {name: [] for name in m.renders()}
    for f in files[: args.quality_files]:
        outs = {name: read_pixels(fn(f, True)) for name, fn in m.renders().items()}
        ref = reference(f, outs["thumbify"].shape[1], outs["thumbify"].shape[0], cache)
        for name, px in outs.items():
            quality[name].append(psnr(px, ref))
    scales = {
        "thumbify": sorted({m.shrink(f) for f in files}),
        "pillow-thumbor": sorted({m.pillow_scale(f) for f in files}),
    }
    base = statistics.median(ms["thumbify-libvips"])
    rows = []
    for name, values in ms.items():
        q = quality.get(name)
        rows.append(
            (
                name,
                statistics.median(values),
                f"{min(values):.2f}–{max(values):.2f}",
                statistics.median(values) / base,
                min(q) if q else None,
                statistics.median(q) if q else None,
                ", ".join(f"1/{s}" for s in scales.get(name, [])) or "",
            )
        )
    table(
        f"CPU ms per image, one process: {len(files)} × {what} JPEG → fit {args.size}, JPEG q{QUALITY}, "
        f"median of {args.rounds} rounds",
        ["method", "CPU ms", "range", "× thumbify-libvips", "PSNR px min", "PSNR px median", "DCT scale"],
        rows,
        note="CPU: time.process_time() of this process per image (libvips concurrency 1). PSNR in dB against a "
        f"float64 Lanczos-3 resize of the full decode, first {args.quality_files} files.",
    )
    write_json(
        "render_cpu",
        {"corpus": what, "files": len(files), "size": args.size, "ms": ms, "psnr": quality, "scales": scales},
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
