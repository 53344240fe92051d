"""What DALI's checks of a JPEG cost and catch: before decoding, the walk over its structure with the parse of its
scan's last bytes (`damage.jpeg_check`, `scan_end`); after, its last MCU against the grey of lost MCUs and against
its codes (`grey_filled`, `last_mcu`); beside the vips render of the same image.

    python -m benchmarks.damage_cost [--corpus DIR] [--photos 4] [--rounds 7] [--cuts 24] [--sample 300]

Cost: CPU ms per image (`time.process_time`, median of the rounds) of `jpeg_check`, of its walk alone (the parse
replaced by a pass), their difference (the parse), and of `VipsBackend.render` to 256 px (libvips concurrency 1).
Catch: each corpus JPEG, and each photo again with its bottom 40% flat white (a product shot: its scan ends in a
run of repeating bytes), cut by 1 to `--cuts` bytes with the end-of-image marker put back: how many cuts the check
before decoding refuses; of the rest, decoded by libjpeg-turbo (DALI's cpu decoder), how many leave a grey last MCU
(more than one MCU lost), how many a last MCU unlike its codes (exactly one lost, decoded from zero bits), and how
many none of the checks tells.

Held against a wider sample (`--sample N`, 0 to skip): N synthetic files (`corpus.photo`) of every coding libvips
writes (4:2:0, 4:4:4, grey, optimised Huffman tables, restart intervals, clipped colours; qualities 30 to 100; sizes
16 to 1200 px each way, half of them a multiple of 16 and 1 to 4 pixels: a last MCU that shows 1 to 16), each sound
(`left to vips`: its last MCU shows too few pixels for DALI, `last_mcu.too_few_shown`; refused by any other check: a
false alarm, a detour through vips; `worst`: the most levels a pixel of its decoded last MCU stands off its codes,
against `last_mcu.MISMATCH`) and cut by 1 to 11 bytes; the cuts none of the checks tells are listed with how many
pixels of their last MCU show, and counted by pixels shown: where the checks after decoding would leave some untold,
which is what sets `last_mcu.TOO_FEW`.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyvips

from benchmarks import corpus as corpus_mod
from benchmarks.common import one_core_args, table, write_json
from gpu_worker.backends import damage
from gpu_worker.backends.last_mcu import MISMATCH, TOO_FEW, too_few_shown
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


def _corner(data: bytes):
    """The bottom-right corner as libjpeg-turbo (DALI's cpu decoder) decodes it, damage and all, RGB."""
    decoded = pyvips.Image.new_from_buffer(data, "", fail_on="none")
    w, h = min(damage.MAX_MCU, decoded.width), min(damage.MAX_MCU, decoded.height)
    corner = decoded.crop(decoded.width - w, decoded.height - h, w, h)
    return (corner.bandjoin([corner, corner]) if corner.bands == 1 else corner).numpy()


def _verdict(data: bytes, frame) -> str:
    """Which of DALI's checks after `refusal` tells `data` (as cut or sound): refused before decoding, grey, codes,
    or none."""
    found, last = damage.jpeg_check(data)
    return "refused" if found else _told_after_decoding(last, _corner(data), frame)


def _told_after_decoding(last, pixels, frame) -> str:
    """Which check after decoding tells the decoded corner `pixels`: grey, codes, or none."""
    if frame and damage.grey_filled(pixels, frame):
        return "grey"
    if frame and last and last.lost(pixels, frame):
        return "codes"
    return "none"


def _catch(data: bytes, cuts: int, missed: list | None = None) -> dict[str, int]:
    """How each cut of `data` is told; `small`: by the refusal of a last MCU showing too few pixels alone (the
    other checks would not have told it); `missed` gets those and the untold ones."""
    frame = damage.jpeg_frame(data)
    small = bool(frame and too_few_shown(frame))
    counts = {"refused": 0, "grey": 0, "codes": 0, "small": 0, "none": 0}
    for drop in range(1, cuts + 1):
        end = data.rindex(b"\xff\xd9")
        verdict = _verdict(data[: end - drop] + b"\xff\xd9", frame)
        if verdict == "none" and missed is not None and frame:
            missed.append({"drop": drop, "shows": frame.last_mcu(), "mcu": frame.mcu(), "small": small})
        counts["small" if small and verdict == "none" else verdict] += 1
    return counts


CODINGS = {
    "4:2:0": {},
    "4:4:4": {"subsample_mode": "off"},
    "grey": {},
    "optimised": {"optimize_coding": True},
    "restarts": {},
    "clipped": {},
}


def _synthetic(n: int, rng: random.Random) -> tuple[str, int, int, bytes]:
    coding = list(CODINGS)[n % len(CODINGS)]
    width, height = rng.randint(16, 1200), rng.randint(16, 1200)
    if n // len(CODINGS) % 2:  # a last MCU showing 1 to 4 pixels each way: the hardest to check after decoding
        width, height = width // 16 * 16 + rng.randint(1, 4), height // 16 * 16 + rng.randint(1, 4)
    image = corpus_mod.photo(n, width, height)
    options = {"Q": rng.choice([30, 50, 60, 75, 80, 88, 90, 95, 100]), **CODINGS[coding]}
    if coding == "grey":
        image = image.colourspace("b-w")
    elif coding == "restarts":
        options["restart_interval"] = rng.randint(1, 40)
    elif coding == "clipped":  # saturated colours, highlights and shadows clipped
        image = (image.cast("float") * 1.6 - 60).cast("uchar")
    return coding, width, height, image.jpegsave_buffer(**options)


def _sample(count: int) -> tuple[list[list[object]], list[list[object]], dict]:
    """The wider sample's rows by coding, its rows by how many pixels the last MCU shows (16 or fewer), and its
    figures."""
    rng = random.Random(11)
    found: dict[str, dict] = {}
    shown: dict[int, dict] = {}
    for n in range(count):
        coding, width, height, data = _synthetic(n, rng)
        row = found.setdefault(
            coding, {"files": 0, "left_to_vips": 0, "false_alarms": [], "worst": 0.0, "cuts": {}, "missed": []}
        )
        row["files"] += 1
        frame = damage.jpeg_frame(data)
        found, last = damage.jpeg_check(data)
        pixels = _corner(data)
        if too_few_shown(frame):
            row["left_to_vips"] += 1
        elif found or _told_after_decoding(last, pixels, frame) != "none":
            row["false_alarms"].append([n, width, height])
        if last is not None:
            row["worst"] = max(row["worst"], last.worst(pixels, *frame.last_mcu()))
        missed: list = []
        for key, value in _catch(data, 11, missed).items():
            row["cuts"][key] = row["cuts"].get(key, 0) + value
        row["missed"] += missed
        rows, columns = frame.last_mcu()
        if rows * columns <= 16:
            at = shown.setdefault(rows * columns, {"files": 0, "cuts": 0, "untold_by_decoding": 0})
            at["files"] += 1
            at["cuts"] += 11
            at["untold_by_decoding"] += len(missed)
    by_coding = [
        [
            coding,
            r["files"],
            r["left_to_vips"],
            len(r["false_alarms"]),
            f"{r['worst']:.2f}",
            f"{r['cuts']['refused']}/{sum(r['cuts'].values())}",
            r["cuts"]["grey"],
            r["cuts"]["codes"],
            r["cuts"]["small"],
            r["cuts"]["none"],
            " ".join(f"{m['shows'][0]}x{m['shows'][1]}" for m in r["missed"] if not m["small"]),
        ]
        for coding, r in found.items()
    ]
    by_shown = [
        [pixels, at["files"], at["cuts"], at["untold_by_decoding"], "yes" if pixels <= TOO_FEW else ""]
        for pixels, at in sorted(shown.items())
    ]
    return by_coding, by_shown, {"by_coding": found, "by_shown": shown}


def main(argv: list[str] | None = None) -> int:
    def extra(ap) -> None:
        ap.add_argument("--cuts", type=int, default=24, help="cut each file by 1 to N bytes")
        ap.add_argument("--sample", type=int, default=300, help="synthetic files of every coding (0: none)")

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
        caught = {"refused": 0, "grey": 0, "codes": 0, "small": 0, "none": 0}
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
                caught["small"],
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
        [
            "images",
            "n",
            "check",
            "walk",
            "parse",
            "vips render",
            "check/render",
            "refused",
            "grey",
            "codes",
            "small",
            "none",
        ],
        rows,
    )
    sample: dict = {}
    if args.sample:
        by_coding, by_shown, sample = _sample(args.sample)
        table(
            f"{args.sample} synthetic files, sound and cut by 1-11 bytes (libjpeg-turbo decoding)",
            [
                "coding",
                "files",
                "left to vips",
                "false alarms",
                "worst",
                "refused",
                "grey",
                "codes",
                "small",
                "none",
                "none: last MCU shows",
            ],
            by_coding,
            note=f"left to vips: sound files whose last MCU shows {TOO_FEW} pixels or fewer (not decoded by DALI); "
            f"small: cuts told by that alone; worst: levels off its codes, sound files (over {MISMATCH}: a mismatch)",
        )
        table(
            "The same files by how many pixels their last MCU shows (16 or fewer)",
            ["pixels shown", "files", "cuts", "untold by the checks after decoding", "left to vips"],
            by_shown,
        )
    write_json("damage_cost", {"rounds": args.rounds, "cuts": args.cuts, "results": results, "sample": sample})
    return 0


if __name__ == "__main__":
    sys.exit(main())
