"""What DALI's checks of a JPEG cost and catch: before decoding, the walk over its structure with the parse of its
scan's last bytes (`damage.jpeg_check`, `scan_end`); after, its last MCU against the grey of lost MCUs and against
its codes (`grey_filled`, `last_mcu`); beside the vips render of the same image.

    python -m benchmarks.damage_cost [--corpus DIR] [--photos 4] [--rounds 7] [--cuts 24]

Cost: CPU ms per image (`time.process_time`, median of the rounds) of `jpeg_check`, of its walk alone (the parse
replaced by a pass), their difference (the parse), and of `VipsBackend.render` to 256 px (libvips concurrency 1).
Catch: each corpus JPEG, and each photo again with its bottom 40% flat white (a product shot: its scan ends in a
run of repeating bytes), cut by 1 to `--cuts` bytes with the end-of-image marker put back: how many cuts the check
before decoding refuses; of the rest, decoded by libjpeg-turbo (DALI's cpu decoder), how many leave a grey last MCU
(more than one MCU lost), how many a last MCU unlike its codes (exactly one lost, decoded from zero bits), and how
many none of the checks tells.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import one_core_args, table, write_json
from gpu_worker.backends import damage
from gpu_worker.backends.scan_end import ScanEnd
from gpu_worker.backends.vips import VipsBackend
from thumbify.spec import ThumbnailSpec


def _cpu_ms(action, items: list, rounds: int) -> float:
    per_round = []
    for _ in range(rounds):
        started = time.process_time()
        for item in items:
            action(item)
        per_round.append((time.process_time() - started) / len(items) * 1000)
    return statistics.median(per_round)


def _walk_only(data: bytes) -> object:
    """`jpeg_check` with the parse of the last bytes replaced by a pass: the walk's own cost."""
    parse, damage.read_end = damage.read_end, lambda *_: ScanEnd(False)
    try:
        return damage.jpeg_check(data)
    finally:
        damage.read_end = parse


def _flat_below(path: Path) -> bytes:
    photo = pyvips.Image.new_from_file(str(path))
    white = pyvips.Image.black(photo.width, int(photo.height * 0.4), bands=3) + 250
    return photo.insert(white.cast("uchar"), 0, photo.height - white.height).jpegsave_buffer(Q=90)


def _catch(data: bytes, cuts: int) -> dict[str, int]:
    frame = damage.jpeg_frame(data)
    counts = {"refused": 0, "grey": 0, "codes": 0, "none": 0}
    for drop in range(1, cuts + 1):
        end = data.rindex(b"\xff\xd9")
        cut = data[: end - drop] + b"\xff\xd9"
        found, last = damage.jpeg_check(cut)
        if found:
            counts["refused"] += 1
            continue
        decoded = pyvips.Image.new_from_buffer(cut, "", fail_on="none")
        w, h = min(damage.MAX_MCU, decoded.width), min(damage.MAX_MCU, decoded.height)
        corner = decoded.crop(decoded.width - w, decoded.height - h, w, h)
        if corner.bands == 1:
            corner = corner.bandjoin([corner, corner])
        pixels = corner.numpy()
        if frame and damage.grey_filled(pixels, frame):
            counts["grey"] += 1
        elif frame and last and last.differs(pixels, *frame.last_mcu()):
            counts["codes"] += 1
        else:
            counts["none"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    def extra(ap) -> None:
        ap.add_argument("--cuts", type=int, default=24, help="cut each file by 1 to N bytes")

    args = one_core_args(__doc__, argv, photos=4, rounds=7, add=extra)
    corpus = corpus_mod.ensure(args.corpus, photos=args.photos)
    backend = VipsBackend()
    spec = ThumbnailSpec(sizes="256")
    photos = corpus.photos[: args.photos]
    groups = {
        "12 MP JPEG": [p.read_bytes() for p in photos],
        "12 MP, bottom 40% flat": [_flat_below(p) for p in photos],
        "web-size JPEG": [p.read_bytes() for p in corpus.web if p.suffix == ".jpg"],
    }
    rows, results = [], {}
    for label, files in groups.items():
        with tempfile.TemporaryDirectory() as folder:
            paths = [Path(folder) / f"{n}.jpg" for n in range(len(files))]
            for path, data in zip(paths, files, strict=True):
                path.write_bytes(data)
            check = _cpu_ms(damage.jpeg_check, files, args.rounds)
            walk = _cpu_ms(_walk_only, files, args.rounds)
            render = _cpu_ms(lambda p: backend.render(p, "jpeg", spec, "bench"), paths, max(1, args.rounds // 2))
        caught = {"refused": 0, "grey": 0, "codes": 0, "none": 0}
        for data in files:
            for key, value in _catch(data, args.cuts).items():
                caught[key] += value
        cuts = sum(caught.values())
        rows.append(
            [
                label,
                len(files),
                f"{check:.2f}",
                f"{walk:.2f}",
                f"{check - walk:.2f}",
                f"{render:.1f}",
                f"{100 * check / render:.1f}%",
                f"{caught['refused']}/{cuts}",
                caught["grey"],
                caught["codes"],
                caught["none"],
            ]
        )
        results[label] = {
            "files": len(files),
            "check_ms": check,
            "walk_ms": walk,
            "render_ms": render,
            "cuts": caught,
        }
    table(
        f"DALI's check before decoding: CPU ms per image (median of {args.rounds} rounds), cuts of 1-{args.cuts} bytes",
        ["images", "n", "check", "walk", "parse", "vips render", "check/render", "refused", "grey", "codes", "none"],
        rows,
    )
    write_json("damage_cost", {"rounds": args.rounds, "cuts": args.cuts, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
